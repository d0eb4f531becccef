"""`onnxprune quantize` and the INT8 QDQ library: zeros stay zero, preset structure, Constant-node weights,
bias correction, exit codes, outputs, and no stray files."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnxprune.calibration.readers import CalibrationSet, load_calibration

import onnxprune.quantize as quantize_mod
from models import synthetic
from onnxprune.cli import main
from onnxprune.quantize import QuantizeOptions, quantize_model
from onnxprune.quantize_tuning import _fallback_counts, channel_means
from tests.helpers import MODELS, digest, float16_copy, run_cli, run_ort

MODEL = MODELS / "fmnist_resnet.onnx"
CALIB = MODELS / "fmnist_calib.npz"


def random_calib(model: onnx.ModelProto, n: int = 48, seed: int = 0) -> CalibrationSet:
    """Calibration (first 2/3) and held-out (last 1/3) slices of N(0,1) inputs for a synthetic graph."""
    feeds = synthetic.random_inputs(model, batch=n, seed=seed)
    cut = 2 * n // 3
    return CalibrationSet(
        {k: v[:cut] for k, v in feeds.items()}, {k: v[cut:] for k, v in feeds.items()}, "random"
    )


def dequantized_weights(
    qdq: onnx.ModelProto, feeds: dict[str, np.ndarray]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """float weight initializer -> (float weight, weight after its Q -> DQ pair as onnxruntime computes
    it)."""
    inits = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    q_of = {
        n.output[0]: n.input[0]
        for n in qdq.graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] in inits
    }
    dq = {
        n.output[0]: q_of[n.input[0]]
        for n in qdq.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in q_of
    }
    probe = onnx.ModelProto()
    probe.CopyFrom(qdq)
    probe.graph.output.extend(helper.make_empty_tensor_value_info(t) for t in dq)
    outs = run_ort(probe, feeds)[len(qdq.graph.output) :]
    return {w: (inits[w], got) for w, got in zip(dq.values(), outs, strict=True)}


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """One `onnxprune quantize --json` run on a copy of the shipped model, from an empty working directory."""
    root = tmp_path_factory.mktemp("quant")
    model = root / "in" / "m.onnx"
    model.parent.mkdir()
    model.write_bytes(MODEL.read_bytes())
    cwd = root / "cwd"
    cwd.mkdir()
    before, old = digest(model), os.getcwd()
    os.chdir(cwd)
    try:
        with pytest.raises(SystemExit) as info:
            main(
                [
                    "quantize",
                    str(model),
                    "--calib",
                    str(CALIB),
                    "--calib-samples",
                    "128",
                    "-o",
                    str(root / "out"),
                    "--json",
                ]
            )
    finally:
        assert os.getcwd() == str(cwd)  # the quantizer's scratch cwd was restored
        os.chdir(old)
    return {"code": info.value.code, "model": model, "digest": before, "cwd": cwd, "out": root / "out"}


def test_cli_writes_checked_runnable_model_and_report(cli_run, capsys):
    assert cli_run["code"] == 0
    out = cli_run["out"]
    int8_path = out / "m.int8.onnx"
    onnx.checker.check_model(str(int8_path), full_check=True)
    int8 = onnx.load(str(int8_path))
    x = np.load(CALIB)["input"][300:364]
    got = run_ort(int8, {"input": x})[0]
    want = run_ort(onnx.load(str(MODEL)), {"input": x})[0]
    assert got.shape == (64, 10) and np.mean(got.argmax(1) == want.argmax(1)) >= 0.95
    ops = {n.op_type for n in int8.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    report = json.loads((out / "m.int8.report.json").read_text())
    for key in (
        "preset",
        "calib_method",
        "size_bytes",
        "fidelity",
        "latency_ms",
        "layers",
        "warnings",
        "versions",
    ):
        assert key in report
    assert report["layers"]["quantized"] == report["layers"]["weight_layers"] == 9
    assert report["size_bytes"]["int8_weights_stored"] * 2.5 < report["size_bytes"]["fp32"]
    assert report["latency_ms"]["fp32"]["median"] > 0 and report["latency_ms"]["int8"]["median"] > 0
    fid = report["fidelity"]["int8_vs_fp32"]["logits"]
    assert fid["samples"] == 256 and fid["top1_agreement"] >= 0.95


def test_cli_json_parses_input_untouched_no_stray_files(cli_run, capsys):
    assert cli_run["code"] == 0
    assert digest(cli_run["model"]) == cli_run["digest"]
    assert list(cli_run["model"].parent.iterdir()) == [cli_run["model"]]
    assert list(cli_run["cwd"].iterdir()) == []  # no <uuid>.data, sym_shape_infer_temp.onnx, ...
    assert sorted(p.name for p in cli_run["out"].iterdir()) == ["m.int8.onnx", "m.int8.report.json"]


def test_cli_json_stdout_is_pure_json(tmp_path, capsys):
    code, out, err = run_cli(
        capsys,
        "quantize",
        MODEL,
        "--calib",
        CALIB,
        "--calib-samples",
        "64",
        "--calib-method",
        "percentile",
        "--no-bias-correction",
        "-o",
        tmp_path,
        "--json",
    )
    assert code == 0, err
    report = json.loads(out)  # the histogram calibrators print progress: it must not reach stdout
    assert report["calib_method"] == "percentile" and report["bias_correction"] is None


def test_mismatched_calibration_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, input=np.zeros((8, 1, 32, 32), np.float32))
    code, _, err = run_cli(capsys, "quantize", MODEL, "--calib", bad, "-o", tmp_path / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "'input'" in err and "expected shape [N, 1, 28, 28]" in err and "got [8, 1, 32, 32]" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (["--max-drop", "-0.1"], "--max-drop"),
        (["--preset", "tflite"], "--preset"),
    ],
)
def test_bad_arguments_exit_2(tmp_path, capsys, args, words):
    code, _, err = run_cli(capsys, "quantize", MODEL, "--calib", CALIB, "-o", tmp_path, *args)
    assert code == 2 and words in err


def test_missing_calib_is_usage_error(tmp_path, capsys):
    code, _, err = run_cli(capsys, "quantize", MODEL, "-o", tmp_path)
    assert code == 2 and "--calib" in err


def test_unreachable_gate_exit_4_still_writes(tmp_path, capsys):
    """Calibrated on inputs 100x smaller than the held-out ones, every activation range clips: even with all
    weight layers in float, the quantized Add/Concat/pool inputs keep the gate out of reach."""
    data = np.load(CALIB)["input"][:192].copy()
    data[:32] *= 0.01
    skewed = tmp_path / "skewed.npz"
    np.savez(skewed, input=data)
    code, _, err = run_cli(
        capsys,
        "quantize",
        MODEL,
        "--calib",
        skewed,
        "--calib-samples",
        "32",
        "--max-drop",
        "0.01",
        "-o",
        tmp_path / "out",
    )
    assert code == 4 and "quality gate failed" in err and len(err.strip().splitlines()) == 1
    report = json.loads((tmp_path / "out" / "fmnist_resnet.int8.report.json").read_text())
    assert report["quality_gate"]["passed"] is False
    assert str(report["layers"]["weight_layers"]) in report["fallback"]["tried"]  # tried every layer in float
    onnx.checker.check_model(str(tmp_path / "out" / "fmnist_resnet.int8.onnx"), full_check=True)


def _prune_like(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """fmnist with whole output channels zeroed in one conv (structured pruning) and a 2:4 pattern over the
    input channels of every other 3x3 conv (2 of every 4 input channels zero); returns the zero masks."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    masks = {}
    convs = [n for n in out.graph.node if n.op_type == "Conv"]
    inits = {t.name: t for t in out.graph.initializer}
    for i, node in enumerate(convs):
        t = inits[node.input[1]]
        w = numpy_helper.to_array(t).copy()
        if i == 1:
            w[::3] = 0.0
        elif w.shape[1] >= 4 and w.shape[2] == 3:
            w[:, np.arange(w.shape[1]) % 4 < 2] = 0.0
        else:
            continue
        t.CopyFrom(numpy_helper.from_array(w, t.name))
        masks[t.name] = w == 0
    return out, masks


def test_pruned_and_2_4_zeros_stay_exactly_zero():
    model, masks = _prune_like(onnx.load(str(MODEL)))
    assert len(masks) >= 3
    calib = load_calibration(str(CALIB), model, samples=64, holdout=32)
    int8, report = quantize_model(model, calib, QuantizeOptions(latency_runs=0))
    weights = dequantized_weights(int8, {"input": calib.holdout["input"][:2]})
    assert len(weights) == report["layers"]["quantized"] == 9
    zero_after = nonzero_before = zero_both = 0
    for w, dq in weights.values():
        assert np.all(dq[w == 0] == 0.0)  # exactly zero, not just small
        zero_both += int(np.sum(w == 0))
        nonzero_before += int(np.sum(w != 0))
        zero_after += int(np.sum((dq == 0) & (w != 0)))
        scale = (
            np.max(np.abs(w).reshape(len(w), -1), axis=1) / 127 if w.ndim == 4 else np.max(np.abs(w)) / 127
        )
        err = np.abs(w - dq).reshape(len(w), -1) if w.ndim == 4 else np.abs(w - dq)
        assert np.all(err <= (scale[:, None] if w.ndim == 4 else scale) * 0.5 + 1e-7)
    # the normalized model folds BN into the weights, so the masks reappear as the same zero pattern
    assert zero_both >= sum(int(m.sum()) for m in masks.values())
    assert zero_after < 0.05 * nonzero_before  # the quantizer did not just zero everything


def _pair_scale(model: onnx.ModelProto, tensor: str) -> float:
    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    dq = producer[tensor]
    assert dq.op_type == "DequantizeLinear", tensor
    return float(inits[dq.input[1]])


@pytest.mark.parametrize("graph", ["residual_add", "dense_concat"])
def test_tensorrt_preset_zero_points_and_shared_scales(graph):
    model = synthetic.build(graph)
    int8, report = quantize_model(
        model, random_calib(model), QuantizeOptions(preset="tensorrt", latency_runs=0)
    )
    onnx.checker.check_model(int8, full_check=True)
    inits = {t.name: numpy_helper.to_array(t) for t in int8.graph.initializer}
    qdq = [n for n in int8.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq and all(np.all(inits[n.input[2]] == 0) for n in qdq if len(n.input) > 2)
    assert all(
        inits[n.input[2]].dtype == np.int8
        for n in qdq
        if len(n.input) > 2 and inits[n.input[2]].dtype != np.int32
    )
    joins = [n for n in int8.graph.node if n.op_type in ("Add", "Concat")]
    assert joins
    for node in joins:
        scales = {_pair_scale(int8, t) for t in node.input}
        assert len(scales) == 1, (node.name, scales)
    # QAT-ready: every weight is a float initializer behind its own Q -> DQ pair
    weights = dequantized_weights(int8, synthetic.random_inputs(model, batch=1))
    assert len(weights) == report["layers"]["quantized"] > 0


def test_ort_preset_scales_differ_across_add_inputs():
    """The shared scales above come from the preset, not from the graph: `ort` calibrates each input alone."""
    model = synthetic.build("residual_add")
    int8, _ = quantize_model(model, random_calib(model), QuantizeOptions(latency_runs=0))
    add = next(n for n in int8.graph.node if n.op_type == "Add")
    assert len({_pair_scale(int8, t) for t in add.input}) == 2


@pytest.mark.parametrize("opset", [11, 13])
def test_constant_node_weights_quantize(opset):
    model = synthetic.paddle_style_model(opset=opset)
    assert not model.graph.initializer and any(n.op_type == "Constant" for n in model.graph.node)
    calib = random_calib(model)
    int8, report = quantize_model(model, calib, QuantizeOptions(latency_runs=0))
    onnx.checker.check_model(int8, full_check=True)
    assert report["layers"]["quantized"] == report["layers"]["weight_layers"] >= 6
    assert report["preprocessing"]["normalization"]["constants_lowered"] > 0
    out = run_ort(int8, calib.holdout)[0]
    want = run_ort(model, calib.holdout)[0]
    cos = np.sum(out * want) / (np.linalg.norm(out) * np.linalg.norm(want))
    assert cos > 0.98


def test_pre_process_failure_falls_back_with_warning(monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("Incomplete symbolic shape inference")

    monkeypatch.setattr(quantize_mod, "quant_pre_process", fail)
    model = synthetic.paddle_style_model()
    int8, report = quantize_model(model, random_calib(model), QuantizeOptions(latency_runs=0))
    onnx.checker.check_model(int8, full_check=True)
    assert report["preprocessing"]["shape_inference"].startswith("onnx shape inference")
    assert any("Incomplete symbolic shape inference" in w for w in report["warnings"])


def _one_conv(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = (rng.normal(size=(16, 8, 3, 3)) * 0.2).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1])],
        "one_conv",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 8, 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 16, 8, 8])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.zeros(16, np.float32), "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_bias_correction_removes_mean_output_error():
    """Post-ReLU-like inputs (all positive) turn per-channel weight rounding into a mean output shift;
    bias correction must remove most of it."""
    model = _one_conv()
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, size=(96, 8, 8, 8)).astype(np.float32)
    calib = CalibrationSet({"x": x[:64]}, {"x": x[64:]}, "uniform")
    want = channel_means(model, {"y": "y"}, calib.batches("holdout", 16))["y"]

    def mean_error(bias_correction: bool) -> float:
        int8, _ = quantize_model(
            model, calib, QuantizeOptions(bias_correction=bias_correction, latency_runs=0)
        )
        got = channel_means(int8, {"y": "y"}, calib.batches("holdout", 16))["y"]
        return float(np.mean(np.abs(got - want)))

    plain, corrected = mean_error(False), mean_error(True)
    assert plain > 1e-4 and corrected < 0.3 * plain


def test_graph_outputs_stay_float():
    model = synthetic.build("residual_add")
    int8, _ = quantize_model(model, random_calib(model), QuantizeOptions(latency_runs=0))
    producer = {o: n.op_type for n in int8.graph.node for o in n.output}
    assert all(producer[o.name] != "DequantizeLinear" for o in int8.graph.output)


def test_fallback_counts_grow_then_end_at_all_layers():
    assert _fallback_counts(0) == []
    assert _fallback_counts(1) == [1]
    counts = _fallback_counts(53)
    assert counts[:4] == [1, 2, 3, 4] and counts[-1] == 53 and counts == sorted(set(counts))


@pytest.mark.parametrize("opset", [11, 17])
@pytest.mark.parametrize("graph", synthetic.names())
def test_every_synthetic_graph_quantizes_to_a_valid_runnable_model(graph, opset):
    """onnxruntime's quantizer fails on some valid graphs (a [1, N] Gemm bias; grouped ConvTranspose, whose
    per-channel scales it sizes per group): prepare reshapes the one and keeps the other in float, saying
    so."""
    model = synthetic.build(graph, opset=opset)
    calib = random_calib(model)
    int8, report = quantize_model(model, calib, QuantizeOptions(latency_runs=0))
    onnx.checker.check_model(int8, full_check=True)
    out = run_ort(int8, calib.holdout)
    assert all(np.all(np.isfinite(o)) for o in out)
    grouped = [
        n.name
        for n in model.graph.node
        if n.op_type == "ConvTranspose" and any(a.name == "group" and a.i > 1 for a in n.attribute)
    ]
    assert bool(grouped) == any("grouped ConvTranspose" in w for w in report["warnings"])


def test_percentile_calibration_clips_at_the_project_percentile(monkeypatch):
    """`percentile` asks onnxruntime's calibrator for PERCENTILE (not its 99.999 default) and the preset's
    symmetry."""
    import onnxprune.quantize as q

    seen = {}
    real = q.create_calibrator

    def spy(*args, **kwargs):
        seen.update(kwargs.get("extra_options", {}))
        return real(*args, **kwargs)

    monkeypatch.setattr(q, "create_calibrator", spy)
    model = synthetic.build("residual_add")
    quantize_model(model, random_calib(model), QuantizeOptions(calib_method="percentile", latency_runs=0))
    assert seen == {"symmetric": False, "percentile": q.PERCENTILE} and q.PERCENTILE == 99.99


def test_attention_graphs_quantize_weight_layers_only():
    """A graph with MatMuls of two activations (attention) gets Q/DQ on its weight layers' weights and inputs
    only (their outputs stay float), with a warning; a CNN keeps its INT8 islands (Add inputs quantized
    too)."""
    from onnxprune.quantize import attention_matmuls

    model = synthetic.build("transformer_block")
    assert attention_matmuls(model)
    int8, report = quantize_model(model, random_calib(model), QuantizeOptions(latency_runs=0))
    onnx.checker.check_model(int8, full_check=True)
    assert any("attention graph" in w for w in report["warnings"])
    assert report["layers"]["quantized"] == report["layers"]["weight_layers"] > 0
    dq_out = {n.output[0] for n in int8.graph.node if n.op_type == "DequantizeLinear"}
    q_in = {n.input[0] for n in int8.graph.node if n.op_type == "QuantizeLinear"}
    for node in int8.graph.node:
        if node.op_type in ("Softmax", "LayerNormalization") or node.name in attention_matmuls(model):
            assert not any(i in dq_out for i in node.input), node.name  # computed in float
        if node.op_type in ("MatMul", "Gemm") and node.name not in attention_matmuls(model):
            assert node.input[1] in dq_out and node.input[0] in dq_out  # INT8 weight and input
            assert node.output[0] not in q_in  # output float: the bias Add and residual stay exact

    cnn = synthetic.build("residual_add")
    assert not attention_matmuls(cnn)
    int8, report = quantize_model(cnn, random_calib(cnn), QuantizeOptions(latency_runs=0))
    dq_out = {n.output[0] for n in int8.graph.node if n.op_type == "DequantizeLinear"}
    assert any(n.op_type == "Add" and any(i in dq_out for i in n.input) for n in int8.graph.node)
    assert not any("attention graph" in w for w in report["warnings"])


def test_float16_model_gets_an_int8_copy_from_its_exact_float32_upcast(tmp_path, capsys):
    """onnxruntime's quantizer makes an invalid graph around float16 tensors (it crashed as an 'unexpected'
    error); compress and quantize now quantize the float32 widening and say so."""
    model = float16_copy(onnx.load(str(MODEL)))
    path = tmp_path / "half.onnx"
    onnx.save(model, str(path))
    before = digest(path)
    x = np.load(CALIB)["input"][256:384]
    dense = run_ort(model, {"input": x.astype(np.float16)})[0].astype(np.float32)
    for cmd, out in (
        ("quantize", tmp_path / "q" / "half.int8.onnx"),
        ("compress", tmp_path / "c" / "half.pruned.int8.onnx"),
    ):
        code, _, err = run_cli(
            capsys,
            cmd,
            path,
            "--calib",
            CALIB,
            "-o",
            out.parent,
            "--json",
            *(("--target", "1.2x") if cmd == "compress" else ()),
        )
        assert code == 0, err
        int8 = onnx.load(str(out))
        onnx.checker.check_model(int8, full_check=True)
        assert int8.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        got = run_ort(int8, {"input": x})[0]
        assert np.mean(got.argmax(1) == dense.argmax(1)) > 0.9, cmd
    report = json.loads((tmp_path / "c" / "half.report.json").read_text())
    assert any("float16 model" in w for w in report["int8"]["warnings"])
    assert digest(path) == before
