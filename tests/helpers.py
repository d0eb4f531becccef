"""Test helpers: run models in onnxruntime, compare outputs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxprune.cli import main

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
# `compress` on the shipped model with 64 calibration samples (the rest of a CLI call follows)
FMNIST_64 = (
    "compress",
    MODELS / "fmnist_resnet.onnx",
    "--calib",
    MODELS / "fmnist_calib.npz",
    "--calib-samples",
    "64",
)


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run a model with all graph optimizations off, so ORT does not hide graph bugs."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a − b| / max(|b|, 1e-12): scale-free error used by the equivalence oracles."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """Run the `onnxprune` entry point in-process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def digest(path: Path) -> str:
    """SHA-256 of a file: proves an input was left untouched."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def float16_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` computing in float16: float initializers and every float graph input/output/value_info."""
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    for i, t in enumerate(out.graph.initializer):
        if t.data_type == onnx.TensorProto.FLOAT:
            out.graph.initializer[i].CopyFrom(
                numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name)
            )
    for vi in (*out.graph.input, *out.graph.output, *out.graph.value_info):
        if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
    return out
