"""Fidelity of a compressed model against the dense one on held-out inputs.

Class scores (2-D [samples, classes] from a linear head or softmax) are compared by top-1/top-5 agreement
and KL. Every other output is compared component by component, each by its error relative to its own
spread on the dense outputs, so that small values (a detector's class scores beside box coordinates in
pixels, a second output tensor) count as much as large ones: for component c over samples and positions,

    R²_c = 1 − mean((y_c − ŷ_c)²) / var(y_c),

averaged over the components of the output (``r2_mean``); the damage the pipeline prices is 1 − R².
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from .graph import producers
from .latency import ort_session

_FLOAT_TYPES = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
}


def run_all(
    model: onnx.ModelProto, batches: Iterable[Mapping[str, np.ndarray]], optimize: bool = True
) -> list[np.ndarray]:
    """Every output of ``model`` over ``batches`` (inputs it does not take are ignored), concatenated."""
    sess = ort_session(model, optimize=optimize)
    floats = {i.name: _FLOAT_TYPES.get(i.type) for i in sess.get_inputs()}

    def feed(
        k: str, v: np.ndarray
    ) -> np.ndarray:  # float16 <-> float32 inputs (e.g. an INT8 copy of an fp16 model)
        want = floats[k]
        return v.astype(want) if want is not None and v.dtype != want and v.dtype.kind == "f" else v

    chunks = [sess.run(None, {k: feed(k, v) for k, v in b.items() if k in floats}) for b in batches]
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))] if chunks else []


# ops that only reshape or relabel a tensor on its way to a graph output
_PASS_THROUGH = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast"}
# what produces class scores: a linear head (a MatMul's bias Add included) or a (log-)softmax over it
_SCORE_OPS = {"Gemm", "MatMul", "Conv", "Softmax", "LogSoftmax"}


def classifier_outputs(model: onnx.ModelProto) -> list[bool]:
    """Per graph output: are these class scores (a linear head or softmax), not features such as a
    mean-pooled sentence embedding? Only scores get top-k agreement and KL."""
    producer = producers(model.graph)

    def source(name: str):
        node = producer.get(name)
        while node is not None and node.op_type in _PASS_THROUGH:
            node = producer.get(node.input[0])
        return node

    def scores(name: str) -> bool:
        node = source(name)
        if node is None:
            return False
        if node.op_type == "Add":  # MatMul + bias
            return any((s := source(i)) is not None and s.op_type == "MatMul" for i in node.input)
        return node.op_type in _SCORE_OPS

    return [scores(o.name) for o in model.graph.output]


def is_classifier(shape: tuple[int, ...], scores: bool = True) -> bool:
    """2-D [samples, classes > 1] class scores (``scores``: from ``classifier_outputs``)."""
    return scores and len(shape) == 2 and shape[1] > 1


def component_axis(shape: Sequence[int]) -> int | None:
    """The axis whose entries are an output's components, each with its own meaning and scale: for [N, K] the
    last; for higher ranks the shorter of axis 1 and the last one (YOLOv8's [N, 4 + classes, anchors]: axis 1;
    YOLOv5's [N, anchors, 5 + classes]: the last; a [N, 1, H, W] map: axis 1); None for [N]."""
    if len(shape) < 2:
        return None
    if len(shape) == 2:
        return 1
    return 1 if shape[1] <= shape[-1] else len(shape) - 1


def component_r2(dense: np.ndarray, other: np.ndarray) -> np.ndarray:
    """R² of every component (``component_axis``) of ``other`` against ``dense``, over samples and every other
    axis (positions):

        R²_c = 1 − Σ (dense − other)² / Σ (dense − mean_samples(dense))²

    where the mean is taken over the samples at each position: what a component shows whatever the input (a
    bias, the anchor grid a detector adds to its box centres) is not spread the model could lose. With one
    sample the mean is over positions too. A component constant in ``dense`` (spread ≤ 1e-10 of its mean
    square) is measured against that mean square instead; one that is zero throughout, against 1e-12 of the
    output's mean spread."""
    axis = component_axis(dense.shape)
    a = dense.astype(np.float64)
    b = other.astype(np.float64)
    n = len(a)
    if axis is None:
        a, b = a.reshape(n, 1, -1), b.reshape(n, 1, -1)
    else:
        a = np.moveaxis(a, axis, 1).reshape(n, dense.shape[axis], -1)
        b = np.moveaxis(b, axis, 1).reshape(n, dense.shape[axis], -1)
    centre = a.mean(axis=0, keepdims=True) if n > 1 else a.mean(axis=(0, 2), keepdims=True)
    var, square = np.mean((a - centre) ** 2, axis=(0, 2)), np.mean(a**2, axis=(0, 2))
    scale = np.where(var > 1e-10 * square, var, np.maximum(square, max(1e-12 * float(var.mean()), 1e-30)))
    return 1.0 - np.mean((a - b) ** 2, axis=(0, 2)) / scale


def compare(
    dense: list[np.ndarray],
    other: list[np.ndarray],
    names: list[str],
    classifier: Sequence[bool] | None = None,
    metric=None,
) -> dict:
    """Per output: cosine (per sample, mean and min), max |Δ|; classifiers (``classifier`` per output, from
    ``classifier_outputs``; by shape alone when None) also top-1/top-5 agreement and KL; other outputs their
    components' R² (mean, min, the five worst with their index). ``metric`` (a ``metrics.Metric``, the user's
    ``--metric-fn``) adds the entry "metric_fn" with its value, which ``headline`` then reads, and a shipped
    metric's per-part fidelity (``metrics.DETAILS``: a detector's detections, boxes, objectness, classes)."""
    out = {}
    classifier = classifier if classifier is not None else [True] * len(names)
    for name, a, b, scores in zip(names, dense, other, classifier, strict=True):
        a64, b64 = a.astype(np.float64).reshape(len(a), -1), b.astype(np.float64).reshape(len(b), -1)
        cos = np.sum(a64 * b64, 1) / np.maximum(
            np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1), 1e-30
        )
        m = {
            "samples": len(a),
            "cosine_mean": float(cos.mean()),
            "cosine_min": float(cos.min()),
            "max_abs_diff": float(np.abs(a64 - b64).max()),
        }
        if is_classifier(a.shape, scores):
            m["top1_agreement"] = float(np.mean(a.argmax(1) == b.argmax(1)))
            top5 = min(5, a.shape[1])
            ta, tb = np.argsort(-a, 1)[:, :top5], np.argsort(-b, 1)[:, :top5]
            m["top5_overlap"] = float(
                np.mean([len(set(x) & set(y)) / top5 for x, y in zip(ta, tb, strict=True)])
            )
            m["kl_dense_to_pruned"] = mean_kl(a64, b64)
        else:
            r2 = component_r2(a, b)
            worst = np.argsort(r2, kind="stable")[:5]
            m.update(
                component_axis=component_axis(a.shape),
                components=len(r2),
                r2_mean=float(r2.mean()),
                r2_min=float(r2.min()),
                worst_components=[[int(i), float(r2[i])] for i in worst],
            )
        out[name] = m
    if metric is not None:
        a, b = dict(zip(names, dense, strict=True)), dict(zip(names, other, strict=True))
        out["metric_fn"] = {
            "name": metric.name,
            "options": metric.options,
            "samples": len(dense[0]),
            "value": metric(a, b),
        }
        parts = metric.parts(a, b)
        if parts:
            out["metric_fn"]["parts"] = parts
    return out


def mean_kl(logits_p: np.ndarray, logits_q: np.ndarray) -> float:
    """Mean over samples of KL(softmax(p) ‖ softmax(q)), from exact log-softmaxes."""
    lp, lq = _log_softmax(logits_p), _log_softmax(logits_q)
    return float(np.mean(np.sum(np.exp(lp) * (lp - lq), 1)))


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def headline(fid: dict) -> tuple[str, float]:
    """The number a quality gate looks at: the user's ``--metric-fn`` where there is one (entry "metric_fn"),
    else top-1 agreement of the first classifier output, else the lowest component-mean R² of the outputs (so
    a collapsed small output cannot hide behind a large one)."""
    if "metric_fn" in fid:
        return fid["metric_fn"]["name"], fid["metric_fn"]["value"]
    for m in fid.values():
        if "top1_agreement" in m:
            return "top1_agreement", m["top1_agreement"]
    return "r2_mean", min(m["r2_mean"] for m in fid.values())


@dataclass
class HeldOut:
    """A reference model's outputs on the held-out calibration rows: what candidates are compared with
    (``fidelity``), ``metric`` the user's ``--metric-fn`` where given."""

    calib: object  # CalibrationSet: its ``holdout`` slice
    outputs: list[np.ndarray]
    names: list[str]
    classifier: list[bool]
    metric: object = None

    @classmethod
    def of(
        cls, model: onnx.ModelProto, calib, metric=None, outputs: list[np.ndarray] | None = None
    ) -> HeldOut:
        """``model``'s outputs on the holdout rows (``outputs`` where the caller has them already)."""
        if outputs is None:
            outputs = run_all(model, calib.batches("holdout", 64))
        return cls(calib, outputs, [o.name for o in model.graph.output], classifier_outputs(model), metric)

    def run(self, candidate: onnx.ModelProto) -> list[np.ndarray]:
        return run_all(candidate, self.calib.batches("holdout", 64))

    def compare(self, outputs: list[np.ndarray]) -> dict:
        return compare(self.outputs, outputs, self.names, self.classifier, self.metric)

    def fidelity(self, candidate: onnx.ModelProto) -> dict:
        return self.compare(self.run(candidate))
