"""`onnxprune analyze` on every synthetic graph, a Paddle-style graph, external data and the shipped model."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnxprune.passes.normalize import normalize

from models import synthetic
from onnxprune.analyze import analyze_model
from onnxprune.cli import main


def run_cli(capsys, *args):
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return info.value.code, out, err


@pytest.mark.parametrize("name", synthetic.names())
def test_analyze_json_every_synthetic_graph(tmp_path, capsys, name):
    path = tmp_path / f"{name}.onnx"
    onnx.save_model(synthetic.build(name), str(path))
    code, out, err = run_cli(capsys, "analyze", str(path), "--json")
    assert code == 0, err
    a = json.loads(out)
    assert a["totals"]["macs"] > 0 and a["totals"]["params"] > 0 and not a["totals"]["unmeasured"]
    assert a["totals"]["macs"] == sum(layer["macs"] or 0 for layer in a["layers"])
    assert abs(sum(layer["share"] for layer in a["layers"]) - 1) < 1e-9
    assert all(layer["output_shape"] and min(layer["output_shape"]) > 0 for layer in a["layers"])


def test_paddle_style_constant_weights_same_cost_as_initializers(tmp_path):
    plain = tmp_path / "plain.onnx"
    paddle = tmp_path / "paddle.onnx"
    onnx.save_model(synthetic.build("paddle_convnet", opset=11), str(plain))
    onnx.save_model(synthetic.paddle_style_model(), str(paddle))
    a, b = analyze_model(plain), analyze_model(paddle)
    assert b["normalization"]["constants_lowered"] > 0 and b["normalization"]["opset"] == [11, 13]
    assert (a["totals"]["macs"], a["totals"]["params"]) == (b["totals"]["macs"], b["totals"]["params"])
    # parameters are counted after BatchNorm folding: every float initializer of the normalized graph once
    normalized, _ = normalize(synthetic.build("paddle_convnet"))
    assert a["totals"]["params"] == sum(
        int(np.prod(t.dims)) for t in normalized.graph.initializer if t.data_type == 1
    )


def test_analyze_table_and_external_data(tmp_path, capsys):
    path = synthetic.with_external_data(synthetic.build("residual_add"), tmp_path / "ext.onnx")
    code, out, err = run_cli(capsys, "analyze", str(path))
    assert code == 0, err
    assert "b2.conv1" in out and "MACs" in out and "BatchNorm folded" in out


def test_batch_from_input_shape_scales_macs(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save_model(synthetic.build("transformer_block"), str(path))
    one = analyze_model(path)
    seq = one["input_shapes"]
    ((name, shape),) = seq.items()
    four = analyze_model(path, {name: (4, *shape[1:])})
    assert four["totals"]["macs"] == 4 * one["totals"]["macs"]


def test_dynamic_non_batch_dim_needs_input_shape(tmp_path, capsys):
    model = synthetic.build("transformer_block")
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "S"
    path = tmp_path / "dyn.onnx"
    onnx.save_model(model, str(path))
    code, _, err = run_cli(capsys, "analyze", str(path))
    assert code == 2 and "dynamic dim 1 ('S')" in err and "--input-shape" in err
    s = model.graph.input[0].type.tensor_type.shape.dim
    code, out, err = run_cli(
        capsys, "analyze", str(path), "--json", "--input-shape", f"x:1x12x{s[2].dim_value}"
    )
    assert code == 0, err


def test_shipped_fmnist(fmnist_path, capsys):
    code, out, err = run_cli(capsys, "analyze", str(fmnist_path), "--json")
    assert code == 0, err
    a = json.loads(out)
    ops = a["op_counts"]
    assert "BatchNormalization" not in ops and {"Conv", "Add", "Concat", "Gemm"} <= set(ops)
    assert a["normalization"]["batchnorm_folded"] >= 3
