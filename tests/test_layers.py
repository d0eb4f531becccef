"""LinearLayer's matrix view: W · features(x) + b reproduces every Conv/Gemm/MatMul output exactly."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnxprune.passes.normalize import normalize

from models import synthetic
from onnxprune.layers import initializer_dict, linear_layers
from tests.helpers import run_ort

GRAPHS = ["conv_chain", "grouped_conv", "depthwise_se", "flatten_gemm", "reshape_matmul", "residual_add",
          "mlp_gemm", "transformer_block", "paddle_convnet"]


@pytest.mark.parametrize("name", GRAPHS)
def test_matrix_view_reproduces_outputs(name):
    model, _ = normalize(synthetic.build(name))
    layers = linear_layers(model)
    assert layers
    inits = initializer_dict(model)
    tapped = onnx.ModelProto()
    tapped.CopyFrom(model)
    have = {o.name for o in tapped.graph.output}
    taps = sorted({t for lay in layers.values() for t in (lay.input, lay.output)} - have)
    tapped.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in taps)
    values = dict(zip([o.name for o in tapped.graph.output], run_ort(tapped, synthetic.random_inputs(model, 2)),
                      strict=True))
    for lay in layers.values():
        w = lay.matrix(inits[lay.weight]).astype(np.float64)
        y = np.matmul(lay.features(values[lay.input].astype(np.float64)), np.swapaxes(w, 1, 2))  # [g, rows, out/g]
        out = values[lay.output]
        if lay.op == "Conv":
            ref = np.moveaxis(out, 1, -1).reshape(-1, lay.groups, out.shape[1] // lay.groups).transpose(1, 0, 2)
            bias = inits[lay.bias].reshape(lay.groups, 1, -1) if lay.bias else 0.0
        else:
            ref = out.reshape(1, -1, out.shape[-1])
            bias = inits[lay.bias].reshape(1, 1, -1) if lay.bias else 0.0
        np.testing.assert_allclose(y + bias, ref, atol=1e-5, err_msg=lay.node)
