"""The dense model beside the edited one, stage by stage: what the least-squares refit and SparseGPT share.

Layers are visited in stages (``layer_stages``: a stage's inputs depend only on layers of earlier stages).
Both
models advance from their last boundary (``Frontier``: every node runs once per model), and each layer of the
stage receives, chunk by chunk, its dense and edited input rows, the calibration half they belong to
(``validation_halves``) and, for a layer whose output only feeds a residual Add, the Add's other operand in
both models (``settled_partners``). A policy (``StagePolicy``) accumulates what it needs from them
(``GramSums``)
and edits the stage's layers before the walk runs the next stage on the edited model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Protocol

import numpy as np
import onnx
from onnxprune.calibration.collect import Frontier

from onnxprune.graph import producers
from onnxprune.layers import LinearLayer, residual_partners


def ridge_lambda(g: np.ndarray, ridge: float, shrink: float, features: float, rows: int | None) -> float:
    """λ = (ridge + shrink·features/rows)·mean(diag G): the fewer calibration rows per feature, the harder a
    least-squares fit on the Gram matrix G is pulled toward its prior (no row term without ``rows``)."""
    per_row = shrink * features / rows if rows else 0.0
    return (ridge + per_row) * max(float(np.mean(np.diag(g))), 1e-12)


def validation_halves(batch_rows: Sequence[int], groups: np.ndarray | None = None) -> list[np.ndarray]:
    """Per calibration batch, the validation half (0 or 1) of each of its rows.

    Without ``groups`` every row is its own sample: the first half of the batches against the rest.
    With ``groups`` (the source of each row, e.g. its photo) whole groups go, in order of first
    appearance, to the half with fewer rows so far, so no source sits on both sides.
    """
    if groups is None:
        return [np.full(n, int(2 * bi >= len(batch_rows))) for bi, n in enumerate(batch_rows)]
    total = int(sum(batch_rows))
    if len(groups) < total:
        raise ValueError(f"{len(groups)} groups for {total} calibration rows")
    _, first, inverse, counts = np.unique(
        np.asarray(groups)[:total], return_index=True, return_inverse=True, return_counts=True
    )
    side, size = np.zeros(len(first), int), [0, 0]
    for u in np.argsort(first, kind="stable"):
        side[u] = int(size[1] < size[0])
        size[side[u]] += counts[u]
    return np.split(side[inverse.reshape(-1)], np.cumsum(batch_rows)[:-1])


def half_chunks(halves: np.ndarray, chunk: int) -> Iterator[tuple[slice | np.ndarray, int]]:
    """(rows, half) over one batch in chunks of at most ``chunk`` rows (bounding the im2col copies)."""
    for lo in range(0, len(halves), chunk):
        part = halves[lo : lo + chunk]
        for half in (0, 1):
            rows = np.flatnonzero(part == half)
            if len(rows) == len(part):
                yield slice(lo, lo + chunk), half
            elif len(rows):
                yield lo + rows, half


def layer_stages(
    model: onnx.ModelProto, layers: Mapping[str, LinearLayer], todo: set[str]
) -> list[list[str]]:
    """``todo`` layers in stages: a layer's input depends only on layers of earlier stages (topological
    levels)."""
    level: dict[str, int] = {}
    stages: dict[int, list[str]] = {}
    for node in model.graph.node:
        lvl = max((level.get(i, 0) for i in node.input), default=0)
        if node.name in todo:
            stages.setdefault(lvl, []).append(node.name)
            lvl += 1
        for o in node.output:
            level[o] = lvl
    return [stages[k] for k in sorted(stages)]


def settled_partners(
    model: onnx.ModelProto, partners: Mapping[str, str], stages: list[list[str]]
) -> dict[str, str]:
    """The residual partners (``layers.residual_partners``) computed from layers of earlier stages only.

    Tapping a partner runs every node up to it: one downstream of a layer still to be fit (of the same or a
    later stage, e.g. the conv on the other side of a projection shortcut) would run with stale weights.
    """
    stage_of = {name: i for i, stage in enumerate(stages) for name in stage}
    writer = producers(model.graph)
    out = {}
    for name, tensor in partners.items():
        seen: set[str] = set()
        stack = [tensor]
        while stack:
            node = writer.get(stack.pop())
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            stack.extend(node.input)
        if all(stage_of.get(n, -1) < stage_of[name] for n in seen):
            out[name] = tensor
    return out


class GramSums:
    """Gram accumulators of one calibration half: pp = X̃_p X̃_pᵀ, dp = X̃_d X̃_pᵀ, kk, dk likewise for X_k;
    ep = Δ X̃_pᵀ for a layer with a residual partner (Δ: the partner's drift, dense − pruned, rows = outputs).

    ``rows`` feature rows summed; ``samples`` the rows as ridges count them
    (``LinearLayer.rows_per_sample``)."""

    KEYS = ("pp", "dp", "kk", "dk", "ep")

    def __init__(self):
        self.pp = self.dp = self.kk = self.dk = self.ep = None
        self.rows = self.samples = 0

    def add(
        self,
        fd: np.ndarray,
        fp: np.ndarray,
        fk: np.ndarray | None,
        bias: bool,
        per_sample: int = 1,
        drift: np.ndarray | None = None,
    ) -> None:
        self.rows += fp.shape[1]
        self.samples += fp.shape[1] // per_sample
        sd, sp, sk = ((f.sum(1, dtype=np.float64) if bias and f is not None else None) for f in (fd, fp, fk))
        parts = {"pp": _gram(fp, fp, bias, sp, sp), "dp": _gram(fd, fp, bias, sd, sp)}
        if fk is not None:
            parts.update(kk=_gram(fk, fk, bias, sk, sk), dk=_gram(fd, fk, bias, sd, sk))
        if drift is not None:  # [rows, outputs] of an ungrouped layer
            parts["ep"] = _gram(drift[None], fp, bias, sum_b=sp)[:, : drift.shape[1]]
        for key, val in parts.items():
            old = getattr(self, key)
            setattr(self, key, val if old is None else old + val)

    def __add__(self, other: GramSums) -> GramSums:
        out = GramSums()
        out.rows, out.samples = self.rows + other.rows, self.samples + other.samples
        for key in self.KEYS:
            a, b = getattr(self, key), getattr(other, key)
            setattr(
                out, key, b if a is None else a if b is None else a + b
            )  # one batch: the second half is empty
        return out


def _gram(
    a: np.ndarray, b: np.ndarray, bias: bool, sum_a: np.ndarray | None = None, sum_b: np.ndarray | None = None
) -> np.ndarray:
    """[a 1]ᵀ[b 1] per block without materializing the ones column: [[aᵀb, Σa], [Σb, n]] (``sum_a`` /
    ``sum_b``:
    Σa / Σb over the rows in float64, where the caller has them: one array enters several Gram matrices)."""
    core = np.matmul(np.swapaxes(a, 1, 2), b).astype(np.float64)
    if not bias:
        return core
    blocks, rows = a.shape[0], a.shape[1]
    out = np.empty((blocks, a.shape[2] + 1, b.shape[2] + 1))
    out[:, :-1, :-1] = core
    out[:, :-1, -1] = a.sum(1, dtype=np.float64) if sum_a is None else sum_a
    out[:, -1, :-1] = b.sum(1, dtype=np.float64) if sum_b is None else sum_b
    out[:, -1, -1] = rows
    return out


def partner_drift(
    layer: LinearLayer,
    s_dense: np.ndarray,
    s_pruned: np.ndarray,
    shape: tuple[int, int],
    kept: np.ndarray | None = None,
) -> np.ndarray | None:
    """Rows of the residual partner's drift s_d − s_p (the dense partner's channels ``kept`` when the pruned
    one has fewer) if they are the layer's output rows, ``shape`` = (feature rows, outputs); None when the
    Add broadcasts. In the activations' precision (float16 as float32), as the Gram products are taken."""
    d, p = partner_rows(layer, s_dense, s_pruned, kept)
    return d - p if d.shape == p.shape == tuple(shape) else None


def partner_rows(
    layer: LinearLayer, s_dense: np.ndarray, s_pruned: np.ndarray, kept: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The residual partner's dense and pruned values as the layer's output rows (the dense partner's channels
    ``kept`` when the pruned one has fewer), in the activations' precision (float16 as float32)."""
    d = layer.output_rows(s_dense.astype(np.promote_types(s_dense.dtype, np.float32)))
    p = layer.output_rows(s_pruned.astype(d.dtype))
    if kept is not None and d.shape[1] != p.shape[1]:
        d = d[:, np.asarray(kept)]
    return d, p


# (dense rows, edited rows, half, the residual partner's (dense, edited) rows or None) → whether it took the
# partner's drift (False: the Add broadcasts, the layer keeps no block output)
Sink = Callable[[np.ndarray, np.ndarray, int, "tuple[np.ndarray, np.ndarray] | None"], bool]


class StagePolicy(Protocol):
    def start(self, stage: list[str]) -> dict[str, Sink]:
        """Accumulators of the stage's layers, fed chunk by chunk."""

    def finish(self, stage: list[str], dense_values: list[dict], edited_values: list[dict]) -> None:
        """Solve and write the stage's layers into the edited model (the stage's tapped values, per batch)."""


class StagedWalk:
    """Walk ``todo`` layers of ``edited`` (its linear ``layers``; ``dense_layers``: the dense model's, where
    they are not the same) in stages beside ``dense``. Rows come in chunks of ``chunk`` samples (bounding the
    im2col copies); ``groups``: the source of each calibration row (``validation_halves``)."""

    def __init__(
        self,
        dense: onnx.ModelProto,
        edited: onnx.ModelProto,
        layers: Mapping[str, LinearLayer],
        todo: set[str],
        feeds: list[Mapping[str, np.ndarray]],
        groups: np.ndarray | None = None,
        chunk: int = 8,
        dense_layers: Mapping[str, LinearLayer] | None = None,
    ):
        self.dense, self.edited, self.layers, self.feeds, self.chunk = dense, edited, layers, feeds, chunk
        self.todo = set(todo)
        self.dense_taps = {n: (dense_layers or layers)[n].tap for n in todo}
        self.halves = validation_halves([len(next(iter(f.values()))) for f in feeds], groups)
        self.stages = layer_stages(edited, layers, todo)
        self.partners = settled_partners(
            edited, residual_partners(edited, {n: layers[n] for n in todo}), self.stages
        )

    def run(self, policy: StagePolicy, progress: Callable[[str, int, int], None] | None = None) -> None:
        d_front, e_front = Frontier(self.feeds), Frontier(self.feeds)
        for si, stage in enumerate(self.stages):
            if progress:
                progress("stage", si, len(self.stages))
            sinks = policy.start(stage)
            taps = sorted(
                {self.dense_taps[n] for n in stage} | {self.partners[n] for n in stage if n in self.partners}
            )
            d_vals, e_vals = d_front.advance(self.dense, taps), e_front.advance(self.edited, taps)
            for bi, (xd, xe) in enumerate(zip(d_vals, e_vals, strict=True)):
                for rows, half in half_chunks(self.halves[bi], self.chunk):
                    for name, add in sinks.items():
                        skip = self.partners.get(name)
                        partner = (xd[skip][rows], xe[skip][rows]) if skip else None
                        x_dense, x_edited = xd[self.dense_taps[name]][rows], xe[self.layers[name].tap][rows]
                        if not add(x_dense, x_edited, half, partner) and skip:
                            del self.partners[name]  # the Add broadcasts: no block output to keep
            policy.finish(stage, d_vals, e_vals)
