"""Shared pieces of the benchmark scripts: where the zoo lives, batched ORT runs, agreement metrics."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime

from onnxprune.fidelity import compare, run_all

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models"
ZOO = Path(os.environ.get("ONNXPRUNE_ZOO_DIR", REPO / "models" / "cache"))


# key -> (model, calibration npz, evaluation npz); the ImageNet models' eval crops come from held-out photos
MODELS = {
    "fmnist": (SHIPPED / "fmnist_resnet.onnx", SHIPPED / "fmnist_calib.npz", SHIPPED / "fmnist_eval.npz"),
    "effnet": (ZOO / "efficientnet_lite0.onnx", ZOO / "effnet_calib.npz", ZOO / "effnet_eval.npz"),
    "mnv2": (ZOO / "mobilenet_v2.onnx", ZOO / "imagenet_calib.npz", ZOO / "imagenet_eval.npz"),
}


def quality_text(key: str, logits: np.ndarray, dense_logits: np.ndarray, labels: np.ndarray | None) -> str:
    """Fashion-MNIST: true accuracy; ImageNet models: top-1 agreement, top-5 overlap and KL vs dense."""
    if key == "fmnist":
        return f"accuracy {100 * np.mean(logits.argmax(1) == labels):.2f}%"
    m = compare([dense_logits], [logits], ["logits"])["logits"]
    return (
        f"top-1 agr. {100 * m['top1_agreement']:.1f}%, top-5 overlap {100 * m['top5_overlap']:.1f}%, "
        f"KL {m['kl_dense_to_pruned']:.3f}"
    )


@contextlib.contextmanager
def compressed(
    args: list[str], python: str = sys.executable, cwd: str | None = None
) -> Iterator[tuple[int, dict | None, str, float]]:
    """Run ``onnxprune compress ARGS --json -o DIR`` as a user would and yield (exit code, the report or None,
    stderr, wall seconds); DIR and the models in it live until the block ends."""
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        proc = subprocess.run(
            compress_cmd(*args, "--json", "-o", out, python=python),
            capture_output=True,
            text=True,
            cwd=cwd,
        )
        wall = time.perf_counter() - t0
        yield proc.returncode, json.loads(proc.stdout) if proc.returncode == 0 else None, proc.stderr, wall


def group_key(group: dict) -> str:
    """A report's group known by its members (node:role, sorted): ids shift as the tracer finds more."""
    return "|".join(sorted(f"{m['node']}:{m['role']}" for m in group["members"]))


def compress_cmd(*args, python: str = sys.executable) -> list[str]:
    """``python -m onnxprune compress ARGS`` as an argument list (paths and numbers as strings)."""
    return [python, "-m", "onnxprune", "compress", *map(str, args)]


def run_batched(model: onnx.ModelProto, feeds: dict[str, np.ndarray], batch: int = 64) -> list[np.ndarray]:
    """All outputs of ``model`` over feeds whose axis 0 is the sample axis, in chunks of ``batch``."""
    n = len(next(iter(feeds.values())))
    return run_all(model, ({k: v[i : i + batch] for k, v in feeds.items()} for i in range(0, n, batch)))


def top1_agreement(logits: np.ndarray, reference: np.ndarray) -> float:
    return float(np.mean(logits.argmax(-1) == reference.argmax(-1)))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, onnxruntime {onnxruntime.__version__}, onnx {onnx.__version__}"
