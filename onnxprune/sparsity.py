"""N:M semi-structured and unstructured weight sparsity: SparseGPT, its OBS reference, magnitude baselines.

A layer is a weight matrix W [rows = outputs, columns = features] and the Hessian of its squared output
error, H = (2/n)·Σ x xᵀ over calibration feature rows x. Zeroing a set of weights and re-adjusting the
others to keep W·x close is Optimal Brain Surgeon (OBS): removing weight w_q of one row costs

    ε_q = w_q² / [H⁻¹]_qq                     and is compensated by   δw = −(w_q / [H⁻¹]_qq)·H⁻¹_{:,q}.

SparseGPT (Frantar & Alistarh 2023) visits the columns left to right and, once column j is done, never
touches it again, so every row shares the same sequence of inverse Hessians H_{F_j}⁻¹ (F_j = columns
j … d−1 still free). With the upper Cholesky factor H⁻¹ = UᵀU, row j of U is that inverse's row j
scaled: [H_{F_j}⁻¹]_{j,j:} = U_jj·U_{j,j:}, so the OBS update of column j is

    e = (w_j − q_j) / U_jj,     W_{:,j:} ← W_{:,j:} − e·U_{j,j:}

(q_j: w_j with its pruned entries zeroed) and the OBS cost of pruning w_rj is w_rj² / U_jj². Columns are
processed in blocks of 128: inside a block updates are applied at once, to later blocks lazily as
one matrix product Err·U_{block, later} (same result, BLAS-friendly).

Masks: N:M — before each group of M consecutive columns is processed, the N entries of each row with
the lowest w²/U_jj² in that group are pruned (``n`` = zeros per group, as in NVIDIA's 2:4, which keeps
2 of every 4); unstructured — before each block, the lowest ``sparsity`` fraction of w²/U_jj² over the
whole block (all rows) is pruned.

Layout (TensorRT's sparse Tensor Cores): a Conv weight [K, C, R, S] has its M-groups over M consecutive
input channels C at each (k, r, s) tap; Gemm/MatMul over the reduction dimension. The im2col feature
order of ``LinearLayer`` is (c, r, s); ``tap_major_order`` permutes it to (r, s, c) so that consecutive
columns are consecutive channels at one tap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import scipy.linalg
from onnx import numpy_helper

from onnxprune.errors import InputError
from onnxprune.graph import attrs
from onnxprune.layers import LinearLayer

from .graph import initializers, producers

MIN_WEIGHTS = 1024  # smaller layers are skipped: negligible memory and compute, sparse kernels do not pay off


# ---- patterns ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pattern:
    """Either N:M (``n`` zeros in every ``m`` consecutive reduction-dimension weights) or unstructured."""

    n: int = 0
    m: int = 0
    sparsity: float | None = None  # unstructured: fraction of zeros per layer

    @property
    def semi_structured(self) -> bool:
        return self.sparsity is None

    def __str__(self) -> str:
        return f"{self.n}:{self.m}" if self.semi_structured else f"{self.sparsity:g}"


def parse_pattern(spec: str | float) -> Pattern:
    """ "2:4" → 2 zeros in every 4; "0.5" or 0.5 → 50 % unstructured. Raises ValueError otherwise."""
    text = str(spec).strip()
    if ":" in text:
        n_text, m_text = text.split(":", 1)
        n, m = int(n_text), int(m_text)
        if not 0 < n < m:
            raise ValueError(f"sparsity pattern {text!r}: need 0 < N < M in N:M")
        return Pattern(n=n, m=m)
    fraction = float(text)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"sparsity {text!r}: an unstructured fraction must lie strictly between 0 and 1")
    return Pattern(sparsity=fraction)


def sparsity_option(spec: str | None) -> Pattern | None:
    """The ``--sparsity`` option: None stays None, a bad spec is an InputError (exit 2) naming it."""
    if spec is None:
        return None
    try:
        return parse_pattern(spec)
    except ValueError as exc:
        raise InputError(f"bad --sparsity '{spec}': {exc}") from None


# ---- mask rules (shared by SparseGPT, the OBS reference and magnitude) -------------------------


def nm_mask(scores: np.ndarray, n: int, m: int) -> np.ndarray:
    """Pruned entries (True) of [rows, k·M] scores: in every M consecutive columns of a row, the N lowest."""
    rows, cols = scores.shape
    groups = scores.reshape(rows, cols // m, m)
    order = np.argsort(groups, axis=-1, kind="stable")
    mask = np.zeros(groups.shape, dtype=bool)
    np.put_along_axis(mask, order[..., :n], True, axis=-1)
    return mask.reshape(rows, cols)


def lowest_fraction_mask(scores: np.ndarray, sparsity: float) -> np.ndarray:
    """Pruned entries (True): the ⌈sparsity·size⌉ lowest scores of the whole array (ties: first in order)."""
    count = int(np.ceil(sparsity * scores.size - 1e-9))
    mask = np.zeros(scores.size, dtype=bool)
    mask[np.argsort(scores, axis=None, kind="stable")[:count]] = True
    return mask.reshape(scores.shape)


def obs_scores(w: np.ndarray, inv_diag: np.ndarray, dead: np.ndarray) -> np.ndarray:
    """OBS cost of zeroing each entry: w² / [H_F⁻¹]_jj; 0 for dead features (input always 0: free to
    prune)."""
    return np.where(dead[None, :], 0.0, w**2 / inv_diag[None, :])


# ---- Hessian preparation -------------------------------------------------------------------------


def dampen(h: np.ndarray, percdamp: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """H + λI with λ = percdamp·mean(diag H over live features); dead features (H_jj = 0) get H_jj = 1.

    Returns (damped H, dead mask). A dead feature is 0 on every calibration row, so its weights never
    reach the output there: a unit diagonal keeps H invertible without coupling it to anything.
    """
    h = np.array(h, dtype=np.float64)
    diag = np.diag(h).copy()
    dead = diag <= 0
    live_mean = float(diag[~dead].mean()) if (~dead).any() else 1.0
    diag[dead] = 1.0
    h[np.diag_indices_from(h)] = diag + percdamp * live_mean
    return h, dead


def inverse_upper_cholesky(h_damped: np.ndarray) -> np.ndarray:
    """U upper-triangular with H⁻¹ = UᵀU (U = Lᵀ for the lower Cholesky factor L of H⁻¹)."""
    lower = np.linalg.cholesky(h_damped)
    eye = np.eye(len(h_damped))
    h_inv = np.linalg.solve(lower.T, np.linalg.solve(lower, eye))
    return np.linalg.cholesky((h_inv + h_inv.T) / 2).T


# ---- SparseGPT -----------------------------------------------------------------------------------


def sparsegpt_prune(
    w: np.ndarray,
    h: np.ndarray,
    *,
    n: int = 2,
    m: int = 4,
    sparsity: float | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> tuple[np.ndarray, np.ndarray]:
    """SparseGPT on W [rows, columns] with input Hessian H [columns, columns] → (sparse W, pruned mask).

    ``sparsity`` None: N:M (``n`` zeros per ``m`` consecutive columns; columns % m == 0 and blocksize % m
    == 0 required); else unstructured with that fraction of zeros per block of ``blocksize`` columns.
    Computed in float64; pruned entries are exactly 0.
    """
    semi = sparsity is None
    rows, cols = w.shape
    if semi and (cols % m or blocksize % m):
        raise ValueError(f"N:M needs columns ({cols}) and blocksize ({blocksize}) to be multiples of M={m}")
    h_damped, dead = dampen(h, percdamp)
    u = inverse_upper_cholesky(h_damped)
    u_diag = np.diag(u)
    w = np.array(w, dtype=np.float64)
    mask = np.zeros(w.shape, dtype=bool)
    for start in range(0, cols, blocksize):
        stop = min(start + blocksize, cols)
        block = w[:, start:stop].copy()
        u_block = u[start:stop, start:stop]
        errors = np.zeros_like(block)
        block_mask = mask[:, start:stop]  # a view: choices land in ``mask``
        if not semi:
            block_mask[:] = lowest_fraction_mask(
                obs_scores(block, u_diag[start:stop] ** 2, dead[start:stop]), sparsity
            )
        for j in range(stop - start):
            if semi and j % m == 0:
                cols_g = slice(j, j + m)
                scores = obs_scores(
                    block[:, cols_g], u_diag[start:stop][cols_g] ** 2, dead[start:stop][cols_g]
                )
                block_mask[:, cols_g] = nm_mask(scores, n, m)
            pruned = block_mask[:, j]
            err = np.where(pruned, block[:, j], 0.0) / u_block[j, j]
            block[:, j:] -= np.outer(err, u_block[j, j:])
            block[pruned, j] = 0.0
            errors[:, j] = err
        w[:, start:stop] = block
        w[:, stop:] -= errors @ u[start:stop, stop:]  # lazy update of every later block at once
    return w, mask


def obs_reference_prune(
    w: np.ndarray, h: np.ndarray, pattern: Pattern, blocksize: int = 128, percdamp: float = 0.01
) -> tuple[np.ndarray, np.ndarray]:
    """The same pruning done directly (slow, for tests): explicit H⁻¹, one OBS step per column, downdates.

    For column q = 0 … d−1 with the current inverse G (= H_{F_q}⁻¹ after the downdates so far), every
    row r pruned at q gets w_r ← w_r − (w_rq / G_qq)·G_{q,:}; then q leaves the free set:
    G ← G − G_{:,q} G_{q,:} / G_qq. Mask scores use [H_{F_j}⁻¹]_jj = (H[j:, j:])⁻¹_00, inverted directly.
    """
    n, m, sparsity = pattern.n, pattern.m, pattern.sparsity
    semi = sparsity is None
    h_damped, dead = dampen(h, percdamp)
    g = np.linalg.inv(h_damped)
    w = np.array(w, dtype=np.float64)
    rows, cols = w.shape
    mask = np.zeros(w.shape, dtype=bool)
    window = m if semi else blocksize
    for q in range(cols):
        if q % window == 0:
            span = range(q, min(q + window, cols))
            inv_diag = np.array([np.linalg.inv(h_damped[j:, j:])[0, 0] for j in span])
            scores = obs_scores(w[:, q : q + len(span)], inv_diag, dead[q : q + len(span)])
            mask[:, q : q + len(span)] = (
                nm_mask(scores, n, m) if semi else lowest_fraction_mask(scores, sparsity)
            )
        for r in np.flatnonzero(mask[:, q]):
            w[r] -= (w[r, q] / g[q, q]) * g[q]
            w[r, q] = 0.0
        g = g - np.outer(g[:, q], g[q]) / g[q, q]
    return w, mask


# ---- magnitude baselines -------------------------------------------------------------------------


def magnitude_nm(w: np.ndarray, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero the N smallest |w| in every M consecutive columns of each row (no compensation)."""
    mask = nm_mask(np.abs(w), n, m)
    return np.where(mask, 0.0, w).astype(w.dtype), mask


def magnitude_unstructured(w: np.ndarray, sparsity: float) -> tuple[np.ndarray, np.ndarray]:
    """Zero the ⌈sparsity·size⌉ smallest |w| of the whole matrix (no compensation)."""
    mask = lowest_fraction_mask(np.abs(w), sparsity)
    return np.where(mask, 0.0, w).astype(w.dtype), mask


def relative_output_error(w: np.ndarray, w_new: np.ndarray, h: np.ndarray) -> float:
    """‖(W − W')X‖ / ‖WX‖ over the calibration rows, from H ∝ XXᵀ: √(Σ tr(ΔW H ΔWᵀ) / Σ tr(W H Wᵀ)).

    Also for stacks of conv groups: W [groups, rows, features] with H [groups, features, features].
    """
    w = np.asarray(w, np.float64)
    delta = np.asarray(w_new, np.float64) - w
    num = float(np.sum((delta @ h) * delta))
    den = float(np.sum((w @ h) * w))
    return float(np.sqrt(max(num, 0.0) / den)) if den > 0 else 0.0


# ---- layout ----------------------------------------------------------------------------------


def tap_major_order(channels: int, taps: int) -> np.ndarray:
    """Permutation of im2col columns c·T + t (channel-major) into t·C + c (tap-major): new[i] = old[order[i]].

    With W_tap = W[:, order], consecutive columns are consecutive input channels at one kernel tap, so
    N:M groups of W_tap fall on M channels at a fixed (r, s), as TensorRT lays sparse conv weights out.
    """
    return np.arange(channels * taps).reshape(channels, taps).T.reshape(-1)


def layer_columns_order(layer: LinearLayer, in_per_group: int, features: int) -> np.ndarray:
    """Column permutation of ``layer.matrix(w)`` putting reduction-dimension neighbours side by side."""
    if layer.op == "Conv":
        return tap_major_order(in_per_group, features // in_per_group)
    return np.arange(features)


def reduction_axis(layer: LinearLayer) -> int:
    """Axis of the *stored* weight along which N:M groups run (input channels / reduction dimension)."""
    if layer.op == "Conv":
        return 1  # [K, C/g, R, S]
    if layer.op == "Gemm":
        return 1 if layer.trans_b else 0  # [N, K] or [K, N]
    return 1 if layer.weight_is_a else 0  # MatMul A [M, K] or B [K, N]


@dataclass
class StoredWeight:
    """A Conv/Gemm/MatMul node's constant weight as stored, with the axis N:M groups run along."""

    node: str  # the node's name, or the name TensorRT's ONNX parser gives an unnamed node
    op: str
    weight: str  # the initializer holding it (behind any QuantizeLinear/DequantizeLinear)
    array: np.ndarray
    axis: int


def stored_weights(model: onnx.ModelProto) -> list[StoredWeight]:
    """Every Conv, Gemm (no transA) and MatMul with a constant weight, in graph order. The weight may arrive
    through QuantizeLinear/DequantizeLinear (an INT8 QDQ model): symmetric quantization keeps zeros zero, so
    the stored integers hold the float weights' N:M pattern."""
    inits = initializers(model.graph)
    writer = producers(model.graph)

    def behind_qdq(name: str) -> str | None:
        while name not in inits:
            node = writer.get(name)
            if node is None or node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
                return None
            name = node.input[0]
        return name

    out = []
    for node in model.graph.node:
        node_attributes = attrs(node)
        candidates = []  # (weight input, axis of the reduction dimension in the stored weight)
        if node.op_type == "Conv":
            candidates = [(node.input[1], 1)]  # [K, C/g, R, S]
        elif node.op_type == "Gemm" and not node_attributes.get("transA", 0):
            candidates = [(node.input[1], 1 if node_attributes.get("transB", 0) else 0)]  # [N, K] or [K, N]
        elif node.op_type == "MatMul":
            candidates = [(node.input[1], -2), (node.input[0], -1)]  # B [.., K, N], else A [.., M, K]
        for tensor, axis in candidates:
            name = behind_qdq(tensor)
            if name is not None:
                w = numpy_helper.to_array(inits[name])
                if w.ndim >= 2:
                    out.append(
                        StoredWeight(
                            node.name or f"node_of_{node.output[0]}", node.op_type, name, w, axis % w.ndim
                        )
                    )
                break
    return out


def ineligible_reason(layer: LinearLayer, shape: tuple[int, ...], pattern: Pattern) -> str | None:
    """Why a layer is left dense under ``pattern`` (None: eligible). Reduction size is per conv group."""
    size = int(np.prod(shape))
    if layer.depthwise:
        return "depthwise conv (one input channel per group)"
    if size < MIN_WEIGHTS:
        return f"tiny layer ({size} weights < {MIN_WEIGHTS})"
    reduction = shape[reduction_axis(layer)]
    if pattern.semi_structured and reduction % pattern.m:
        what = (
            "input channels per group"
            if layer.op == "Conv" and layer.groups > 1
            else "input channels"
            if layer.op == "Conv"
            else "reduction dimension"
        )
        return f"{what} = {reduction} is not a multiple of M={pattern.m}"
    return None


def check_pattern(w: np.ndarray, reduction: int, n: int, m: int) -> dict:
    """Does ``w`` have ≥ n zeros in every m consecutive entries along axis ``reduction``? (like polygraphy)

    Returns {"compliant", "groups", "violating_groups", "sparsity"}; a reduction size that is not a
    multiple of m is never compliant (groups 0).
    """
    w = np.asarray(w)
    sparsity = float(np.mean(w == 0)) if w.size else 0.0
    size = w.shape[reduction]
    if size % m:
        return {"compliant": False, "groups": 0, "violating_groups": 0, "sparsity": sparsity}
    zeros = (np.moveaxis(w, reduction, -1) == 0).reshape(-1, size // m, m).sum(-1)
    bad = int(np.sum(zeros < n))
    return {"compliant": bad == 0, "groups": int(zeros.size), "violating_groups": bad, "sparsity": sparsity}


# ---- error correction: prune toward the dense model's outputs ------------------------------------
#
# In a sequentially sparsified network a layer sees X_s (inputs from the already sparsified model), not
# the dense model's X_d. Plain SparseGPT minimizes ‖W·X_s − Ŵ·X_s‖²: it keeps the layer faithful to its
# *drifted* input and passes the drift on. What the next layers need is ‖W·X_d − Ŵ·X_s‖². With
# H_s = X_s X_sᵀ and C = X_d X_sᵀ (sums over calibration rows; feature rows as columns of X),
#
#     ‖W X_d − Ŵ X_s‖² = tr(W H_d Wᵀ) − 2 tr(W C Ŵᵀ) + tr(Ŵ H_s Ŵᵀ)
#                      = ‖W* X_s − Ŵ X_s‖² + const,     W* = W C H_s⁻¹,
#
# since W C = W* H_s; const = tr(W H_d Wᵀ) − tr(W* H_s W*ᵀ) does not depend on Ŵ. So the error-correcting
# prune is SparseGPT (same H_s) on the target W*, the unconstrained least-squares refit of the layer.


def corrected_target(
    w: np.ndarray, cross: np.ndarray, h: np.ndarray, lam: float = 0.0, skip_cross: np.ndarray | None = None
) -> np.ndarray:
    """The target W* that SparseGPT must approach on X_s so that Ŵ·X_s reproduces W·X_d (W [rows, features]).

    W* = W + (W·C − W·H_s + E)(H_s + λI)⁻¹  with C = Σ x_d x_sᵀ (``cross``) and H_s = Σ x_s x_sᵀ (``h``).
    λ = 0 is the exact refit W·C·H_s⁻¹; λ > 0 shrinks it toward W (ridge: argmin ‖W X_d − W' X_s‖² +
    λ‖W' − W‖², the form ``passes.reconstruct.solve_refit`` takes with W_0 = W). With X_s = X_d (C = H_s)
    W* = W exactly, for every λ. ``skip_cross`` E = Σ δ x_sᵀ, δ = s_d − s_s the drift of the residual
    partner s the output is added to (``layers.residual_partners``): the fit then keeps W·x + s, the block
    output, argmin ‖W X_d + Δ − W' X_s‖² + λ‖W' − W‖² (E = 0 without one).
    """
    w = np.asarray(w, np.float64)
    h = np.asarray(h, np.float64)
    a = h + lam * np.eye(len(h)) if lam else h
    rhs = w @ (np.asarray(cross, np.float64) - h)
    if skip_cross is not None:
        rhs = rhs + skip_cross
    return w + np.linalg.solve(a, rhs.T).T


def masked_refit(
    w: np.ndarray,
    cross: np.ndarray,
    h: np.ndarray,
    keep: np.ndarray,
    lam: float,
    skip_cross: np.ndarray | None = None,
) -> np.ndarray:
    """Each row's least-squares optimum on its kept weights S (``keep`` [rows, features], True = kept):

        Ŵ_S = (W·C_{:,S} + E_{:,S} + λ·W_S)(H_SS + λI)⁻¹ = argmin ‖W X_d + Δ − Ŵ X_s‖² + λ‖Ŵ − W‖²,  Ŵ = 0
        off S,

    C = Σ x_d x_sᵀ (``cross``; pass H_s for the layer's own output), H_s = Σ x_s x_sᵀ (``h``), λ > 0,
    E = Σ δ x_sᵀ the residual partner's drift (``skip_cross``, see ``corrected_target``; Δ = 0 without).
    SparseGPT's lazy updates only move the columns right of each pruned one; this re-solves every kept
    weight of a row for the mask it chose (one Cholesky solve per row).
    """
    if not lam > 0:
        raise ValueError(f"masked_refit needs λ > 0, got {lam}")
    w = np.asarray(w, np.float64)
    rhs = w @ np.asarray(cross, np.float64) + lam * w
    if skip_cross is not None:
        rhs = rhs + skip_cross
    out = np.zeros_like(w)
    for i in range(len(w)):
        s = np.flatnonzero(keep[i])
        if len(s):
            a = h.take(s, 0).take(s, 1)  # row-then-column takes: far faster than 2-D fancy indexing
            a.flat[:: len(s) + 1] += lam
            out[i, s] = scipy.linalg.cho_solve(
                scipy.linalg.cho_factor(a, overwrite_a=True, check_finite=False),
                rhs[i, s],
                check_finite=False,
            )
    return out


def output_mismatch(
    w: np.ndarray,
    w_new: np.ndarray,
    cross: np.ndarray,
    h_s: np.ndarray,
    h_d: np.ndarray | None = None,
    skip_cross: np.ndarray | None = None,
) -> float:
    """‖W·X_d + Δ − Ŵ·X_s‖² from sums: tr(Ŵ H_s Ŵᵀ) − 2 tr((W C + E) Ŵᵀ) [+ tr(W H_d Wᵀ) when ``h_d`` is
    given].

    Without ``h_d`` it is the mismatch up to a constant that does not depend on Ŵ (enough to compare fits);
    E = ``skip_cross`` as in ``corrected_target`` (the constant then also leaves out Δ's own terms).
    """
    w = np.asarray(w, np.float64)
    w_new = np.asarray(w_new, np.float64)
    target = w @ cross if skip_cross is None else w @ cross + skip_cross
    err = float(np.sum((w_new @ h_s) * w_new) - 2.0 * np.sum(target * w_new))
    return err + float(np.sum((w @ h_d) * w)) if h_d is not None else err


def bias_correction(
    w: np.ndarray,
    b: np.ndarray,
    w_new: np.ndarray,
    mean_d: np.ndarray,
    mean_s: np.ndarray,
    mean_skip: np.ndarray | float = 0.0,
) -> np.ndarray:
    """b' = b + W·E[x_d] − Ŵ·E[x_s] + E[δ]: the pruned layer's mean output (plus its residual partner's, whose
    drift is δ) equals the dense layer's on calibration data."""
    return (
        np.asarray(b, np.float64)
        + np.asarray(w, np.float64) @ mean_d
        - np.asarray(w_new, np.float64) @ mean_s
        + mean_skip
    )


def corrected_sparsegpt(
    w: np.ndarray, cross: np.ndarray, h_s: np.ndarray, *, lam: float = 0.0, **kwargs
) -> tuple[np.ndarray, np.ndarray]:
    """SparseGPT toward the dense outputs: ``sparsegpt_prune(corrected_target(W, C, H_s, λ), H_s, ...)``.

    Minimizes ‖W X_d − Ŵ X_s‖² under the mask (up to SparseGPT's greedy mask choice and dampening).
    """
    return sparsegpt_prune(corrected_target(w, cross, h_s, lam), h_s, **kwargs)
