"""TensorRT backend: availability messages, precision and sparsity decisions, the layer report.

Tests using the ``gpu`` fixture build and time real engines: they run only where ``tensorrt`` imports and a
CUDA
GPU (with cuda-python or torch) is visible, and are skipped everywhere else.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from models import synthetic
from onnxprune import tensorrt_backend as tb
from onnxprune.sparsity import check_pattern, magnitude_nm
from tests.helpers import run_cli, run_ort


def _conv_2_4(w: np.ndarray) -> np.ndarray:
    """Zero the 2 smallest of every 4 consecutive input channels at each kernel tap (TensorRT's layout)."""
    k, c, r, s = w.shape
    taps = w.transpose(0, 2, 3, 1).reshape(-1, c)
    return magnitude_nm(taps, 2, 4)[0].reshape(k, r, s, c).transpose(0, 3, 1, 2).copy()


def sparse_model(qdq_weight: bool = False, seed: int = 0) -> onnx.ModelProto:
    """x [N,32,16,16] → conv_sparse (2:4 weights) → Relu → conv_dense → Relu → GAP → Flatten → gemm_sparse
    (2:4 along K) → y [N,16]. ``qdq_weight``: conv_sparse reads its weight through a Q→DQ pair."""
    rng = np.random.default_rng(seed)
    w1 = _conv_2_4(rng.standard_normal((64, 32, 3, 3)).astype(np.float32) / 17)
    w2 = rng.standard_normal((64, 64, 3, 3)).astype(np.float32) / 24
    wg = magnitude_nm(rng.standard_normal((16, 64)).astype(np.float32) / 8, 2, 4)[0]
    inits = [
        numpy_helper.from_array(a, n)
        for a, n in ((w1, "w1"), (w2, "w2"), (wg, "wg"), (np.zeros(16, np.float32), "bg"))
    ]
    nodes = []
    w1_name = "w1"
    if qdq_weight:
        scale = (np.abs(w1).reshape(64, -1).max(1) / 127).astype(np.float32)
        inits += [
            numpy_helper.from_array(scale, "w1.scale"),
            numpy_helper.from_array(np.zeros(64, np.int8), "w1.zp"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["w1", "w1.scale", "w1.zp"], ["w1.q"], "w1_q", axis=0),
            helper.make_node("DequantizeLinear", ["w1.q", "w1.scale", "w1.zp"], ["w1.dq"], "w1_dq", axis=0),
        ]
        w1_name = "w1.dq"
    nodes += [
        helper.make_node("Conv", ["x", w1_name], ["c1"], "conv_sparse", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], "conv_dense", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], "relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], "gap"),
        helper.make_node("Flatten", ["g"], ["f"], "flatten"),
        helper.make_node("Gemm", ["f", "wg", "bg"], ["y"], "gemm_sparse", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "sparse",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


# ---- runs everywhere -------------------------------------------------------------------------------


def test_the_test_model_holds_what_it_claims():
    m = sparse_model()
    w = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    assert check_pattern(w["w1"], 1, 2, 4)["compliant"] and not check_pattern(w["w2"], 1, 2, 4)["compliant"]
    assert check_pattern(w["wg"], 1, 2, 4)["compliant"]
    x = np.random.default_rng(1).standard_normal((2, 32, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(
        run_ort(sparse_model(qdq_weight=True), {"x": x})[0], run_ort(m, {"x": x})[0], rtol=0.05, atol=0.02
    )  # the Q/DQ pair only rounds the weight


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_tensorrt_missing_is_one_line():
    assert tb.tensorrt_available() == "tensorrt is not installed (pip install 'onnxprune[tensorrt]')"


def _fake_cuda_python(monkeypatch, devices: int) -> None:
    ok = 0
    runtime = types.ModuleType("cuda.bindings.runtime")
    runtime.cudaError_t = types.SimpleNamespace(cudaSuccess=ok)
    runtime.cudaGetDeviceCount = lambda: (ok, devices)
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = runtime
    cuda = types.ModuleType("cuda")
    cuda.bindings = bindings
    for name, module in (("cuda", cuda), ("cuda.bindings", bindings), ("cuda.bindings.runtime", runtime)):
        monkeypatch.setitem(sys.modules, name, module)


def test_availability_needs_cuda_bindings_then_a_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "torch"):
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: importing it fails
    assert tb.tensorrt_available() == tb.NO_CUDA_BINDINGS
    _fake_cuda_python(monkeypatch, devices=0)
    assert tb.tensorrt_available() == "no CUDA GPU visible"
    _fake_cuda_python(monkeypatch, devices=1)
    assert tb.tensorrt_available() is None


def test_availability_falls_back_to_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime"):
        monkeypatch.setitem(sys.modules, name, None)
    torch = types.ModuleType("torch")
    torch.cuda = types.SimpleNamespace(is_available=lambda: False, device_count=lambda: 0)
    monkeypatch.setitem(sys.modules, "torch", torch)
    assert isinstance(tb.cuda_api(), tb.TorchCuda)
    assert tb.tensorrt_available() == tb.NO_GPU


def test_broken_tensorrt_install_is_reported(monkeypatch):
    def broken():
        raise OSError("libnvinfer.so.10: cannot open shared object file")

    monkeypatch.setattr(tb, "_import_tensorrt", broken)
    assert (
        tb.tensorrt_available()
        == "tensorrt does not import: libnvinfer.so.10: cannot open shared object file"
    )


def test_precision_from_the_graph_and_builder_flags():
    assert tb.precision_for(sparse_model()) == "fp16"
    assert tb.precision_for(sparse_model(qdq_weight=True)) == "int8"
    assert tb.precision_flags("fp32", False) == []
    assert tb.precision_flags("fp16", True) == ["FP16", "SPARSE_WEIGHTS"]
    assert tb.precision_flags("int8", False) == ["INT8", "FP16"]
    with pytest.raises(ValueError):
        tb.precision_flags("int4", False)


def test_2_4_weights_are_found_also_behind_qdq():
    assert tb.nodes_with_nm_weights(sparse_model()) == ["conv_sparse", "gemm_sparse"]
    assert tb.nodes_with_nm_weights(sparse_model(qdq_weight=True)) == ["conv_sparse", "gemm_sparse"]
    assert tb.nodes_with_nm_weights(synthetic.build("conv_chain")) == []


def test_asymmetric_qdq_gets_a_preset_hint():
    symmetric = sparse_model(qdq_weight=True)
    assert tb._asymmetric_qdq_hint(symmetric) == ""
    asymmetric = onnx.ModelProto()
    asymmetric.CopyFrom(symmetric)
    zp = next(t for t in asymmetric.graph.initializer if t.name == "w1.zp")
    zp.CopyFrom(numpy_helper.from_array(np.full(64, 128, np.uint8), "w1.zp"))  # the ort preset's uint8 style
    assert "--preset tensorrt" in tb._asymmetric_qdq_hint(asymmetric)
    assert tb._asymmetric_qdq_hint(sparse_model()) == ""


def _layer_info() -> str:
    """Engine inspector JSON as TensorRT 10 writes it at DETAILED verbosity (abridged)."""
    return json.dumps(
        {
            "Layers": [
                {
                    "Name": "conv_sparse + relu1",
                    "LayerType": "CaskConvolution",
                    "Metadata": "[ONNX Layer: conv_sparse]\x1e[ONNX Layer: relu1]",
                    "TacticName": "sm80_xmma_fprop_sparse_conv_interleaved_f16f16_f16f16_f16_"
                    "nhwckrsc_tilesize128x128x64",
                    "TacticValue": "0x1",
                },
                {
                    "Name": "conv_dense + relu2",
                    "LayerType": "CaskConvolution",
                    "Metadata": "[ONNX Layer: conv_dense]\x1e[ONNX Layer: relu2]",
                    "TacticName": "sm80_xmma_fprop_implicit_gemm_f16f16_f16f16_f16_"
                    "nhwckrsc_nhwc_tilesize64x64x64",
                },
                {
                    "Name": "gap",
                    "LayerType": "CaskPooling",
                    "Metadata": "[ONNX Layer: gap]",
                    "TacticName": "pooling",
                },
                {
                    "Name": "gemm_sparse",
                    "LayerType": "CaskGemmMatrixMultiply",
                    "Metadata": "[ONNX Layer: gemm_sparse | block (MyFunction)]",
                    "TacticName": "sm80_xmma_gemm_f16f16",
                },
            ],
            "Bindings": ["x", "y"],
        }
    )


def test_sparse_layers_maps_engine_layers_to_onnx_nodes():
    log = [
        "(Sparsity) Layers eligible for sparse math: conv_sparse + relu1, gemm_sparse",
        "(Sparsity) TRT inference plan picked sparse implementation for layers: conv_sparse + relu1",
    ]
    report = tb.sparse_layers(_layer_info(), sparse_model(), log)
    assert report["eligible"] == ["conv_sparse", "gemm_sparse"]
    assert report["eligible_tensorrt"] == ["conv_sparse + relu1", "gemm_sparse"]
    assert report["picked_tensorrt"] == ["conv_sparse + relu1"]
    assert report["sparse_tactic"] == ["conv_sparse + relu1"] and report["detailed"]
    assert [(r["layer"], r["onnx_nodes"], r["eligible"], r["sparse"]) for r in report["layers"]] == [
        ("conv_sparse + relu1", ["conv_sparse", "relu1"], True, True),
        ("gemm_sparse", ["gemm_sparse"], True, False),
    ]


def test_sparse_layers_with_names_only():
    names_only = {
        "Layers": ["conv_sparse + relu1", "conv_dense + relu2", "gemm_sparse"],
        "Bindings": ["x", "y"],
    }
    report = tb.sparse_layers(names_only, sparse_model())
    assert not report["detailed"] and report["sparse_tactic"] == []
    assert report["eligible_tensorrt"] is None and report["picked_tensorrt"] is None
    assert [r["layer"] for r in report["layers"] if r["eligible"]] == ["conv_sparse + relu1", "gemm_sparse"]


# ---- real engines: only where tensorrt imports and a GPU is visible --------------------------------


@pytest.fixture(scope="module")
def gpu():
    pytest.importorskip("tensorrt")
    reason = tb.tensorrt_available()
    if reason:
        pytest.skip(reason)


def test_build_and_time_an_fp16_engine(gpu):
    build = tb.build_engine(synthetic.build("conv_chain"), precision="fp16", batch=2)
    assert build.engine and build.flags == ["FP16"] and build.input_shapes == {"x": (2, 3, 16, 16)}
    layers = build.layer_info["Layers"]
    assert layers and all(isinstance(entry, dict) for entry in layers)  # DETAILED verbosity
    assert any(entry.get("TacticName") for entry in layers)
    stats = tb.time_engine(build, rounds=12, warmup=2)
    assert stats.runs == 12 and stats.batch == 2
    assert 0 < stats.min_ms <= stats.p50_ms <= stats.p99_ms
    assert stats.throughput == pytest.approx(2 * 1000 / stats.p50_ms)


def test_2_4_model_with_sparse_weights_reports_eligible_layers(gpu):
    model = sparse_model()
    build = tb.build_engine(model, precision="fp16", sparse=True, batch=8)
    assert "SPARSE_WEIGHTS" in build.flags
    report = tb.sparse_layers(build.layer_info, model, build.log)
    assert report["eligible"] == ["conv_sparse", "gemm_sparse"] and report["detailed"]
    holding = [r for r in report["layers"] if "conv_sparse" in r["onnx_nodes"]]
    assert len(holding) == 1 and holding[0]["eligible"]  # the engine layer running conv_sparse is found
    assert report["eligible_tensorrt"], (
        f"no '(Sparsity) Layers eligible' line in TensorRT's log: {build.log[-5:]}"
    )
    assert any("conv_sparse" in name for name in report["eligible_tensorrt"])
    for name in report["sparse_tactic"]:
        assert name in {r["layer"] for r in report["layers"]}


def test_int8_qdq_graph_builds_with_the_int8_flag(gpu):
    from onnxprune.calibration.readers import CalibrationSet

    from onnxprune.quantize import QuantizeOptions, quantize_model

    model = sparse_model()
    rng = np.random.default_rng(0)
    calib = CalibrationSet(
        calib={"x": rng.standard_normal((32, 32, 16, 16)).astype(np.float32)},
        holdout={"x": rng.standard_normal((8, 32, 16, 16)).astype(np.float32)},
        source="random",
    )
    int8, _ = quantize_model(
        model, calib, QuantizeOptions(preset="tensorrt", bias_correction=False, latency_runs=5)
    )
    assert tb.precision_for(int8) == "int8"
    build = tb.build_engine(int8, precision="int8", sparse=True, batch=4)
    assert build.flags == ["INT8", "FP16", "SPARSE_WEIGHTS"]
    assert tb.time_engine(build, rounds=5, warmup=1).runs == 5


def test_cli_tensorrt_backend(gpu, tmp_path, capsys):
    dense, sparse = tmp_path / "dense.onnx", tmp_path / "sparse.onnx"
    onnx.save(synthetic.build("conv_chain"), str(dense))
    onnx.save(sparse_model(), str(sparse))
    code, out, err = run_cli(
        capsys,
        "bench",
        dense,
        sparse,
        *"--backend tensorrt --batch 1,4 --rounds 5 --warmup 1 --json".split(),
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["backend"] == "tensorrt" and "tensorrt" in report["versions"]
    rows = report["results"]
    assert len(rows) == 4 and all(r["skipped"] is None and r["stats"]["runs"] == 5 for r in rows)
    assert [r["precision"] for r in rows] == ["fp16"] * 4
    assert [r["sparse"] for r in rows] == [False, True, False, True]  # auto: 2:4 weights found
    assert rows[1]["sparse_layers"]["eligible"] == ["conv_sparse", "gemm_sparse"]
    assert rows[0]["speedup"] == 1.0 and rows[0]["engine_mb"] > 0 and rows[0]["peak_mb"] is not None
    code, out, err = run_cli(capsys, "bench", dense, sparse, "--backend", "tensorrt", "--rounds", "5")
    assert code == 0, err
    assert "TensorRT (GPU time)" in out and "sparse tactics:" in out
