"""Dense baselines of the model zoo: MACs, params, ORT latency and quality before any compression.

    python -m benchmarks.dense_baselines          # prints a markdown table for BENCHMARKS.md

Quality: Fashion-MNIST ResNet — true test accuracy (10k images); ImageNet models — top-1 agreement
of the normalized graph with the exported one on the held-out photo crops (plus the exported model's
mean top-1 probability); MiniLM — cosine of sentence embeddings, normalized vs exported. Real-zoo
rows need `python models/build_zoo.py` first and are skipped with a note when absent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from onnxprune.passes.normalize import normalize

from benchmarks.common import SHIPPED, ZOO, machine, run_batched, top1_agreement
from onnxprune.costs import human, model_cost
from onnxprune.latency import measure_latency
from onnxprune.modelio import load_model


def fmnist_eval() -> tuple[dict, np.ndarray]:
    data = np.load(SHIPPED / "fmnist_eval.npz")
    x = data["input"] if "input" in data else ((data["pixels"] / 255.0 - 0.2860) / 0.3530).astype(np.float32)
    return {"input": x.reshape(-1, 1, 28, 28).astype(np.float32)}, data["labels"]


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def row(name: str, path: Path, quality) -> dict | None:
    if not path.exists():
        print(f"skipped {name}: {path} not built (python models/build_zoo.py)", file=sys.stderr)
        return None
    exported = load_model(path)
    model, _ = normalize(exported)
    feeds, metric = quality(exported, model)
    first = {k: v[:1] for k, v in feeds.items()}
    cost = model_cost(model, {k: v.shape for k, v in first.items()})
    latency = {t: measure_latency(model, first, threads=t, runs=100).median_ms for t in (1, 2)}
    return {
        "model": name,
        "macs": cost.macs,
        "params": cost.params,
        "latency": latency,
        "quality": metric,
        "inputs": {k: list(v.shape[1:]) for k, v in first.items()},
    }


def fmnist_quality(exported, model):
    feeds, labels = fmnist_eval()
    acc_e = float(np.mean(run_batched(exported, feeds, 1000)[0].argmax(1) == labels))
    acc_n = float(np.mean(run_batched(model, feeds, 1000)[0].argmax(1) == labels))
    return feeds, f"test accuracy {100 * acc_n:.2f}% (exported {100 * acc_e:.2f}%), n={len(labels)}"


def imagenet_quality(npz: str):
    def quality(exported, model):
        feeds = {"input": np.load(ZOO / npz)["input"]}
        ref = run_batched(exported, feeds, 32)[0]
        got = run_batched(model, feeds, 32)[0]
        conf = float(softmax(ref.astype(np.float64)).max(1).mean())
        return feeds, (
            f"top-1 agreement normalized vs exported {100 * top1_agreement(got, ref):.1f}%, "
            f"max |Δlogit| {np.abs(got - ref).max():.1e}, mean top-1 prob {conf:.2f}, n={len(ref)}"
        )

    return quality


def minilm_quality(exported, model):
    data = np.load(ZOO / "minilm_eval.npz")
    feeds = {k: data[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    names = [o.name for o in exported.graph.output]
    ref = run_batched(exported, feeds, 64)[names.index("sentence_embedding")]
    got = run_batched(model, feeds, 64)[names.index("sentence_embedding")]
    cos = np.sum(ref * got, 1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    return feeds, f"embedding cosine normalized vs exported min {cos.min():.6f}, n={len(ref)} sentences"


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    rows = [
        r
        for r in (
            row("Fashion-MNIST ResNet", SHIPPED / "fmnist_resnet.onnx", fmnist_quality),
            row("EfficientNet-Lite0", ZOO / "efficientnet_lite0.onnx", imagenet_quality("effnet_eval.npz")),
            row("MobileNetV2", ZOO / "mobilenet_v2.onnx", imagenet_quality("imagenet_eval.npz")),
            row("all-MiniLM-L6-v2", ZOO / "minilm_l6.onnx", minilm_quality),
        )
        if r
    ]
    print(f"Machine: {machine()}\n")
    print("| model | input (batch 1) | MACs | params | ORT latency b1, 1 / 2 threads | quality |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        shape = ", ".join("×".join(map(str, [1, *s])) for s in r["inputs"].values())
        print(
            f"| {r['model']} | {shape} | {human(r['macs'])} | {human(r['params'])} | "
            f"{r['latency'][1]:.2f} / {r['latency'][2]:.2f} ms | {r['quality']} |"
        )


if __name__ == "__main__":
    main()
