"""Statistics from calibration data: one onnxruntime pass with tapped tensors, streamed into accumulators.

Nothing keeps activations: every batch is folded into fixed-size sums (Hessians, channel statistics)
and dropped, so memory is bounded by the accumulators, not by the calibration set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from onnxprune.graph import producers
from onnxprune.latency import ort_session
from onnxprune.layers import LinearLayer


def _sub_model(
    model: onnx.ModelProto, nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[str]
) -> onnx.ModelProto:
    """A model of ``nodes`` (in order) with the initializers they read, ``inputs`` and ``outputs``."""
    sub = onnx.ModelProto()
    sub.ir_version, sub.producer_name = model.ir_version, model.producer_name
    sub.opset_import.extend(model.opset_import)
    g = sub.graph
    g.name = model.graph.name
    g.node.extend(nodes)
    used = {t for n in nodes for t in n.input}
    g.initializer.extend(t for t in model.graph.initializer if t.name in used)
    g.input.extend(inputs)
    g.output.extend(helper.make_empty_tensor_value_info(t) for t in outputs)
    return sub


def cut_model(model: onnx.ModelProto, taps: list[str]) -> onnx.ModelProto:
    """The model computing exactly ``taps``: graph outputs replaced, nodes they do not need dropped.

    A plain backward walk over the node list (no graph import), since refits cut the model once per stage.
    """
    producer = {o: i for i, n in enumerate(model.graph.node) for o in n.output}
    needed, stack = set(), [t for t in taps if t in producer]
    while stack:
        i = producer[stack.pop()]
        if i not in needed:
            needed.add(i)
            stack.extend(t for t in model.graph.node[i].input if t in producer)
    nodes = [n for i, n in enumerate(model.graph.node) if i in needed]
    used = {t for n in nodes for t in n.input} | set(taps)
    return _sub_model(model, nodes, [i for i in model.graph.input if i.name in used], taps)


def downstream(model: onnx.ModelProto, seeds: set[str]) -> tuple[list[int], set[str]]:
    """The nodes named ``seeds`` and every node downstream of them (indices, in order) and the tensors they
    output: what a copy of ``model`` whose ``seeds`` were edited computes differently."""
    changed: set[str] = set()
    nodes = []
    for i, node in enumerate(model.graph.node):
        if node.name in seeds or any(t in changed for t in node.input):
            nodes.append(i)
            changed.update(o for o in node.output if o)
    return nodes, changed


def downstream_cut(model: onnx.ModelProto, seeds: set[str]) -> tuple[list[int], list[str]] | None:
    """The nodes ``downstream`` of ``seeds`` and the tensors they read from the rest of the graph (sorted):
    where a copy of ``model`` whose ``seeds`` were edited starts to compute differently. None when a node
    carries a subgraph (it may read outer-scope tensors that the walk does not see) or an output does not
    depend on ``seeds``."""
    if any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        for node in model.graph.node
        for a in node.attribute
    ):
        return None
    nodes, changed = downstream(model, seeds)
    if not all(o.name in changed for o in model.graph.output):
        return None
    inits = {t.name for t in model.graph.initializer}
    reads = {t for i in nodes for t in model.graph.node[i].input if t and t not in changed and t not in inits}
    return nodes, sorted(reads)


def suffix_model(
    model: onnx.ModelProto, cut: tuple[list[int], list[str]], values: Mapping[str, np.ndarray]
) -> onnx.ModelProto:
    """``model``'s nodes of ``cut`` (``downstream_cut``) as a model that takes the tensors it reads as inputs
    (types from ``values``) and computes ``model``'s outputs."""
    nodes, reads = cut
    inputs = [
        helper.make_tensor_value_info(t, helper.np_dtype_to_tensor_dtype(values[t].dtype), values[t].shape)
        for t in reads
    ]
    return _sub_model(
        model, [model.graph.node[i] for i in nodes], inputs, [o.name for o in model.graph.output]
    )


def tapped_session(model: onnx.ModelProto, taps: list[str], threads: int = 0):
    """An ORT session computing exactly ``taps`` (the graph is cut after them, so later nodes never run)."""
    sess = ort_session(cut_model(model, taps), threads)
    names = {i.name for i in sess.get_inputs()}
    return sess, names


class Frontier:
    """Activations on the boundary between already-run and not-yet-run nodes, one dict per batch.

    ``advance(model, taps)`` runs only the nodes between the boundary and ``taps`` (with ``model``'s
    current weights) and moves the boundary there, so a sequential refit visits every node once
    instead of re-running the model from its inputs for every stage. Nodes downstream of the boundary
    may be edited between calls (their weights refit); nodes already run must not be.
    """

    def __init__(self, batches: Iterable[Mapping[str, np.ndarray]]):
        self.values = [dict(b) for b in batches]
        self.done: set[str] = set()  # names of the nodes already run

    def advance(
        self, model: onnx.ModelProto, taps: list[str], threads: int = 0
    ) -> list[dict[str, np.ndarray]]:
        graph = model.graph
        have = set(self.values[0]) if self.values else set()
        inits = {t.name for t in graph.initializer}
        producer = producers(graph)
        run: set[str] = set()
        stack = [t for t in taps if t not in have]
        while stack:
            node = producer.get(stack.pop())
            if node is None or node.name in run:
                continue
            if node.name in self.done:
                raise ValueError(f"tensor {node.output[0]!r} left the frontier before it was tapped")
            run.add(node.name)
            stack.extend(i for i in node.input if i and i not in have and i not in inits)
        self.done |= run
        later = {i for n in graph.node if n.name not in self.done for i in n.input} | set(taps)
        order = [n for n in graph.node if n.name in run]
        if order:
            produced = {o for n in order for o in n.output}
            outs = sorted(t for t in produced if t in later)
            feeds = sorted({i for n in order for i in n.input if i in have})
            first = self.values[0]
            inputs = [
                helper.make_tensor_value_info(t, helper.np_dtype_to_tensor_dtype(first[t].dtype), None)
                for t in feeds
            ]
            sess = ort_session(_sub_model(model, order, inputs, outs), threads)
            for vals in self.values:
                vals.update(zip(outs, sess.run(outs, {t: vals[t] for t in feeds}), strict=True))
        for vals in self.values:
            for t in [t for t in vals if t not in later]:
                del vals[t]
        return [{t: vals[t] for t in taps} for vals in self.values]


def stream(
    model: onnx.ModelProto,
    batches: Iterable[Mapping[str, np.ndarray]],
    taps: list[str],
    sink: Callable[[dict[str, np.ndarray]], None],
    progress: Callable[[int], None] | None = None,
) -> None:
    """Run ``model`` over ``batches`` and hand each batch's tapped tensors to ``sink``."""
    sess, needed = tapped_session(model, taps)
    for feeds in batches:
        outs = sess.run(taps, {k: v for k, v in feeds.items() if k in needed})
        sink(dict(zip(taps, outs, strict=True)))
        if progress is not None:
            progress(len(next(iter(feeds.values()))))


@dataclass
class HessianSum:
    """Σ x xᵀ over feature rows, per conv group (float64 by default): H = (2/n)·Σ x xᵀ on demand.

    ``samples``: the rows as dampening counts them (``LinearLayer.rows_per_sample``); ``n`` otherwise."""

    layer: LinearLayer
    dtype: type = np.float64
    xx: np.ndarray | None = None
    n: int = 0
    samples: int = 0

    def add(self, x: np.ndarray) -> None:
        part, rows = self.layer.feature_gram(x, self.dtype)
        self.xx = part if self.xx is None else self.xx + part
        self.n += rows
        self.samples += rows // self.layer.rows_per_sample(x)

    def hessian(self) -> np.ndarray:
        return np.multiply(self.xx, 2.0 / max(self.n, 1), dtype=np.float64)

    def merge(self, other: HessianSum) -> None:
        """Add ``other``'s stream to this one in place (Σ x xᵀ and row counts add)."""
        if other.xx is not None:
            if self.xx is None:
                self.xx = other.xx.copy()
            else:
                self.xx += other.xx
            self.n += other.n
            self.samples += other.samples


def row_hessian(x: np.ndarray) -> np.ndarray:
    """H = (2/n)·XᵀX of rows x [groups, n, features] (per conv group)."""
    return (2.0 / max(x.shape[1], 1)) * np.matmul(np.swapaxes(x, 1, 2), x)


@dataclass
class RowSample:
    """A uniform random sample (without replacement) of at most ``limit`` feature rows of a layer's input.

    Every row gets a random key and the ``limit`` smallest keys seen so far are kept, so the sample is
    uniform over the whole stream while memory stays at ``limit`` rows per conv group.
    """

    layer: LinearLayer
    limit: int = 2048
    seed: int = 0
    part: int = 0  # which of several streams (their keys must be independent)
    rows: np.ndarray | None = None  # [groups, kept, features]
    keys: np.ndarray | None = None
    n: int = 0  # rows seen
    samples: int = 0  # rows seen as dampening counts them (``LinearLayer.rows_per_sample``)

    def add(self, x: np.ndarray) -> None:
        rows = self.layer.features(x.astype(np.float64, copy=False))
        rng = np.random.default_rng([self.seed, self.n, self.part] if self.part else [self.seed, self.n])
        keys = rng.random(rows.shape[1])
        self.n += rows.shape[1]
        self.samples += rows.shape[1] // self.layer.rows_per_sample(x)
        if self.rows is not None:
            rows, keys = np.concatenate([self.rows, rows], axis=1), np.concatenate([self.keys, keys])
        if len(keys) > self.limit:
            pick = np.argpartition(keys, self.limit)[: self.limit]
            rows, keys = rows[:, pick], keys[pick]
        self.rows, self.keys = rows, keys

    def hessian(self) -> np.ndarray:
        """H of the kept rows (``row_hessian``): an unbiased estimate of the whole stream's."""
        return row_hessian(self.rows)

    def merge(self, other: RowSample) -> None:
        """Make this a uniform sample of both streams, in place: the ``limit`` smallest keys of the two."""
        if other.rows is None:
            return
        if self.rows is None:
            self.rows, self.keys = other.rows, other.keys
        else:
            self.rows = np.concatenate([self.rows, other.rows], axis=1)
            self.keys = np.concatenate([self.keys, other.keys])
        if len(self.keys) > self.limit:
            pick = np.argpartition(self.keys, self.limit)[: self.limit]
            self.rows, self.keys = self.rows[:, pick], self.keys[pick]
        self.n += other.n
        self.samples += other.samples


@dataclass
class ChannelStats:
    """Per-channel activation statistics on one axis: mean |a| and APoZ (fraction of values ≤ 0)."""

    axis: int
    abs_sum: np.ndarray | None = None
    nonpos: np.ndarray | None = None
    count: int = 0

    def add(self, a: np.ndarray) -> None:
        moved = np.moveaxis(a, self.axis, -1).reshape(-1, a.shape[self.axis])
        s, z = np.abs(moved).sum(0, dtype=np.float64), (moved <= 0).sum(0)
        self.abs_sum = s if self.abs_sum is None else self.abs_sum + s
        self.nonpos = z if self.nonpos is None else self.nonpos + z
        self.count += moved.shape[0]

    def merge(self, other: ChannelStats) -> None:
        """Add ``other``'s stream to this one in place."""
        if other.abs_sum is not None:
            self.abs_sum = other.abs_sum if self.abs_sum is None else self.abs_sum + other.abs_sum
            self.nonpos = other.nonpos if self.nonpos is None else self.nonpos + other.nonpos
            self.count += other.count

    @property
    def mean_abs(self) -> np.ndarray:
        return self.abs_sum / max(self.count, 1)

    @property
    def apoz(self) -> np.ndarray:
        return self.nonpos / max(self.count, 1)


@dataclass
class Statistics:
    hessians: dict[str, HessianSum] = field(default_factory=dict)  # layer name → Σ x xᵀ of its input
    channels: dict[str, ChannelStats] = field(default_factory=dict)  # tensor → channel statistics
    samples: dict[str, RowSample] = field(default_factory=dict)  # layer name → sampled input rows

    def merge(self, other: Statistics) -> None:
        """Add ``other``'s stream in place (every accumulator is a sum or a keyed sample)."""
        for mine, theirs in (
            (self.hessians, other.hessians),
            (self.channels, other.channels),
            (self.samples, other.samples),
        ):
            for k, acc in mine.items():
                acc.merge(theirs[k])


@dataclass
class Wanted:
    """What a statistics pass collects: input Hessian sums of ``layers`` (or, with ``sample_rows``, a row
    sample of each layer's input; ``seed`` picks it) in ``dtype``, and channel statistics of the
    ``channel_axes`` tensors (tensor → channel axis)."""

    layers: Mapping[str, LinearLayer]
    channel_axes: Mapping[str, int] = field(default_factory=dict)
    dtype: type = np.float64
    sample_rows: int = 0
    seed: int = 0


def collect_statistics(
    model: onnx.ModelProto,
    batches: Iterable[Mapping[str, np.ndarray]],
    wanted: Wanted,
    progress: Callable[[int], None] | None = None,
) -> Statistics:
    """One pass over ``batches``: the statistics ``wanted``."""
    return collect_split_statistics(model, [batches], wanted, progress)[0]


def collect_split_statistics(
    model: onnx.ModelProto,
    parts: list[Iterable[Mapping[str, np.ndarray]]],
    wanted: Wanted,
    progress: Callable[[int], None] | None = None,
) -> list[Statistics]:
    """:func:`collect_statistics` of several streams of batches in one pass (one session): one
    ``Statistics`` per part, so a caller gets the statistics of disjoint halves and of the whole
    (``a.merge(b)``) for the price of one pass."""
    layers, channel_axes, sample_rows = wanted.layers, wanted.channel_axes, wanted.sample_rows
    every = []
    by_input: dict[str, list[list]] = {}  # tapped tensor → per part, its accumulators
    for part in range(len(parts)):
        stats = Statistics()
        for name, layer in layers.items():
            if sample_rows:
                acc = stats.samples[name] = RowSample(layer, sample_rows, wanted.seed, part)
            else:
                acc = stats.hessians[name] = HessianSum(layer, wanted.dtype)
            by_input.setdefault(layer.tap, [[] for _ in parts])[part].append(acc)
        for tensor, axis in channel_axes.items():
            stats.channels[tensor] = ChannelStats(axis)
        every.append(stats)
    taps = sorted(set(by_input) | set(channel_axes))
    current = [0]  # the part the batch being run belongs to (set by ``tagged`` before it yields)

    def tagged():
        for i, batches in enumerate(parts):
            current[0] = i
            yield from batches

    def sink(outs: dict[str, np.ndarray]) -> None:
        part = current[0]
        for tensor, arr in outs.items():
            for h in by_input.get(tensor, [[]] * len(parts))[part]:
                h.add(arr)
            if tensor in every[part].channels:
                every[part].channels[tensor].add(arr)

    if taps:
        stream(model, tagged(), taps, sink, progress)
    return every
