"""Latency lookup table: measured onnxruntime time of every costed layer at candidate channel widths.

``--metric latency`` allocates widths against measured speed instead of MACs (SPDY's latency
tables): depthwise and memory-bound layers gain little from fewer MACs, and odd widths fall off
ORT's blocked (NCHWc) kernels. For every node with a MAC rule whose channel spaces hold prunable
groups, a single-node model is built at each point of a width grid (the node's real attributes and
input resolution, random weights of the pruned shape) and timed; the prediction for a plan is

    L(plan) = L_rest + s · Σ_n  interp_n(kept widths of n's spaces)

with ``interp_n`` multilinear over the grid (made monotone: fewer channels never cost more),
``s`` and ``L_rest`` chosen so that the dense prediction equals the measured dense model
(L_rest = the time of everything the table does not cover, kept constant: conservative).
Tables are cached on disk, keyed by the model's bytes, onnxruntime version, CPU, batch and threads.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .channels import Trace
from .graph import initializers
from .latency import measure_latency
from .shapes import Shape, static_shapes

GRID = (1.0, 0.75, 0.5, 0.25)  # kept fractions probed per space
TABLE_VERSION = 2


@dataclass
class NodeTable:
    """Measured milliseconds of one node over the grid of kept widths of its varying spaces."""

    spaces: list[int]  # varying spaces, in grid-axis order
    widths: list[list[int]]  # per space: probed kept widths, descending (first = full width)
    ms: np.ndarray  # shape len(widths[0]) × len(widths[1]) × ...

    def predict(self, kept: Mapping[int, int]) -> float:
        """Multilinear interpolation of ``ms`` at the kept widths (clamped to the probed range)."""
        return float(
            _interp(
                self.ms,
                [np.asarray(w[::-1], float) for w in self.widths],
                [float(kept[s]) for s in self.spaces],
            )
        )

    def to_dict(self) -> dict:
        return {"spaces": self.spaces, "widths": self.widths, "ms": self.ms.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> NodeTable:
        return cls(list(d["spaces"]), [list(w) for w in d["widths"]], np.asarray(d["ms"], float))


def _interp(ms: np.ndarray, axes: list[np.ndarray], point: list[float]) -> float:
    """Multilinear interpolation; ``ms`` is indexed by *descending* widths, ``axes`` are ascending."""
    grid = ms[tuple(slice(None, None, -1) for _ in axes)]  # ascending along every axis
    for ax, x in zip(axes, point, strict=True):
        x = min(max(x, ax[0]), ax[-1])
        if len(ax) == 1:
            grid = grid[0]
            continue
        i = int(np.clip(np.searchsorted(ax, x) - 1, 0, len(ax) - 2))
        t = (x - ax[i]) / (ax[i + 1] - ax[i]) if ax[i + 1] > ax[i] else 0.0
        grid = grid[i] * (1 - t) + grid[i + 1] * t
    return float(grid)


def monotone(ms: np.ndarray) -> np.ndarray:
    """Make ``ms`` non-increasing along every axis (index 0 = full width): fewer channels never cost more.

    Measurement noise can make a narrower probe look slower; the allocator must not chase that.
    """
    out = ms.copy()
    for axis in range(out.ndim):
        out = np.flip(np.maximum.accumulate(np.flip(out, axis), axis=axis), axis)
    return out


@dataclass
class LatencyTable:
    """Per-node tables plus the calibration to the measured dense model (see module docstring)."""

    nodes: dict[str, NodeTable]
    dense_ms: float
    batch: int
    threads: int
    probes: int = 0
    seconds: float = 0.0
    cached: bool = False
    rest_ms: float = field(init=False)
    scale: float = field(init=False)

    def __post_init__(self):
        covered = sum(float(t.ms.flat[0]) for t in self.nodes.values())
        if covered > self.dense_ms:  # single-layer probes pay layout reorders the whole model does not
            self.rest_ms, self.scale = 0.0, self.dense_ms / covered
        else:
            self.rest_ms, self.scale = self.dense_ms - covered, 1.0

    def predict(self, kept_sizes: Mapping[int, int]) -> float:
        """Predicted model milliseconds when every space s keeps ``kept_sizes[s]`` channels."""
        return self.rest_ms + self.scale * sum(t.predict(kept_sizes) for t in self.nodes.values())

    def summary(self) -> dict:
        return {
            "batch": self.batch,
            "threads": self.threads,
            "nodes": len(self.nodes),
            "probes": self.probes,
            "dense_ms": round(self.dense_ms, 4),
            "covered_ms": round(self.dense_ms - self.rest_ms, 4),
            "seconds": round(self.seconds, 1),
            "cached": self.cached,
        }


# -- single-node probes ---------------------------------------------------------------------------


def probe_model(
    model: onnx.ModelProto,
    trace: Trace,
    node: onnx.NodeProto,
    shapes: Mapping[str, Shape],
    kept: Mapping[int, int],
    seed: int = 0,
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A one-node model of ``node`` with its spaces narrowed to ``kept`` channels, and random feeds.

    Data inputs shrink along their traced channel view, weights along every ``param`` member of the
    node (the same edits pruning makes), and a depthwise conv's ``group`` follows its channel count.
    """
    rng = np.random.default_rng(seed)
    inits = initializers(model.graph)
    members = [m for m in trace.members if m.node == node.name]
    # activations are of the weights' float type (a float16 model's probes must not feed float32)
    act = next(
        (
            inits[n].data_type
            for n in node.input
            if n in inits and inits[n].data_type in (onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
        ),
        onnx.TensorProto.FLOAT,
    )
    proto = onnx.NodeProto()
    proto.CopyFrom(node)
    graph_inputs, probe_inits, feeds = [], [], {}

    def narrowed(shape, axis, space, outer=1, inner=1, groups=1):
        shape = list(shape)
        if space in kept:
            shape[axis] = outer * kept[space] * inner // groups
        return shape

    for i, name in enumerate(node.input):
        if not name:
            continue
        if name in inits:
            shape = list(inits[name].dims)
            for m in members:
                if m.kind == "param" and m.input_index == i:
                    shape = narrowed(
                        shape, m.axis, m.space, m.outer, m.inner, m.groups if m.role == "consumer" else 1
                    )
            dtype = helper.tensor_dtype_to_np_dtype(inits[name].data_type)
            probe_inits.append(
                numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(dtype), name)
            )
        else:
            shape = list(shapes[name])
            view = trace.views.get(name)
            if view is not None:
                shape = narrowed(shape, view.axis, view.space, view.outer, view.inner)
            feeds[name] = rng.standard_normal(shape).astype(helper.tensor_dtype_to_np_dtype(act))
            graph_inputs.append(helper.make_tensor_value_info(name, act, shape))
    for m in members:
        if m.kind == "group" and m.space in kept:
            for a in proto.attribute:
                if a.name == "group":
                    a.i = kept[m.space]
    graph = helper.make_graph(
        [proto],
        "probe",
        graph_inputs,
        [helper.make_tensor_value_info(o, act, None) for o in node.output if o],
        probe_inits,
    )
    probe = helper.make_model(graph, opset_imports=list(model.opset_import))
    probe.ir_version = model.ir_version
    return onnx.shape_inference.infer_shapes(probe), feeds


def time_probe(
    probe: onnx.ModelProto, feeds: Mapping[str, np.ndarray], threads: int, runs: int = 15
) -> float:
    """Median milliseconds of one probe: ``measure_latency`` with a short budget (there are hundreds).

    Quiet: a grouped conv probed at a width its groups do not divide fails to run, and ``build_table``
    prices that point by MACs instead; onnxruntime need not print each such failure.
    """
    return measure_latency(
        probe, feeds, runs=runs, warmup=3, threads=threads, budget_s=0.5, quiet=True
    ).median_ms


def run_overhead_ms(threads: int) -> float:
    """What one ``sess.run`` of a trivial model costs: subtracted from every probe, since the whole
    model pays it once, not once per layer."""
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    model = helper.make_model(
        helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "overhead", [x], [y]),
        opset_imports=[helper.make_opsetid("", 13)],
        ir_version=8,
    )
    return time_probe(model, {"x": np.zeros(1, np.float32)}, threads, runs=50)


def grid_widths(size: int, round_to: int, min_keep: int = 1) -> list[int]:
    """Probed kept widths of a space: ``GRID`` fractions rounded to multiples of ``round_to``, descending."""
    out = []
    for f in GRID:
        k = size if f == 1.0 else max(min_keep, round_to, int(round(size * f / round_to)) * round_to)
        if k <= size and k not in out:
            out.append(k)
    return out


def varying_spaces(trace: Trace, groups: set[int]) -> set[int]:
    """Spaces that hold a segment of one of ``groups`` (the only widths pruning can change)."""
    return {sid for sid, segs in trace.segments.items() if any(s.group in groups for s in segs)}


# -- building, caching ----------------------------------------------------------------------------


def cache_dir() -> Path:
    root = os.environ.get("ONNXPRUNE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "onnxprune")
    return Path(root) / "latency"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def table_key(model: onnx.ModelProto, batch: int, threads: int, round_to: int, groups: set[int]) -> str:
    import onnxruntime

    h = hashlib.sha256(model.SerializeToString(deterministic=True))
    h.update(
        json.dumps(
            [
                TABLE_VERSION,
                onnxruntime.__version__,
                cpu_name(),
                os.cpu_count(),
                batch,
                threads,
                round_to,
                sorted(groups),
                GRID,
            ]
        ).encode()
    )
    return h.hexdigest()[:32]


def build_table(
    model: onnx.ModelProto,
    trace: Trace,
    groups: set[int],
    feeds: Mapping[str, np.ndarray],
    *,
    threads: int = 0,
    round_to: int = 1,
    use_cache: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> LatencyTable:
    """Measure (or load from the cache) the latency table of ``model`` for pruning ``groups``.

    ``feeds`` is one real input batch: it fixes the batch size and resolution of every probe and is
    what the dense model is timed on.
    """
    input_shapes = {k: tuple(v.shape) for k, v in feeds.items()}
    batch = int(next(iter(input_shapes.values()))[0]) if input_shapes else 1
    key = table_key(model, batch, threads, round_to, groups)
    path = cache_dir() / f"{key}.json"
    if use_cache and path.is_file():
        try:
            d = json.loads(path.read_text())
            return LatencyTable(
                {n: NodeTable.from_dict(t) for n, t in d["nodes"].items()},
                d["dense_ms"],
                d["batch"],
                d["threads"],
                d["probes"],
                d["seconds"],
                cached=True,
            )
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry is simply measured again
    start = time.perf_counter()
    shapes = static_shapes(model, input_shapes)
    varying = varying_spaces(trace, groups)
    jobs = []
    for node in model.graph.node:
        spaces = sorted({s for _, sp in trace.mac_scaling.get(node.name, []) for s in sp} & varying)
        if spaces:
            jobs.append((node, spaces, [grid_widths(trace.spaces[s].size, round_to) for s in spaces]))
    total = sum(int(np.prod([len(w) for w in ws])) for _, _, ws in jobs)
    nodes, done = {}, 0
    overhead = run_overhead_ms(threads)
    for node, spaces, widths in jobs:
        ms = np.zeros([len(w) for w in widths])
        for idx in itertools.product(*[range(len(w)) for w in widths]):
            kept = {s: widths[a][i] for a, (s, i) in enumerate(zip(spaces, idx, strict=True))}
            try:
                probe, probe_feeds = probe_model(model, trace, node, shapes, kept)
                ms[idx] = max(time_probe(probe, probe_feeds, threads) - overhead, 0.0)
            except Exception:  # e.g. a grouped conv at a width its groups do not divide: scale with MACs
                ms[idx] = ms.flat[0] * float(np.prod([k / trace.spaces[s].size for s, k in kept.items()]))
            done += 1
            if progress:
                progress(done, total)
        nodes[node.name] = NodeTable(spaces, widths, monotone(ms))
    dense = measure_latency(model, feeds, runs=30, warmup=5, threads=threads, budget_s=10.0).median_ms
    table = LatencyTable(nodes, dense, batch, threads, total, time.perf_counter() - start)
    if use_cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(
                json.dumps(
                    {
                        "nodes": {n: t.to_dict() for n, t in nodes.items()},
                        "dense_ms": dense,
                        "batch": batch,
                        "threads": threads,
                        "probes": total,
                        "seconds": table.seconds,
                    }
                )
            )
            os.replace(tmp, path)
        except OSError:
            pass  # an unwritable cache only costs the next run the measurement
    return table


# -- meeting a measured speedup -------------------------------------------------------------------

LATENCY_ROUND_TO = (
    16  # default --round-to for --metric latency: ORT's NCHWc block (BENCHMARKS.md, "--round-to")
)
MAX_ATTEMPTS = 5


def latency_feeds(
    model: onnx.ModelProto, input_shapes: Mapping[str, Shape] | None, batch: int
) -> dict[str, np.ndarray]:
    """Random inputs at ``batch`` (timing does not depend on the values); dynamic dims from
    ``input_shapes``."""
    from .bench import random_feeds, shapes_at_batch

    return random_feeds(model, shapes_at_batch(model, batch, input_shapes))


def measured_speedups(
    dense: onnx.ModelProto,
    pruned: onnx.ModelProto,
    batches: tuple[int, ...],
    threads: int,
    input_shapes: Mapping[str, Shape] | None,
) -> dict[str, dict]:
    """Dense vs pruned median latency, measured side by side at every batch the model accepts."""
    from .bench import ModelSkipped, compare_latency

    out = {}
    for b in batches:
        try:
            d, p = compare_latency(
                [dense, pruned],
                batch=b,
                threads=threads,
                input_shapes=input_shapes,
                rounds=40 if b == 1 else 12,
                warmup=3,
                budget_s=20.0,
            )
        except ModelSkipped:
            continue  # a fixed batch dim: only the batch the model was exported with can run
        out[f"batch {b}"] = {
            "dense_ms": round(d.p50_ms, 4),
            "pruned_ms": round(p.p50_ms, 4),
            "speedup": round(d.p50_ms / p.p50_ms, 3),
        }
    return out


def next_budget(history: list[tuple[float, float]], target: float) -> float:
    """The next predicted budget from measured (budget, worst speedup) pairs, aiming at 1.03·target.

    Once one budget measured at or above the target and a looser one below it, interpolate between
    them in log-log (speedup ≈ c·budget^k locally); before that, scale the last budget by s/aim.
    The table's predictions are not linear in the budget (a tighter budget can switch whole layers
    onto faster kernels), so a proportional step alone oscillates.
    """
    aim = target * 1.03
    met = [(b, s) for b, s in history if s >= target]
    short = [(b, s) for b, s in history if s < target]
    if met and short:
        b_met, s_met = max(met)
        looser = [(b, s) for b, s in short if b > b_met]
        if looser:
            b_short, s_short = min(looser)
            if s_met > s_short:
                t = np.log(s_met / aim) / np.log(s_met / s_short)
                return float(b_met * (b_short / b_met) ** float(np.clip(t, 0.1, 0.9)))
    b, s = history[-1]
    return b * s / aim


@dataclass
class SpeedCheck:
    """How the latency loop measures: the speedup to meet, at every batch of ``batches`` (the worst counts),
    with ``threads`` intra-op threads (0: one per core), dynamic dims from ``input_shapes``."""

    target: float
    batches: tuple[int, ...]
    threads: int = 0
    input_shapes: Mapping[str, Shape] | None = None


class Planner(Protocol):
    """What the latency loop re-plans with: ``plan(budget_ms)`` (raises TargetUnreachableError below the
    allocator's leanest plan), ``apply(plan)`` → the pruned model, and ``floor`` (the leanest plan's ms)."""

    floor: float

    def plan(self, budget: float) -> dict: ...

    def apply(self, plan: dict) -> onnx.ModelProto: ...


def meet_speedup(
    dense: onnx.ModelProto,
    planner: Planner,
    first: tuple[dict, onnx.ModelProto],
    budget_ms: float,
    check: SpeedCheck,
):
    """Measure the pruned model's real speedup and re-allocate until it meets ``check.target`` without much
    excess.

    The table predicts; only the side-by-side measurement decides. The worst speedup over the batches
    steers the next predicted budget (:func:`next_budget`) — tighter when short, looser when more than
    10% over (overshooting costs accuracy), never below ``planner.floor`` (the table's prediction for the
    leanest plan the allocator allows). The loosest allocation that measured ≥ target wins.
    Returns (plan, pruned model, report section); raises TargetUnreachableError when no attempt
    measures the target.
    """
    from .errors import TargetUnreachableError

    (plan, pruned), target = first, check.target
    attempts, best, seen, history = [], None, [], []
    for _ in range(MAX_ATTEMPTS):
        speed = measured_speedups(dense, pruned, check.batches, check.threads, check.input_shapes)
        worst = min(v["speedup"] for v in speed.values())
        attempts.append({"budget_ms": round(budget_ms, 4), "measured": speed})
        seen.append(plan)
        history.append((budget_ms, worst))
        if worst >= target:
            if best is None or budget_ms > best[0]:
                best = (budget_ms, plan, pruned, speed)
            if worst <= target * 1.1:
                break
        # no tighter than the table's leanest plan: measured once, it is the last word when still short
        budget_ms = max(next_budget(history, target), planner.floor)
        plan = planner.plan(budget_ms)
        if any(_same_plan(plan, p) for p in seen):
            break
        pruned = planner.apply(plan)
    if best is None:
        shown = ", ".join(f"{k} {v['speedup']:.2f}x" for k, v in speed.items())
        raise TargetUnreachableError(
            f"latency target {target:g}x not met: measured {shown} after {len(attempts)} "
            "allocations against the latency table (try a lower --target)"
        )
    _, plan, pruned, speed = best
    return plan, pruned, {"target": target, "measured": speed, "attempts": attempts}


def _same_plan(a: Mapping, b: Mapping) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
