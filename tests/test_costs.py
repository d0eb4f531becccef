"""Cost model against hand counts on tiny graphs built right here."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.costs import model_cost
from onnxprune.shapes import parse_input_shapes


def _model(nodes, inputs, outputs, inits, opset=17):
    graph = helper.make_graph(
        nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()]
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def _x(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _w(*shape):
    return np.ones(shape, np.float32)


def test_conv_grouped_depthwise_hand_count():
    # x[1,8,16,16] → conv 3x3 (8→16, pad 1) → grouped 3x3 g=4 (16→16) → depthwise 3x3 stride 2 (16→16)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["y1"], name="full", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["y1", "w2"], ["y2"], name="grouped", pads=[1, 1, 1, 1], group=4),
        helper.make_node(
            "Conv", ["y2", "w3"], ["y3"], name="dw", pads=[1, 1, 1, 1], group=16, strides=[2, 2]
        ),
    ]
    inits = {"w1": _w(16, 8, 3, 3), "b1": _w(16), "w2": _w(16, 4, 3, 3), "w3": _w(16, 1, 3, 3)}
    cost = model_cost(_model(nodes, [_x("x", ["N", 8, 16, 16])], [_x("y3", [None] * 4)], inits))
    by = {n.name: n for n in cost.nodes}
    assert by["full"].macs == 16 * 16 * 16 * 8 * 9
    assert by["grouped"].macs == 16 * 16 * 16 * (16 // 4) * 9
    assert by["dw"].macs == 16 * 8 * 8 * 1 * 9
    assert by["full"].params == 16 * 8 * 9 + 16
    assert by["dw"].weight_shape == [16, 1, 3, 3] and by["dw"].output_shape == [1, 16, 8, 8]
    assert cost.macs == sum(n.macs for n in cost.nodes)
    # batch scales MACs linearly, params do not change
    cost4 = model_cost(
        _model(nodes, [_x("x", ["N", 8, 16, 16])], [_x("y3", [None] * 4)], inits),
        parse_input_shapes(["x:4x8x16x16"]),
    )
    assert cost4.macs == 4 * cost.macs and cost4.params == cost.params


def test_gemm_transposes_and_matmul_batched_and_attention():
    nodes = [
        helper.make_node("Gemm", ["x", "wa", "ba"], ["h"], name="gemm_tb", transB=1),  # [2,32]x[64,32]^T
        helper.make_node("Gemm", ["h", "wb"], ["g"], name="gemm_plain"),  # [2,64]x[64,24]
        helper.make_node("Reshape", ["g", "shape"], ["t"], name="to_tokens"),  # [2,4,6]
        helper.make_node("MatMul", ["t", "wm"], ["q"], name="mm_weight"),  # [2,4,6]x[6,10]
        helper.make_node("Transpose", ["q"], ["qt"], name="tr", perm=[0, 2, 1]),  # [2,10,4]
        helper.make_node("MatMul", ["q", "qt"], ["att"], name="mm_attention"),  # [2,4,10]x[2,10,4]
    ]
    inits = {
        "wa": _w(64, 32),
        "ba": _w(64),
        "wb": _w(64, 24),
        "wm": _w(6, 10),
        "shape": np.array([2, 4, 6], np.int64),
    }
    cost = model_cost(_model(nodes, [_x("x", [2, 32])], [_x("att", [None] * 3)], inits))
    by = {n.name: n for n in cost.nodes}
    assert by["gemm_tb"].macs == 2 * 64 * 32
    assert by["gemm_plain"].macs == 2 * 24 * 64
    assert by["mm_weight"].macs == 2 * 4 * 10 * 6 and by["mm_weight"].params == 60
    assert by["mm_attention"].macs == 2 * 4 * 4 * 10 and by["mm_attention"].params == 0
    assert by["mm_attention"].weight_shape is None
    assert by["to_tokens"].params == 0  # int64 shape constants are not parameters
    assert cost.params == 64 * 32 + 64 + 64 * 24 + 60


def test_conv_transpose_and_lstm_hand_count():
    nodes = [
        helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up", strides=[2, 2], group=2),
        helper.make_node("LSTM", ["s", "W", "R", "B"], ["ys", "yh"], name="lstm", hidden_size=5),
    ]
    inits = {"w": _w(4, 3, 2, 2), "W": _w(1, 20, 7), "R": _w(1, 20, 5), "B": _w(1, 40)}
    model = _model(
        nodes, [_x("x", [1, 4, 6, 6]), _x("s", [9, 2, 7])], [_x("y", [None] * 4), _x("ys", [None] * 4)], inits
    )
    by = {n.name: n for n in model_cost(model).nodes}
    assert by["up"].macs == 4 * 6 * 6 * 3 * 2 * 2  # every input pixel scatters into (Cout/g)·k·k outputs
    assert by["up"].output_shape == [1, 6, 12, 12]
    assert by["lstm"].macs == 9 * 2 * 20 * (7 + 5)
    assert by["lstm"].params == 20 * 7 + 20 * 5 + 40


def test_shared_weight_counted_once():
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["a"], name="m1"),
        helper.make_node("MatMul", ["a", "w"], ["b"], name="m2"),
    ]
    cost = model_cost(_model(nodes, [_x("x", [3, 8])], [_x("b", [None] * 2)], {"w": _w(8, 8)}))
    assert cost.params == 64 and cost.macs == 2 * 3 * 8 * 8
