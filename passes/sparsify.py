"""Sparsify: N:M semi-structured or unstructured weight sparsity for every eligible Conv/Gemm/MatMul.

Sequential, as SparseGPT prunes a network: layers go in stages (a stage's inputs depend only on earlier
stages); each stage's input Hessians H = (2/n)·Σ x xᵀ are collected on the *already sparsified* model.
By default (``correct="fixed"``) every layer is also pruned toward the *dense* model's output, not its
own: the dense model advances beside the sparsified one, and SparseGPT approaches the refit target
W* = W + (W·C − W·H_s)(H_s + λI)⁻¹ (C = Σ x_d x_sᵀ), so each layer corrects the drift that earlier
layers left in its input instead of passing it on. A layer whose output only feeds a residual Add also
takes up the drift of the Add's other operand (target W·x_d + s_d − s_s, ``layers.residual_partners``):
otherwise the skip path carries every block's leftover past the layers that could correct it. The math is
in ``onnxprune.sparsity``; the stage loop is ``passes.staged.StagedWalk``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper
from onnxprune.calibration.collect import Frontier, HessianSum
from onnxprune.passes.staged import GramSums, StagedWalk, layer_stages, partner_drift, ridge_lambda

from onnxprune.layers import LinearLayer, initializer_dict, linear_layers
from onnxprune.sparsity import (
    Pattern,
    bias_correction,
    check_pattern,
    corrected_target,
    ineligible_reason,
    layer_columns_order,
    magnitude_nm,
    magnitude_unstructured,
    masked_refit,
    output_mismatch,
    parse_pattern,
    reduction_axis,
    relative_output_error,
    sparsegpt_prune,
    stored_weights,
)

CRITERIA = ("sparsegpt", "magnitude")
FLOAT_WEIGHTS = (np.float16, np.float32, np.float64)


@dataclass
class SparsifyOptions:
    """``pattern``: "2:4" / "N:M" (N zeros in every M along the input channels / reduction dimension) or a
    fraction (unstructured, per layer); ``criterion``: "sparsegpt" or "magnitude"; SparseGPT's error
    correction ``correct`` (``CORRECTIONS``), ``support_refit``, ``bias``, ``ridge`` and ``shrink``, its
    ``blocksize`` and dampening ``percdamp``; ``chunk`` bounds the im2col copies (samples)."""

    pattern: str | float | Pattern = "2:4"
    criterion: str = "sparsegpt"
    correct: str = "fixed"
    support_refit: bool = True
    bias: bool = False
    ridge: float = 1e-3
    shrink: float = 0.25
    blocksize: int = 128
    percdamp: float = 0.01
    chunk: int = 8


def sparsify(
    model: onnx.ModelProto,
    batches: Callable[[], Iterable[Mapping[str, np.ndarray]]] | None,
    opts: SparsifyOptions,
    groups: np.ndarray | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[onnx.ModelProto, dict]:
    """A sparsified copy of ``model`` and a report of every linear layer (eligible or skipped + reason).

    ``opts.criterion``: "sparsegpt" (needs ``batches``) or "magnitude" (``batches`` optional: with them the
    report carries each layer's relative output error too). ``batches()`` yields feed dicts (axis 0 =
    samples).

    SparseGPT only — ``correct`` (see ``CORRECTIONS``): "off" prunes each layer toward its own output on the
    sparsified model's inputs (‖W X_s − Ŵ X_s‖²); "fixed" (default) toward the *dense* model's output
    (‖W X_d − Ŵ X_s‖², target ``corrected_target`` with λ = (ridge + shrink·features/rows)·mean diag H_s);
    "validated" picks one of the two per layer by two-fold validation on the calibration halves (``groups``:
    the source of each calibration row, see ``validation_halves``). ``support_refit``: after SparseGPT chose
    the mask, re-solve every row's kept weights by least squares toward the same target (``masked_refit``).
    ``bias``: afterwards refit each Conv/Gemm bias (adding one if missing) so the layer's mean output matches
    the dense model's (``bias_correction``).
    """
    if opts.criterion not in CRITERIA:
        raise ValueError(f"unknown sparsity criterion {opts.criterion!r} (one of {', '.join(CRITERIA)})")
    if opts.correct not in CORRECTIONS:
        raise ValueError(f"unknown correction {opts.correct!r} (one of {', '.join(CORRECTIONS)})")
    if opts.criterion == "sparsegpt" and batches is None:
        raise ValueError("sparsegpt needs calibration batches")
    job = _Sparsifier(model, opts)
    if batches is None:
        for name in sorted(job.eligible):
            job.prune(name, None)
        return job.out, job.summary(0)
    feeds = list(batches())
    if opts.criterion == "magnitude" or (opts.correct == "off" and not opts.bias):
        job.prune_on_own_inputs(feeds, progress)
    else:  # error-correcting: the dense model advances beside the sparsified one
        walk = StagedWalk(model, job.out, job.layers, job.eligible, feeds, groups, opts.chunk)
        walk.run(_Correcting(job, walk), progress)
    return job.out, job.summary(sum(len(next(iter(f.values()))) for f in feeds))


class _Sparsifier:
    """The sparsified copy, its layers and their report entries."""

    def __init__(self, model: onnx.ModelProto, opts: SparsifyOptions):
        self.opts = opts
        self.pat = opts.pattern if isinstance(opts.pattern, Pattern) else parse_pattern(opts.pattern)
        self.out = onnx.ModelProto()
        self.out.CopyFrom(model)
        self.layers = linear_layers(self.out)
        self.weights = initializer_dict(self.out)
        self.entries = {
            name: _entry(self.out, layer, self.weights[layer.weight], self.pat)
            for name, layer in self.layers.items()
        }
        self.eligible = {name for name, e in self.entries.items() if e["eligible"]}

    def finish(self, name: str, new: np.ndarray, hessian: np.ndarray | None) -> None:
        """Write the layer's sparse weights and record their sparsity, pattern and output error."""
        layer = self.layers[name]
        stored = self.weights[layer.weight]
        new_stored = layer.unmatrix(new, stored).astype(stored.dtype)
        entry = self.entries[name]
        if hessian is not None:
            entry["relative_output_error"] = relative_output_error(layer.matrix(stored), new, hessian)
        _set_initializer(self.out, layer.weight, new_stored)
        entry["sparsity"] = float(np.mean(new_stored == 0))
        if self.pat.semi_structured:
            entry["pattern_ok"] = check_pattern(new_stored, reduction_axis(layer), self.pat.n, self.pat.m)[
                "compliant"
            ]

    def prune(self, name: str, hessian: np.ndarray | None) -> None:
        """Prune toward the layer's own output (magnitude, or SparseGPT with ``hessian``)."""
        layer, opts = self.layers[name], self.opts
        new = _prune_matrix(
            layer.matrix(self.weights[layer.weight]).astype(np.float64),
            hessian,
            layer,
            self.pat,
            opts.criterion,
            opts.blocksize,
            opts.percdamp,
        )
        self.finish(name, new, hessian)

    def prune_on_own_inputs(self, feeds: list, progress) -> None:
        """Stage by stage, each layer pruned with the Hessian of its inputs in the already sparsified
        model."""
        stages = layer_stages(self.out, self.layers, self.eligible)
        front = Frontier(feeds)
        for index, stage in enumerate(stages):
            if progress:
                progress("stage", index, len(stages))
            sums = {name: HessianSum(self.layers[name]) for name in stage}
            for values in front.advance(self.out, sorted({self.layers[name].tap for name in stage})):
                for name, acc in sums.items():
                    x = values[self.layers[name].tap]
                    for lo in range(0, len(x), self.opts.chunk):
                        acc.add(x[lo : lo + self.opts.chunk])
            for name, acc in sums.items():
                self.prune(name, acc.hessian())

    def summary(self, samples: int) -> dict:
        return _summary(self.entries, self.pat, self.opts.criterion, samples)


class _Correcting:
    """Error-correcting SparseGPT as a ``StagePolicy``: Gram sums of the dense and sparsified inputs (and the
    residual partner's drift) per calibration half, then ``_CorrectedFit`` per layer."""

    def __init__(self, job: _Sparsifier, walk: StagedWalk):
        opts = job.opts
        self.job, self.walk = job, walk
        self.fit = _CorrectedFit(
            job.pat,
            opts.blocksize,
            opts.percdamp,
            opts.correct,
            opts.bias,
            opts.ridge,
            opts.shrink,
            opts.support_refit,
        )
        self.halves: dict[str, tuple[GramSums, GramSums]] = {}

    def start(self, stage: list[str]) -> dict:
        self.halves = {name: (GramSums(), GramSums()) for name in stage}
        return {name: self._sink(name) for name in stage}

    def _sink(self, name: str):
        lay, sums = self.job.layers[name], self.halves[name]
        outputs = lay.matrix(self.job.weights[lay.weight]).shape[1] if name in self.walk.partners else 0

        def add(x_dense: np.ndarray, x_sparse: np.ndarray, half: int, partner) -> bool:
            f_s = lay.features(x_sparse.astype(np.float64))
            drift = partner_drift(lay, *partner, (f_s.shape[1], outputs)) if partner else None
            sums[half].add(
                lay.features(x_dense.astype(np.float64)),
                f_s,
                None,
                True,
                lay.rows_per_sample(x_sparse),
                drift,
            )
            return drift is not None

        return add

    def finish(self, stage: list[str], d_vals: list[dict], s_vals: list[dict]) -> None:
        job = self.job
        for name, sums in self.halves.items():
            layer = job.layers[name]
            mat = layer.matrix(job.weights[layer.weight]).astype(np.float64)
            b0 = _bias_matrix(layer, job.weights, mat.shape)
            new, new_b, choice = self.fit.layer(layer, mat, b0, sums)
            total = sums[0] + sums[1]  # an empty second half (one batch) adds nothing
            job.finish(name, new, total.pp[:, :-1, :-1] * (2.0 / max(total.rows, 1)))
            job.entries[name]["correction"] = choice
            job.entries[name]["residual_partner"] = self.walk.partners.get(name)
            if self.fit.bias_for(layer):
                _set_bias(job.out, layer, job.weights, new_b.reshape(-1))


CORRECTIONS = ("off", "fixed", "validated")


class _CorrectedFit:
    """Error-correcting SparseGPT of one layer from the Gram sums of ``passes.staged.GramSums``.

    Per conv group, with X̃ = [X; 1]: pp = X̃_s X̃_sᵀ (H_s, Σx_s, n), dp = X̃_d X̃_sᵀ (C, Σx_d, Σx_s).
    Candidates: "plain" (target W) and "corrected" (target W*); both prune with H_s, and with ``bias``
    both refit the bias afterwards. Validation fits on one half, scores ‖W̃ X̃_d − Ŵ̃ X̃_s‖² on
    the other, both ways.
    """

    def __init__(
        self,
        pat: Pattern,
        blocksize: int,
        percdamp: float,
        correct: str,
        bias: bool,
        ridge: float,
        shrink: float,
        support_refit: bool = True,
    ):
        self.pat, self.blocksize, self.percdamp = pat, blocksize, percdamp
        self.correct, self.bias, self.ridge, self.shrink = correct, bias, ridge, shrink
        self.support_refit = support_refit

    def bias_for(self, layer: LinearLayer) -> bool:
        return self.bias and layer.op != "MatMul"

    def layer(
        self, layer: LinearLayer, mat: np.ndarray, b0: np.ndarray, halves: tuple[GramSums, GramSums]
    ) -> tuple[np.ndarray, np.ndarray, str]:
        """(pruned [groups, rows, features], bias [groups, rows], the candidate used)."""
        refit_bias = self.bias_for(layer)
        order = layer_columns_order(layer, layer.in_per_group, mat.shape[2])
        choice = {"off": "plain", "fixed": "corrected"}.get(self.correct)
        if choice is None:  # validated
            if not halves[1].rows:
                choice = "corrected"
            else:
                errs = {}
                for cand in ("plain", "corrected"):
                    err = 0.0
                    for fit, val in ((0, 1), (1, 0)):
                        for g in range(mat.shape[0]):
                            w_hat, b_hat = self.group(mat[g], b0[g], halves[fit], g, cand, refit_bias, order)
                            v = halves[val]
                            w_aug = np.concatenate([mat[g], b0[g][:, None]], 1)
                            hat_aug = np.concatenate([w_hat, b_hat[:, None]], 1)
                            err += output_mismatch(
                                w_aug,
                                hat_aug,
                                v.dp[g],
                                v.pp[g],
                                skip_cross=v.ep[g] if v.ep is not None else None,
                            )
                    errs[cand] = err
                choice = min(errs, key=errs.get)
        total = halves[0] + halves[1]
        new, new_b = np.empty_like(mat), np.empty_like(b0)
        for g in range(mat.shape[0]):
            new[g], new_b[g] = self.group(mat[g], b0[g], total, g, choice, refit_bias, order)
        return new, new_b, choice

    def group(
        self,
        w: np.ndarray,
        b: np.ndarray,
        sums: GramSums,
        g: int,
        cand: str,
        refit_bias: bool,
        order: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        pp, dp, n, samples = sums.pp[g], sums.dp[g], sums.rows, max(sums.samples, 1)
        h, cross = pp[:-1, :-1], dp[:-1, :-1]
        sum_s, sum_d = pp[:-1, -1], dp[:-1, -1]
        # the residual partner's drift (``residual_partners``): only the corrected fit absorbs it
        skip = sums.ep[g][:, :-1] if sums.ep is not None and cand == "corrected" else None
        target = w
        if cand == "corrected":
            lam = ridge_lambda(h, self.ridge, self.shrink, h.shape[0], samples)
            target = corrected_target(w, cross, h, lam, skip)
        pat = self.pat
        w_hat = np.empty_like(w)
        pruned = np.empty(w.shape, bool)
        w_hat[:, order], pruned[:, order] = sparsegpt_prune(
            target[:, order],
            h[np.ix_(order, order)],
            n=pat.n,
            m=pat.m,
            sparsity=pat.sparsity,
            blocksize=self.blocksize,
            percdamp=self.percdamp,
        )
        if self.support_refit:  # λ as for the target, with the kept count as the feature count
            keep = ~pruned
            lam_s = ridge_lambda(h, self.ridge, self.shrink, float(keep.sum(1).mean()), samples)
            w_hat = masked_refit(w, cross if cand == "corrected" else h, h, keep, lam_s, skip)
        mean_skip = sums.ep[g][:, -1] / n if skip is not None else 0.0
        b_hat = bias_correction(w, b, w_hat, sum_d / n, sum_s / n, mean_skip) if refit_bias else b
        return w_hat, b_hat


def _bias_matrix(layer: LinearLayer, weights: Mapping[str, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """The layer's bias as [groups, rows] float64 (zeros when it has none)."""
    n_out = shape[0] * shape[1]
    b = weights[layer.bias].reshape(-1).astype(np.float64) if layer.bias else np.zeros(n_out)
    return np.broadcast_to(b, (n_out,)).reshape(shape[0], shape[1]).copy()


def _set_bias(
    model: onnx.ModelProto, layer: LinearLayer, weights: Mapping[str, np.ndarray], value: np.ndarray
) -> None:
    """Write a refit bias: in place when the layer owns a full-size bias, else as a new initializer."""
    dtype = weights[layer.weight].dtype
    old = weights[layer.bias] if layer.bias else None
    uses = Counter(i for node in model.graph.node for i in node.input)
    if old is not None and old.size == value.size and uses[layer.bias] == 1:
        _set_initializer(model, layer.bias, value.reshape(old.shape).astype(dtype))
        return
    name = f"{layer.node}.bias_corrected"
    model.graph.initializer.append(numpy_helper.from_array(value.astype(dtype), name))
    node = next(n for n in model.graph.node if n.name == layer.node)
    if len(node.input) > 2:
        node.input[2] = name
    else:
        node.input.append(name)


def _prune_matrix(
    mat: np.ndarray,
    hessians: np.ndarray | None,
    layer: LinearLayer,
    pat: Pattern,
    criterion: str,
    blocksize: int,
    percdamp: float,
) -> np.ndarray:
    """Prune [groups, rows, features] group by group in TensorRT's column order (taps-major for convs)."""
    order = layer_columns_order(layer, layer.in_per_group, mat.shape[2])
    new = mat.copy()
    for g in range(mat.shape[0]):
        w = mat[g][:, order]
        if criterion == "magnitude":
            pruned = (
                magnitude_nm(w, pat.n, pat.m)[0]
                if pat.semi_structured
                else magnitude_unstructured(w, pat.sparsity)[0]
            )
        else:
            h = hessians[g][np.ix_(order, order)]
            pruned = sparsegpt_prune(
                w, h, n=pat.n, m=pat.m, sparsity=pat.sparsity, blocksize=blocksize, percdamp=percdamp
            )[0]
        new[g][:, order] = pruned
    return new


def _entry(model: onnx.ModelProto, layer: LinearLayer, w: np.ndarray, pat: Pattern) -> dict:
    uses = Counter(i for node in model.graph.node for i in node.input)[layer.weight]
    reason = (
        f"weight {layer.weight!r} is shared by {uses} nodes"
        if uses > 1
        else f"weight dtype {w.dtype} is not floating point"
        if w.dtype not in FLOAT_WEIGHTS
        else ineligible_reason(layer, w.shape, pat)
    )
    return {
        "node": layer.node,
        "op": layer.op,
        "weight": layer.weight,
        "shape": list(w.shape),
        "eligible": reason is None,
        "reason": reason,
        "sparsity": float(np.mean(w == 0)),
        "pattern_ok": None,
        "relative_output_error": None,
        "residual_partner": None,
    }


def _summary(entries: Mapping[str, dict], pat: Pattern, criterion: str, samples: int) -> dict:
    rows = list(entries.values())
    size = {e["node"]: int(np.prod(e["shape"])) for e in rows}
    zeros_eligible = sum(e["sparsity"] * size[e["node"]] for e in rows if e["eligible"])
    size_eligible = sum(size[e["node"]] for e in rows if e["eligible"])
    zeros_all = sum(e["sparsity"] * size[e["node"]] for e in rows)
    return {
        "pattern": str(pat),
        "criterion": criterion,
        "calibration_samples": samples,
        "eligible_layers": sum(e["eligible"] for e in rows),
        "skipped_layers": sum(not e["eligible"] for e in rows),
        "sparsity_eligible": zeros_eligible / size_eligible if size_eligible else 0.0,
        "sparsity_linear": zeros_all / max(sum(size.values()), 1),
        "layers": rows,
    }


def _set_initializer(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    tensor = next(t for t in model.graph.initializer if t.name == name)
    tensor.CopyFrom(numpy_helper.from_array(value, name))


def pattern_report(model: onnx.ModelProto, n: int = 2, m: int = 4) -> dict:
    """Per Conv/Gemm/MatMul weight (``stored_weights``: also behind Q/DQ): does it hold ≥ n zeros per m along
    the reduction dimension (TensorRT layout), and its sparsity; plus the overall sparsity of those weights
    (like `polygraphy inspect sparsity`)."""
    rows = [
        {
            "node": sw.node,
            "op": sw.op,
            "weight": sw.weight,
            "shape": list(sw.array.shape),
            **check_pattern(sw.array, sw.axis, n, m),
        }
        for sw in stored_weights(model)
    ]
    total = sum(int(np.prod(r["shape"])) for r in rows)
    zeros = sum(r["sparsity"] * int(np.prod(r["shape"])) for r in rows)
    return {
        "pattern": f"{n}:{m}",
        "layers": rows,
        "compliant_layers": sum(r["compliant"] for r in rows),
        "sparsity": zeros / total if total else 0.0,
    }
