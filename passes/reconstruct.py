"""Reconstruction: refit the pruned model's linear layers to the dense model's outputs, layer by layer.

Sequential and error-correcting, as OBC/SparseGPT: layers are visited in stages (a stage's inputs depend
only on already refitted layers); for each layer the kept output rows are refit on the *pruned* model's
inputs X_p to reproduce the *dense* layer's outputs Y_d = W_d X_d + b_d:

    W' = argmin ‖W_d X̃_d − W' X̃_p‖² + λ‖W' − W_0‖²  =  (W_d G_dp + λ W_0)(G_pp + λ I)⁻¹

with X̃ = [X; 1] (bias), G_dp = X̃_d X̃_pᵀ and G_pp = X̃_p X̃_pᵀ accumulated in float64 over calibration
batches, and W_0 the pruned layer's current weights (so a weak signal leaves them as they are).
λ = ridge · mean(diag G_pp). With λ → 0 one layer is exactly numpy's least squares. A layer whose output
only feeds a residual Add (y = W x + s) keeps the block output instead: the target is W_d X̃_d + Δ with
Δ = s_d − s_p the drift of the Add's other operand, which would otherwise flow on down the skip path.

Error correction generalizes only as far as the calibration data is diverse: with few distinct inputs it
learns input-specific corrections. So each layer also has a *local* candidate, fit on the dense model's
inputs restricted to the kept channels (X_k: it only compensates the removed channels, as OBS does),

    W' = (W_d G_dk + λ W_0)(G_kk + λ I)⁻¹,

and the fit (correcting or local; see ``CANDIDATES``) is chosen per layer by two-fold validation
across two halves of the calibration rows, on the error that matters at inference,
‖W_d X̃_d − W' X̃_p‖² on the held-out half. The halves must not share a source (``validation_halves``):
with several crops of one photo on both sides, validation rewards the fit that memorized the photo.

A layer whose output only a clamp reads (ReLU, ReLU6) needs its outputs right only where the clamp passes
them: ``rectified_refit`` then refines the chosen fit toward the outputs the clamp maps like the dense ones
(alternating projections; the Gram matrix stays the one accumulated above, one pass per step).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper
from onnxprune.calibration.collect import downstream
from onnxprune.passes.staged import GramSums, StagedWalk, partner_drift, partner_rows, ridge_lambda

from onnxprune.graph import initializers
from onnxprune.layers import LinearLayer, initializer_dict, linear_layers, rectified_outputs
from onnxprune.sparsity import output_mismatch


def solve_refit(
    w_dense: np.ndarray,
    g_dp: np.ndarray,
    g_pp: np.ndarray,
    w0: np.ndarray,
    ridge: float,
    rows: int | None = None,
    shrink: float = 1.0,
    skip_cross: np.ndarray | None = None,
) -> np.ndarray:
    """(W_d G_dp + E + λ W_0)(G_pp + λ I)⁻¹ for one block (rows = outputs).

    λ = (ridge + shrink·features/rows)·mean(diag G_pp): the fewer calibration rows per feature, the harder
    the refit is pulled toward W_0 — a classifier fed 256 pooled vectors of 1280 features would otherwise
    memorize its calibration set instead of generalizing. E = Δ X̃_pᵀ (``skip_cross``, 0 without): the drift
    Δ of the residual partner the layer's output is added to (``layers.residual_partners``), so the fit keeps
    the block output W_d X̃_d + Δ − W' X̃_p.
    """
    lam = ridge_lambda(g_pp, ridge, shrink, g_pp.shape[0], rows)
    a = g_pp + lam * np.eye(g_pp.shape[0])
    rhs = w_dense @ g_dp + lam * w0
    if skip_cross is not None:
        rhs = rhs + skip_cross
    return np.linalg.solve(a, rhs.T).T


def fold_channels(
    w_dense: np.ndarray,
    g_kk: np.ndarray,
    g_dk: np.ndarray,
    kept: np.ndarray,
    gone: np.ndarray,
    block: int,
    bias: bool,
) -> np.ndarray:
    """The removed input channels folded into the kept ones with one coefficient per pair, the same at every
    position: channel r ≈ Σ_c a_rc·channel c over the dense inputs (a least-squares fit on the channel Gram
    matrices Gc_cc' = Σ_t G[c·b + t, c'·b + t], b = ``block`` features per channel), then

        W'_{:, c·b+t} = W_d_{:, k_c·b+t} + Σ_r a_rc·W_d_{:, r·b+t},   bias unchanged.

    Exact for a channel that is a combination of kept ones (dead, a scaled duplicate), and determined by the
    data even where the layer has more features than calibration rows (a Flatten → Gemm). ``g_kk`` / ``g_dk``:
    the local fit's Gram matrices (kept features of the dense inputs, all dense × kept features)."""
    n = len(kept)
    t = np.arange(block)
    kk = g_kk[: n * block, : n * block].reshape(n, block, n, block)[:, t, :, t].sum(0)  # [kept, kept]
    rows = (gone[:, None] * block + t).reshape(-1)
    rk = g_dk[rows][:, : n * block].reshape(len(gone), block, n, block)[:, t, :, t].sum(0)  # [gone, kept]
    lam = 1e-9 * max(float(np.mean(np.diag(kk))), 1e-30)
    a = np.linalg.solve(kk + lam * np.eye(n), rk.T)  # [kept, gone]: channel r ≈ Σ_c a[c, r]·channel c
    w = np.asarray(w_dense, np.float64)
    cols = (kept[:, None] * block + t).reshape(-1)
    removed = w[:, rows].reshape(len(w), len(gone), block)
    folded = w[:, cols].reshape(len(w), n, block) + np.einsum("cr,orb->ocb", a, removed)
    out = folded.reshape(len(w), n * block)
    return np.concatenate([out, w[:, -1:]], axis=1) if bias else out


# Alternating-projection steps of ``rectified_refit`` for layers read by a clamp (ReLU, ReLU6).
RECTIFY_STEPS = 2
# Rows a step's correction reads at most (every k-th of a layer's rows, scaled to all).
RECTIFY_ROWS = 1 << 19

# (fit, shrink multiplier, ridge multiplier) tried per layer; "local" fits on dense inputs of the kept
# channels. The unregularized fits (shrink 0, ridge ~0) are there for layers the calibration data determine
# exactly: a removed channel that was a combination of kept ones is folded back without the ridge's pull
# toward the sliced weights.
CANDIDATES = (("correcting", 1.0, 1.0), ("local", 1.0, 1.0), ("correcting", 0.0, 1e-6), ("local", 0.0, 1e-6))
# Offered to layers whose validation halves hold fewer rows than features (``_Fit.fold_layout``).
FOLD = ("fold", 0.0, 0.0)
TIE = 1e-6  # relative difference of two candidates' validation errors below which they tie


class _Fit:
    """Accumulators for one layer (per block), kept separately for the two calibration halves."""

    def __init__(
        self,
        dense: LinearLayer,
        pruned: LinearLayer,
        dense_blocks: np.ndarray,
        bias: bool,
        kept_in: np.ndarray | None,
        kept_out: np.ndarray | None = None,
        outputs: int = 0,
        in_unit: int | None = None,
    ):
        self.dense, self.pruned, self.blocks, self.bias = dense, pruned, dense_blocks, bias
        self.kept_in, self.kept_out, self.outputs = kept_in, kept_out, outputs
        self.in_unit = in_unit  # input positions per channel (a Flatten's H·W), for the channel fold
        self.halves = (GramSums(), GramSums())
        self.local = True  # the local candidate exists (dense inputs map onto the pruned layer's inputs)

    def add(
        self,
        x_dense: np.ndarray,
        x_pruned: np.ndarray,
        half: int,
        partner: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> bool:
        """Fold one batch into its half: float32 products through BLAS, summed into float64. ``partner``: the
        residual partner (dense, pruned) of the batch; returns whether its drift was taken
        (``partner_drift``)."""
        fd, fp, fk = self.rows(x_dense, x_pruned)
        drift = (
            partner_drift(self.dense, *partner, (fp.shape[1], self.outputs), self.kept_out)
            if partner
            else None
        )
        self.halves[half].add(fd, fp, fk, self.bias, self.pruned.rows_per_sample(x_pruned), drift)
        return drift is not None

    def rows(
        self, x_dense: np.ndarray, x_pruned: np.ndarray, only: str | None = None
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Feature rows [blocks, rows, features] of one batch: dense (the layer's blocks kept), pruned, and
        the
        dense inputs of the kept channels (the local candidate's; None where it does not exist). ``only``:
        "correcting" or "local" leaves out the other fit's rows (None)."""
        if x_dense.dtype == np.float16:  # a float16 model: numpy's float16 matmul has no BLAS (100x slower)
            x_dense, x_pruned = x_dense.astype(np.float32), x_pruned.astype(np.float32)
        fd = self.dense.features(x_dense)[self.blocks]
        fp = self.pruned.features(x_pruned) if only != "local" else None
        fk = None
        if self.local and only != "correcting":
            axis = (
                1
                if self.dense.op == "Conv" or x_dense.ndim > 2 and self.dense.pooled_from
                else (-2 if self.dense.weight_is_a else -1)
            )
            xk = x_dense if self.kept_in is None else np.take(x_dense, self.kept_in, axis=axis)
            self.local = xk.shape == x_pruned.shape
            fk = self.pruned.features(xk) if self.local else None
        return fd, fp, fk

    def choose(self, wd: list[np.ndarray], w0: list[np.ndarray], ridge: float) -> tuple[str, float, float]:
        """The candidate with the least two-fold held-out error ‖W_d X̃_d + Δ − W' X̃_p‖²
        (``output_mismatch``,
        Δ the residual partner's drift where there is one; summed over blocks)."""
        if not all(h.rows for h in self.halves):
            return CANDIDATES[0]
        errors = {}
        for cand in CANDIDATES + ((FOLD,) if self.fold_layout() is not None else ()):
            if cand[0] in ("local", "fold") and not self.local:
                continue
            err = 0.0
            for fit, val in ((0, 1), (1, 0)):
                for b in range(len(wd)):
                    w = self.solve(self.halves[fit], b, wd[b], w0[b], ridge, cand)
                    v = self.halves[val]
                    err += output_mismatch(
                        wd[b], w, v.dp[b], v.pp[b], skip_cross=v.ep[b] if v.ep is not None else None
                    )
            errors[cand] = err
        # errors are ‖·‖² less a large constant, from Gram matrices of float32 products: candidates within
        # TIE of the best are equally good, and the least regularized of them is the least-squares fit (a
        # ridge that only ties was not needed; exactly redundant channels are then folded back exactly)
        best = min(errors.values())
        ties = [c for c, e in errors.items() if e <= best + TIE * abs(best)]
        return min(ties, key=lambda c: (c[1], c[2], errors[c]))

    def fold_layout(self) -> tuple[np.ndarray, np.ndarray, int] | None:
        """(kept dense channels, removed ones, features per channel) for the channel fold: offered where the
        layer has one block, lost whole input channels, and too few rows in a validation half to determine a
        least-squares fit on its features (then the fold's one coefficient per kept and removed channel pair
        is what the data can still tell)."""
        if (
            self.kept_in is None
            or not self.in_unit
            or len(self.blocks) != 1
            or self.dense.groups != 1
            or any(h.kk is None for h in self.halves)
            or min(h.rows for h in self.halves) >= self.halves[0].kk.shape[-1]
        ):
            return None
        taps = int(np.prod(self.dense.kernel)) if self.dense.op == "Conv" else 1
        unit = self.in_unit
        features = self.halves[0].dk.shape[1] - int(self.bias)
        if features % (unit * taps) or len(self.kept_in) % unit:
            return None
        kept = np.unique(np.asarray(self.kept_in) // unit)
        # the kept features' Gram matrices follow kept_in's order: whole channels, ascending
        if not np.array_equal(self.kept_in, (kept[:, None] * unit + np.arange(unit)).reshape(-1)):
            return None
        gone = np.setdiff1d(np.arange(features // (unit * taps)), kept)
        return (kept, gone, unit * taps) if gone.size else None

    def solve(
        self,
        sums: GramSums,
        b: int,
        wd: np.ndarray,
        w0: np.ndarray,
        ridge: float,
        cand: tuple[str, float, float],
    ):
        mode, shrink, ridge = cand[0], cand[1], ridge * cand[2]
        if mode == "fold":
            return fold_channels(wd, sums.kk[b], sums.dk[b], *self.fold_layout(), self.bias)
        if mode == "local":  # fit on dense inputs: the partner's drift (seen on pruned ones) does not apply
            return solve_refit(wd, sums.dk[b], sums.kk[b], w0, ridge, sums.samples, shrink)
        skip = sums.ep[b] if sums.ep is not None else None
        return solve_refit(wd, sums.dp[b], sums.pp[b], w0, ridge, sums.samples, shrink, skip)


@dataclass
class RefitInputs:
    """What the refit knows of the pruning: per layer the dense output / input positions it kept along its
    channel axis (``kept_out`` / ``kept_in``; absent: all kept), the input positions one channel spans
    (``in_units``: a Flatten's H·W, for the channel fold), the source of each calibration row (``groups``)."""

    kept_out: Mapping[str, np.ndarray]
    kept_in: Mapping[str, np.ndarray] = field(default_factory=dict)
    in_units: Mapping[str, int] = field(default_factory=dict)
    groups: np.ndarray | None = None


def reconstruct(
    dense: onnx.ModelProto,
    pruned: onnx.ModelProto,
    changed_nodes: set[str],
    batches: Callable[[], Iterable[Mapping[str, np.ndarray]]],
    inputs: RefitInputs,
    ridge: float = 1e-3,
    progress: Callable[[str, int, int], None] | None = None,
    chunk: int = 8,
) -> dict[str, str]:
    """Refit (in place) every linear layer of ``pruned`` whose input differs from the dense model's
    (``changed_nodes``: the nodes pruning edited). Returns, in order, each refitted layer with the fit
    validation chose for it (e.g. ``"local, shrink 0"``; ``", residual block output"`` is added where the
    correcting fit kept a residual block's output, see ``solve_refit``).
    """
    d_layers, p_layers = linear_layers(dense), linear_layers(pruned)
    _, changed = downstream(pruned, changed_nodes)  # tensors whose values differ between the two models
    # Depthwise convs pass channels through: the pointwise layer after them absorbs their drift, and
    # their per-channel im2col statistics would cost more than the rest of the refit together.
    todo = {
        n
        for n, lay in p_layers.items()
        if lay.input in changed and n in d_layers and not d_layers[n].depthwise
    }
    walk = StagedWalk(dense, pruned, p_layers, todo, list(batches()), inputs.groups, chunk, d_layers)
    policy = _Refit(walk, d_layers, inputs, ridge)
    walk.run(policy, progress)
    return policy.done


class _Refit:
    """The least-squares refit as a ``StagePolicy``: a ``_Fit`` per layer, chosen by validation, written."""

    def __init__(
        self, walk: StagedWalk, d_layers: Mapping[str, LinearLayer], inputs: RefitInputs, ridge: float
    ):
        self.walk, self.d_layers, self.inputs, self.ridge = walk, d_layers, inputs, ridge
        self.d_inits = initializer_dict(walk.dense)
        self.clamps = (
            rectified_outputs(walk.edited, {n: walk.layers[n] for n in walk.todo}) if RECTIFY_STEPS else {}
        )
        self.done: dict[str, str] = {}
        self.fits: dict[str, _Fit] = {}
        self.p_inits: dict[str, np.ndarray] = {}

    def start(self, stage: list[str]) -> dict:
        self.p_inits = initializer_dict(self.walk.edited)
        self.fits = {}
        for name in stage:
            dl, pl = self.d_layers[name], self.walk.layers[name]
            kept_out = self.inputs.kept_out.get(name)
            out_kept = np.asarray(
                kept_out if kept_out is not None else np.arange(_out_channels(dl, self.d_inits))
            )
            if (
                dl.op == "Conv" and dl.groups > 1 and pl.groups != dl.groups
            ):  # depthwise: blocks follow channels
                blocks = out_kept
            else:
                blocks = np.arange(dl.groups)
            self.fits[name] = _Fit(
                dl,
                pl,
                blocks,
                bias=dl.op != "MatMul",
                kept_in=self.inputs.kept_in.get(name),
                kept_out=kept_out,
                outputs=_out_channels(pl, self.p_inits),
                in_unit=self.inputs.in_units.get(name),
            )
        return {name: fit.add for name, fit in self.fits.items()}

    def finish(self, stage: list[str], d_vals: list[dict], p_vals: list[dict]) -> None:
        partners, chunk = self.walk.partners, self.walk.chunk
        for name, fit in self.fits.items():
            rectify, clamp = None, self.clamps.get(name)
            # through a residual Add only where the fit keeps the block output (a settled, non-broadcast
            # partner)
            if clamp is not None and len(fit.blocks) == 1 and clamp[2] == partners.get(name):
                taps = (self.d_layers[name].tap, self.walk.layers[name].tap)
                rectify = (
                    clamp[:2],
                    lambda mode, fit=fit, t=taps, s=clamp[2]: _stage_rows(
                        fit, *t, d_vals, p_vals, chunk, mode, s
                    ),
                )
            mode, shrink, _ = _apply(
                self.walk.edited,
                fit,
                self.d_inits,
                self.p_inits,
                self.inputs.kept_out.get(name),
                self.ridge,
                rectify,
            )
            block = ", residual block output" if mode == "correcting" and name in partners else ""
            self.done[name] = f"{mode}, shrink {shrink:g}{block}"


def _stage_rows(
    fit: _Fit,
    d_tap: str,
    p_tap: str,
    d_vals: list[dict],
    p_vals: list[dict],
    chunk: int,
    mode: str,
    partner: str | None = None,
) -> Iterator[tuple[np.ndarray, ...]]:
    """(dense feature rows, the fit's input rows: pruned, or the kept channels' dense ones for ``local``, and
    the residual partner's output rows each side adds before the clamp, or None) of one ungrouped layer over a
    stage's batches, in chunks of ``chunk`` samples. The local fit takes the dense inputs for the pruned ones,
    so its side adds the dense partner as well."""
    for xd, xp in zip(d_vals, p_vals, strict=True):
        for lo in range(0, len(xd[d_tap]), chunk):
            fd, fp, fk = fit.rows(xd[d_tap][lo : lo + chunk], xp[p_tap][lo : lo + chunk], only=mode)
            s_dense = s_fit = None
            if partner is not None:
                s_dense, s_fit = partner_rows(
                    fit.dense, xd[partner][lo : lo + chunk], xp[partner][lo : lo + chunk], fit.kept_out
                )
                if mode == "local":
                    s_fit = s_dense
            yield fd[0], (fk if mode == "local" else fp)[0], s_dense, s_fit


def rectified_target(y_dense: np.ndarray, y_fit: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The nearest output to ``y_fit`` that a clamp to [lo, hi] maps where the dense output goes: y_d inside
    the
    range; below it any value ≤ lo does (min(ŷ, lo)), above it any value ≥ hi (max(ŷ, hi))."""
    # clip(y_d) + [y_d < lo]·(min(ŷ, lo) − lo) + [y_d > hi]·(max(ŷ, hi) − hi): arithmetic only, twice as fast
    # as np.where over the millions of outputs of a high-resolution layer
    t = np.clip(y_dense, lo, hi)
    if lo > -np.inf:
        d = np.minimum(y_fit, lo)
        d -= lo
        d *= y_dense < lo
        t += d
    if hi < np.inf:
        d = np.maximum(y_fit, hi)
        d -= hi
        d *= y_dense > hi
        t += d
    return t


@dataclass
class RidgeProblem:
    """A layer's fit: W (rows = outputs, bias last when ``bias``) reproducing the dense weights W_d, with the
    fit's Gram matrix G = X̃ X̃ᵀ, the prior W_0 and the ridge λ."""

    w_dense: np.ndarray
    w0: np.ndarray
    g: np.ndarray
    lam: float
    bias: bool


def rectified_refit(
    w: np.ndarray,
    problem: RidgeProblem,
    bounds: tuple[float, float],
    rows: Callable[[], Iterable[tuple[np.ndarray, ...]]],
    steps: int | None = None,
    stride: int = 1,
) -> np.ndarray:
    """Refine a layer's fit W (rows = outputs, bias last when ``bias``) for the clamp y ↦ min(max(y, lo), hi)
    that reads its output: minimize dist(W X̃, S)² + λ‖W − W_0‖², S the outputs the clamp maps onto the dense
    ones (``rectified_target``), by alternating projections from the least-squares fit:

        T ← P_S(W X̃),   W ← (T X̃ᵀ + λ W_0)(G + λ I)⁻¹,   G = X̃ X̃ᵀ (the fit's own Gram matrix, unchanged),

    with T X̃ᵀ = W G + (T − W X̃) X̃ᵀ: only the correction term reads the rows, every ``stride``-th of them
    (scaled to all), so a high-resolution layer's millions of rows cost what a few hundred thousand do.
    Each step lowers that distance (exactly so with every row); the least-squares fit spends part of its
    weights reproducing how far below zero a ReLU's dead inputs lie, which nothing downstream reads.
    ``rows()`` yields (dense feature rows, the fit's input rows[, what each side adds before the clamp: a
    residual partner's rows, or None]) in chunks; one pass over them per step (``steps``: default
    ``RECTIFY_STEPS``).
    """
    lo, hi = bounds
    g, lam, w0, bias = problem.g, problem.lam, problem.w0, problem.bias
    a = g + lam * np.eye(g.shape[0])
    wd32 = np.asarray(problem.w_dense, np.float32)
    for _ in range(RECTIFY_STEPS if steps is None else steps):
        w32 = np.asarray(w, np.float32)
        correction = np.zeros_like(w, dtype=np.float64)
        seen = used = 0
        for fd, f, *added in rows():
            seen += len(f)
            fd, f = fd[::stride], f[::stride]
            used += len(f)
            y_dense = fd @ wd32[:, : fd.shape[1]].T
            y_fit = f @ w32[:, : f.shape[1]].T
            if bias:
                y_dense += wd32[:, -1]
                y_fit += w32[:, -1]
            if added and added[0] is not None:  # the clamp reads the block output W·x + s
                y_dense += added[0][::stride]
                y_fit += added[1][::stride]
            r = rectified_target(y_dense, y_fit, lo, hi)
            r -= y_fit
            correction[:, : f.shape[1]] += (r.T @ f).astype(np.float64)
            if bias:
                correction[:, -1] += r.sum(0, dtype=np.float64)
        cross = w @ g + correction * (seen / max(used, 1))
        w = np.linalg.solve(a, (cross + lam * w0).T).T
    return w


def _out_channels(layer: LinearLayer, inits: Mapping[str, np.ndarray]) -> int:
    m = layer.matrix(inits[layer.weight])
    return m.shape[0] * m.shape[1]


def _apply(
    model: onnx.ModelProto,
    fit: _Fit,
    d_inits,
    p_inits,
    kept: np.ndarray | None,
    ridge: float,
    rectify: tuple[tuple[float, float], Callable] | None = None,
) -> tuple[str, float, float]:
    """Choose the layer's fit by validation, solve it on all rows and write it into ``model``. ``rectify``:
    (the bounds of the clamp that reads the layer's output, mode → the layer's feature rows) to refine the fit
    for that clamp (``rectified_refit``)."""
    dl, pl = fit.dense, fit.pruned
    wd_all = dl.matrix(d_inits[dl.weight]).astype(np.float64)  # [blocks, out/b, f]
    n_out = wd_all.shape[0] * wd_all.shape[1]
    kept = np.arange(n_out) if kept is None else np.asarray(kept)
    bd = d_inits[dl.bias].reshape(-1).astype(np.float64) if dl.bias else np.zeros(n_out)
    bd = np.broadcast_to(bd, (n_out,)).reshape(wd_all.shape[0], wd_all.shape[1])
    w0_all = pl.matrix(p_inits[pl.weight]).astype(np.float64)
    b0 = (
        p_inits[pl.bias].reshape(-1).astype(np.float64)
        if pl.bias
        else np.zeros(w0_all.shape[0] * w0_all.shape[1])
    )
    b0 = np.broadcast_to(b0, (w0_all.shape[0] * w0_all.shape[1],)).reshape(w0_all.shape[:2])
    per_block_out = wd_all.shape[1]
    wds, w0s = [], []
    for b_new, b_dense in enumerate(fit.blocks):
        if dl.groups > 1 and pl.groups != dl.groups:  # depthwise: one output per block
            rows = np.array([0])
        else:
            rows = kept[(kept // per_block_out) == b_dense] % per_block_out
        wd = wd_all[b_dense][rows]
        if fit.bias:
            wds.append(np.concatenate([wd, bd[b_dense][rows][:, None]], axis=1))
            w0s.append(np.concatenate([w0_all[b_new], b0[b_new][:, None]], axis=1))
        else:
            wds.append(wd)
            w0s.append(w0_all[b_new])
    cand = fit.choose(wds, w0s, ridge)
    total = fit.halves[0] + fit.halves[1]
    new_w = np.empty_like(w0_all)
    new_b = np.empty(w0_all.shape[:2])
    for b in range(len(wds)):
        w = fit.solve(total, b, wds[b], w0s[b], ridge, cand)
        if rectify is not None and cand[0] != "fold":  # the fold is exact where it is chosen: keep it so
            g = (total.kk if cand[0] == "local" else total.pp)[b]
            lam = ridge_lambda(g, ridge * cand[2], cand[1], g.shape[0], total.samples)
            stride = max(1, -(-total.rows // RECTIFY_ROWS))
            w = rectified_refit(
                w,
                RidgeProblem(wds[b], w0s[b], g, lam, fit.bias),
                rectify[0],
                lambda: rectify[1](cand[0]),
                stride=stride,
            )
        new_w[b] = w[:, :-1] if fit.bias else w
        new_b[b] = w[:, -1] if fit.bias else b0[b]
    inits = initializers(model.graph)
    stored = p_inits[pl.weight]
    inits[pl.weight].CopyFrom(
        numpy_helper.from_array(pl.unmatrix(new_w, stored).astype(stored.dtype), pl.weight)
    )
    if fit.bias:
        flat = new_b.reshape(-1).astype(stored.dtype)
        if pl.bias:
            shape = p_inits[pl.bias].shape
            inits[pl.bias].CopyFrom(numpy_helper.from_array(flat.reshape(shape), pl.bias))
        else:  # the dense layer had no bias; the refit has one: give the node a bias input
            node = next(n for n in model.graph.node if n.name == pl.node)
            name = f"{pl.node}.bias_refit"
            model.graph.initializer.append(numpy_helper.from_array(flat, name))
            node.input.append(name)
    return cand


def compensate_locally(
    dense: onnx.ModelProto,
    pruned: onnx.ModelProto,
    hessians: Mapping[str, np.ndarray],
    rows: Mapping[str, int],
    kept_in: Mapping[str, np.ndarray],
    kept_out: Mapping[str, np.ndarray],
    ridge: float = 1e-3,
    shrink: float = 1.0,
) -> list[str]:
    """OBS compensation of every layer that lost input channels, from the dense Hessians alone (no ORT pass).

    For such a layer with kept input features K (conv: each kept channel's kernel taps) and dense Hessian H,
    the least-squares fit on the dense inputs of the kept channels (the *local* refit, which also is what
    OBS's update does when it removes the others) is

        W'_K = W_d H_{:,K} (H_KK + λI)⁻¹,   λ = (ridge + shrink·|K|/rows)·mean diag H_KK,

    written into ``pruned`` in place (bias untouched: a fit with an intercept, on the covariance, made the
    sensitivity curves built on this compensation worse on the zoo). Cheap enough to score many candidate
    plans with; the sequential ``reconstruct`` remains the real repair. Layers whose Hessian is missing,
    grouped convs and those whose inputs are all kept are left alone. Returns the compensated layers.
    """
    d_layers, p_layers = linear_layers(dense), linear_layers(pruned)
    d_inits, p_tensors = initializer_dict(dense), initializers(pruned.graph)
    done = []
    for name, kept in kept_in.items():
        dl, pl = d_layers.get(name), p_layers.get(name)
        if dl is None or pl is None or name not in hessians or dl.groups > 1:
            continue
        wd = dl.matrix(d_inits[dl.weight])[0].astype(np.float64)  # [out, features]
        channels = dl.in_per_group if dl.op == "Conv" else wd.shape[1]
        if len(kept) >= channels:
            continue
        taps = wd.shape[1] // channels
        cols = (np.asarray(kept)[:, None] * taps + np.arange(taps)).reshape(-1)
        if name in kept_out:
            wd = wd[np.asarray(kept_out[name])]
        h = np.asarray(hessians[name][0], np.float64)
        h_kk = h[np.ix_(cols, cols)]
        lam = (ridge + shrink * len(cols) / max(rows.get(name, 1), 1)) * max(
            float(np.mean(np.diag(h_kk))), 1e-12
        )
        new = np.linalg.solve(h_kk + lam * np.eye(len(cols)), (wd @ h[:, cols]).T).T
        stored = numpy_helper.to_array(p_tensors[pl.weight])
        if pl.matrix(stored).shape != (1, *new.shape):
            continue
        p_tensors[pl.weight].CopyFrom(
            numpy_helper.from_array(pl.unmatrix(new[None], stored).astype(stored.dtype), pl.weight)
        )
        done.append(name)
    return done
