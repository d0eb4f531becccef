"""`compress --sparsity` (channel pruning + N:M in one command) and `analyze --sparsity`."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from onnxprune.cli import main
from tests.helpers import MODELS, run_cli, run_ort


@pytest.fixture(scope="module")
def sparse_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sparse")
    with pytest.raises(SystemExit) as info:
        main(
            [
                "compress",
                str(MODELS / "fmnist_resnet.onnx"),
                "--target",
                "1.5x",
                "--calib",
                str(MODELS / "fmnist_calib.npz"),
                "--calib-samples",
                "64",
                "--sparsity",
                "2:4",
                "-o",
                str(out),
                "--json",
            ]
        )
    assert info.value.code == 0
    return out


def test_compress_prunes_channels_then_applies_2_4(sparse_run, capsys):
    report = json.loads((sparse_run / "fmnist_resnet.report.json").read_text())
    assert report["pruned"]["macs"] <= report["dense"]["macs"] / 1.5
    for g in report["groups"]:  # widths rounded so that groups of 4 channels tile every pruned layer
        if g["kept"] < g["channels"]:
            assert g["kept"] % 4 == 0
    sp = report["sparsity"]
    assert sp["pattern"] == "2:4" and sp["eligible_layers"] >= 5
    model = onnx.load(report["output"])
    onnx.checker.check_model(model, full_check=True)
    x = np.load(MODELS / "fmnist_calib.npz")["input"][:4]
    assert np.isfinite(run_ort(model, {model.graph.input[0].name: x})[0]).all()
    code, out, _ = run_cli(capsys, "analyze", report["output"], "--sparsity", "2:4", "--json")
    assert code == 0
    checked = {r["node"]: r for r in json.loads(out)["sparsity"]["layers"]}
    for row in sp["layers"]:
        assert checked[row["node"]]["compliant"] == row["eligible"], row["node"]


def test_analyze_sparsity_of_a_dense_model(capsys):
    code, out, _ = run_cli(capsys, "analyze", MODELS / "fmnist_resnet.onnx", "--sparsity", "2:4", "--json")
    assert code == 0
    sp = json.loads(out)["sparsity"]
    assert sp["compliant_layers"] == 0 and sp["sparsity"] < 0.01


@pytest.mark.parametrize("cmd", ["analyze", "compress"])
@pytest.mark.parametrize("spec", ["5:4", "x:y", "1.5"])
def test_bad_sparsity_spec_exit_2(tmp_path, capsys, cmd, spec):
    extra = ["-o", tmp_path, "--calib", MODELS / "fmnist_calib.npz"] if cmd == "compress" else []
    code, _, err = run_cli(capsys, cmd, MODELS / "fmnist_resnet.onnx", "--sparsity", spec, *extra)
    assert code == 2 and "--sparsity" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_int8_output_of_the_chain_keeps_the_2_4_zeros(sparse_run):
    """Pruning + 2:4 + INT8 from one command: every weight Q/DQ pair is symmetric (zero point 0), so
    the zeros of the sparse float weights quantize to exactly 0."""
    from onnx import numpy_helper

    report = json.loads((sparse_run / "fmnist_resnet.report.json").read_text())
    int8 = onnx.load(report["int8"]["output"])
    onnx.checker.check_model(int8, full_check=True)
    inits = {t.name: numpy_helper.to_array(t) for t in int8.graph.initializer}
    pruned = {t.name: numpy_helper.to_array(t) for t in onnx.load(report["output"]).graph.initializer}
    sparse = [r["weight"] for r in report["sparsity"]["layers"] if r["eligible"]]
    checked = 0
    for node in int8.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] in sparse:
            w, scale, zp = (inits[n] for n in node.input[:3])
            assert not np.any(zp)
            np.testing.assert_array_equal(w == 0, pruned[node.input[0]] == 0)
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * w.ndim
            shape[axis] = -1
            q = np.clip(np.round(w / scale.reshape(shape)), -128, 127)
            assert np.all(q[w == 0] == 0)
            checked += 1
    assert checked == len(sparse)
    x = np.load(MODELS / "fmnist_calib.npz")["input"][:4]
    assert np.isfinite(run_ort(int8, {int8.graph.input[0].name: x})[0]).all()


def test_analyze_sparsity_reads_the_int8_weights_behind_dequantize(sparse_run, capsys):
    """The INT8 QDQ model is what goes to TensorRT: analyze must see its weights through DequantizeLinear
    (and the QAT-style Q→DQ pairs on float weights) and find the same 2:4 layers as in the float model."""
    report = json.loads((sparse_run / "fmnist_resnet.report.json").read_text())
    code, out, _ = run_cli(capsys, "analyze", report["int8"]["output"], "--sparsity", "2:4", "--json")
    assert code == 0
    rows = json.loads(out)["sparsity"]["layers"]
    eligible = [r["node"] for r in report["sparsity"]["layers"] if r["eligible"]]
    compliant = [r["node"] for r in rows if r["compliant"]]
    assert eligible and sorted(compliant) == sorted(eligible)
    assert len(rows) == len(report["sparsity"]["layers"])  # every weight layer seen, dense ones too


def test_sparsity_alone_keeps_every_channel(tmp_path, capsys):
    code, out, _ = run_cli(
        capsys,
        "compress",
        MODELS / "fmnist_resnet.onnx",
        "--target",
        "1x",
        "--calib",
        MODELS / "fmnist_calib.npz",
        "--calib-samples",
        "64",
        "--sparsity",
        "0.5",
        "--no-int8",
        "-o",
        tmp_path,
        "--json",
    )
    assert code == 0
    report = json.loads(out)
    assert report["pruned"]["macs"] == report["dense"]["macs"] and report["int8"] is None
    assert all(g["kept"] == g["channels"] for g in report["groups"])
    assert all(r["sparsity"] >= 0.5 for r in report["sparsity"]["layers"] if r["eligible"])
