"""Fidelity of a compressed model against the dense one on held-out inputs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import onnx

from .latency import ort_session


def run_all(model: onnx.ModelProto, batches: Iterable[Mapping[str, np.ndarray]],
            optimize: bool = True) -> list[np.ndarray]:
    """Every output of ``model`` over ``batches`` (inputs it does not take are ignored), concatenated."""
    sess = ort_session(model, optimize=optimize)
    names = {i.name for i in sess.get_inputs()}
    chunks = [sess.run(None, {k: v for k, v in b.items() if k in names}) for b in batches]
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))] if chunks else []


def is_classifier(shape: tuple[int, ...]) -> bool:
    return len(shape) == 2 and shape[1] > 1


def compare(dense: list[np.ndarray], other: list[np.ndarray], names: list[str]) -> dict:
    """Per output: cosine (per sample, mean and min), max |Δ|; classifiers also top-1/top-5 agreement and KL."""
    out = {}
    for name, a, b in zip(names, dense, other, strict=True):
        a64, b64 = a.astype(np.float64).reshape(len(a), -1), b.astype(np.float64).reshape(len(b), -1)
        cos = np.sum(a64 * b64, 1) / np.maximum(np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1), 1e-30)
        m = {"samples": len(a), "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
             "max_abs_diff": float(np.abs(a64 - b64).max())}
        if is_classifier(a.shape):
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
