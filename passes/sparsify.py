"""Sparsify: N:M semi-structured or unstructured weight sparsity for every eligible Conv/Gemm/MatMul.

Sequential, as SparseGPT prunes a network: layers go in stages (a stage's inputs depend only on earlier
stages); each stage's input Hessians H = (2/n)·Σ x xᵀ are collected on the *already sparsified* model, so
later layers compensate the error of earlier ones. The math is in ``onnxprune.sparsity``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import onnx
from onnx import numpy_helper
from onnxprune.calibration.collect import Frontier, HessianSum
from onnxprune.passes.reconstruct import layer_stages

from onnxprune.layers import LinearLayer, initializer_dict, linear_layers
from onnxprune.sparsity import (
    Pattern,
    check_pattern,
    ineligible_reason,
    layer_columns_order,
    magnitude_nm,
    magnitude_unstructured,
    parse_pattern,
    reduction_axis,
    relative_output_error,
    sparsegpt_prune,
)

CRITERIA = ("sparsegpt", "magnitude")
FLOAT_WEIGHTS = (np.float16, np.float32, np.float64)


def sparsify(model: onnx.ModelProto, batches: Callable[[], Iterable[Mapping[str, np.ndarray]]] | None, *,
             pattern: str | float | Pattern, criterion: str = "sparsegpt", blocksize: int = 128,
             percdamp: float = 0.01, chunk: int = 8,
             progress: Callable[[str, int, int], None] | None = None) -> tuple[onnx.ModelProto, dict]:
    """A sparsified copy of ``model`` and a report of every linear layer (eligible or skipped + reason).

    ``pattern``: "2:4" / "N:M" (N zeros in every M along the input channels / reduction dimension) or a
    fraction (unstructured, per layer). ``criterion``: "sparsegpt" (needs ``batches``) or "magnitude"
    (``batches`` optional: with them the report carries each layer's relative output error too).
    ``batches()`` yields feed dicts (axis 0 = samples); ``chunk`` bounds the im2col copies (samples).
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown sparsity criterion {criterion!r} (one of {', '.join(CRITERIA)})")
    if criterion == "sparsegpt" and batches is None:
        raise ValueError("sparsegpt needs calibration batches")
    pat = pattern if isinstance(pattern, Pattern) else parse_pattern(pattern)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    layers = linear_layers(out)
    weights = initializer_dict(out)
    entries = {name: _entry(out, layer, weights[layer.weight], pat) for name, layer in layers.items()}
    eligible = {name for name, e in entries.items() if e["eligible"]}

    def prune(name: str, hessian: np.ndarray | None) -> None:
        layer = layers[name]
        stored = weights[layer.weight]
        new = _prune_matrix(layer.matrix(stored).astype(np.float64), hessian, layer, pat, criterion,
                            blocksize, percdamp)
        new_stored = layer.unmatrix(new, stored).astype(stored.dtype)
        if hessian is not None:
            entries[name]["relative_output_error"] = relative_output_error(layer.matrix(stored), new, hessian)
        _set_initializer(out, layer.weight, new_stored)
        entries[name]["sparsity"] = float(np.mean(new_stored == 0))
        if pat.semi_structured:
            entries[name]["pattern_ok"] = check_pattern(new_stored, reduction_axis(layer), pat.n, pat.m)["compliant"]

    samples = 0
    if batches is None:
        for name in sorted(eligible):
            prune(name, None)
    else:
        feeds = list(batches())
        samples = sum(len(next(iter(f.values()))) for f in feeds)
        front = Frontier(feeds)
        stages = layer_stages(out, layers, eligible)
        for index, stage in enumerate(stages):
            if progress:
                progress("stage", index, len(stages))
            sums = {name: HessianSum(layers[name]) for name in stage}
            for values in front.advance(out, sorted({layers[name].input for name in stage})):
                for name, acc in sums.items():
                    x = values[layers[name].input]
                    for lo in range(0, len(x), chunk):
                        acc.add(x[lo:lo + chunk])
            for name, acc in sums.items():
                prune(name, acc.hessian())
    return out, _summary(entries, pat, criterion, samples)


def _prune_matrix(mat: np.ndarray, hessians: np.ndarray | None, layer: LinearLayer, pat: Pattern, criterion: str,
                  blocksize: int, percdamp: float) -> np.ndarray:
    """Prune [groups, rows, features] group by group in TensorRT's column order (taps-major for convs)."""
    order = layer_columns_order(layer, layer.in_per_group, mat.shape[2])
    new = mat.copy()
    for g in range(mat.shape[0]):
        w = mat[g][:, order]
        if criterion == "magnitude":
            pruned = magnitude_nm(w, pat.n, pat.m)[0] if pat.semi_structured else \
                magnitude_unstructured(w, pat.sparsity)[0]
        else:
            h = hessians[g][np.ix_(order, order)]
            pruned = sparsegpt_prune(w, h, n=pat.n, m=pat.m, sparsity=pat.sparsity,
                                     blocksize=blocksize, percdamp=percdamp)[0]
        new[g][:, order] = pruned
    return new


def _entry(model: onnx.ModelProto, layer: LinearLayer, w: np.ndarray, pat: Pattern) -> dict:
    uses = Counter(i for node in model.graph.node for i in node.input)[layer.weight]
    reason = (f"weight {layer.weight!r} is shared by {uses} nodes" if uses > 1
              else f"weight dtype {w.dtype} is not floating point" if w.dtype not in FLOAT_WEIGHTS
              else ineligible_reason(layer, w.shape, pat))
    return {"node": layer.node, "op": layer.op, "weight": layer.weight, "shape": list(w.shape),
            "eligible": reason is None, "reason": reason, "sparsity": float(np.mean(w == 0)),
            "pattern_ok": None, "relative_output_error": None}


def _summary(entries: Mapping[str, dict], pat: Pattern, criterion: str, samples: int) -> dict:
    rows = list(entries.values())
    size = {e["node"]: int(np.prod(e["shape"])) for e in rows}
    zeros_eligible = sum(e["sparsity"] * size[e["node"]] for e in rows if e["eligible"])
    size_eligible = sum(size[e["node"]] for e in rows if e["eligible"])
    zeros_all = sum(e["sparsity"] * size[e["node"]] for e in rows)
    return {"pattern": str(pat), "criterion": criterion, "calibration_samples": samples,
            "eligible_layers": sum(e["eligible"] for e in rows), "skipped_layers": sum(not e["eligible"] for e in rows),
            "sparsity_eligible": zeros_eligible / size_eligible if size_eligible else 0.0,
            "sparsity_linear": zeros_all / max(sum(size.values()), 1), "layers": rows}


def _set_initializer(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    tensor = next(t for t in model.graph.initializer if t.name == name)
    tensor.CopyFrom(numpy_helper.from_array(value, name))


def pattern_report(model: onnx.ModelProto, n: int = 2, m: int = 4) -> dict:
    """Per Conv/Gemm/MatMul weight: does it hold ≥ n zeros per m along the reduction dimension (TensorRT
    layout), and its sparsity; plus the overall sparsity of those weights (like `polygraphy inspect sparsity`)."""
    weights = initializer_dict(model)
    rows = []
    for layer in linear_layers(model).values():
        w = weights[layer.weight]
        rows.append({"node": layer.node, "op": layer.op, "weight": layer.weight, "shape": list(w.shape),
                     **check_pattern(w, reduction_axis(layer), n, m)})
    total = sum(int(np.prod(r["shape"])) for r in rows)
    zeros = sum(r["sparsity"] * int(np.prod(r["shape"])) for r in rows)
    return {"pattern": f"{n}:{m}", "layers": rows, "compliant_layers": sum(r["compliant"] for r in rows),
            "sparsity": zeros / total if total else 0.0}
