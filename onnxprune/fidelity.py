"""Fidelity of a compressed model against the dense one on held-out inputs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx

from .latency import ort_session

_FLOAT_TYPES = {"tensor(float)": np.dtype(np.float32), "tensor(float16)": np.dtype(np.float16),
                "tensor(double)": np.dtype(np.float64)}


def run_all(model: onnx.ModelProto, batches: Iterable[Mapping[str, np.ndarray]],
            optimize: bool = True) -> list[np.ndarray]:
    """Every output of ``model`` over ``batches`` (inputs it does not take are ignored), concatenated."""
    sess = ort_session(model, optimize=optimize)
    floats = {i.name: _FLOAT_TYPES.get(i.type) for i in sess.get_inputs()}

    def feed(k: str, v: np.ndarray) -> np.ndarray:  # float16 <-> float32 inputs (e.g. an INT8 copy of an fp16 model)
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
    producer = {o: n for n in model.graph.node for o in n.output}

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


def compare(dense: list[np.ndarray], other: list[np.ndarray], names: list[str],
            classifier: Sequence[bool] | None = None) -> dict:
    """Per output: cosine (per sample, mean and min), max |Δ|; classifiers (``classifier`` per output, from
    ``classifier_outputs``; by shape alone when None) also top-1/top-5 agreement and KL."""
    out = {}
    classifier = classifier if classifier is not None else [True] * len(names)
    for name, a, b, scores in zip(names, dense, other, classifier, strict=True):
        a64, b64 = a.astype(np.float64).reshape(len(a), -1), b.astype(np.float64).reshape(len(b), -1)
        cos = np.sum(a64 * b64, 1) / np.maximum(np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1), 1e-30)
        m = {"samples": len(a), "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
             "max_abs_diff": float(np.abs(a64 - b64).max())}
        if is_classifier(a.shape, scores):
            m["top1_agreement"] = float(np.mean(a.argmax(1) == b.argmax(1)))
            top5 = min(5, a.shape[1])
            ta, tb = np.argsort(-a, 1)[:, :top5], np.argsort(-b, 1)[:, :top5]
            m["top5_overlap"] = float(np.mean([len(set(x) & set(y)) / top5 for x, y in zip(ta, tb, strict=True)]))
            m["kl_dense_to_pruned"] = mean_kl(a64, b64)
        out[name] = m
    return out


def mean_kl(logits_p: np.ndarray, logits_q: np.ndarray) -> float:
    """Mean over samples of KL(softmax(p) ‖ softmax(q)), from exact log-softmaxes."""
    lp, lq = _log_softmax(logits_p), _log_softmax(logits_q)
    return float(np.mean(np.sum(np.exp(lp) * (lp - lq), 1)))


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def headline(fid: dict) -> tuple[str, float]:
    """The number a quality gate looks at: top-1 agreement of the first classifier output, else mean cosine."""
    for m in fid.values():
        if "top1_agreement" in m:
            return "top1_agreement", m["top1_agreement"]
    first = next(iter(fid.values()))
    return "cosine_mean", first["cosine_mean"]
