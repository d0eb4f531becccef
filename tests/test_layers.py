"""LinearLayer's matrix view: W · features(x) + b reproduces every Conv/Gemm/MatMul output exactly."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnxprune.passes.normalize import normalize

from models import synthetic
from onnxprune.layers import initializer_dict, linear_layers, rectified_outputs, residual_partners
from onnxprune.shapes import infer_shapes
from tests.helpers import run_ort

GRAPHS = [
    "conv_chain",
    "grouped_conv",
    "depthwise_se",
    "flatten_gemm",
    "reshape_matmul",
    "residual_add",
    "mlp_gemm",
    "transformer_block",
    "paddle_convnet",
]


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
    values = dict(
        zip(
            [o.name for o in tapped.graph.output],
            run_ort(tapped, synthetic.random_inputs(model, 2)),
            strict=True,
        )
    )
    for lay in layers.values():
        w = lay.matrix(inits[lay.weight]).astype(np.float64)
        y = np.matmul(
            lay.features(values[lay.input].astype(np.float64)), np.swapaxes(w, 1, 2)
        )  # [g, rows, out/g]
        out = values[lay.output]
        if lay.op == "Conv":
            ref = (
                np.moveaxis(out, 1, -1).reshape(-1, lay.groups, out.shape[1] // lay.groups).transpose(1, 0, 2)
            )
            bias = inits[lay.bias].reshape(lay.groups, 1, -1) if lay.bias else 0.0
        else:
            ref = out.reshape(1, -1, out.shape[-1])
            bias = inits[lay.bias].reshape(1, 1, -1) if lay.bias else 0.0
        np.testing.assert_allclose(y + bias, ref, atol=1e-5, err_msg=lay.node)
        if (
            lay.groups == 1 and not lay.weight_is_a
        ):  # output_rows lines output tensors up with the feature rows
            np.testing.assert_allclose((y + bias)[0], lay.output_rows(out), atol=1e-5, err_msg=lay.node)


@pytest.mark.parametrize("name", GRAPHS)
def test_feature_gram_is_the_gram_matrix_of_the_feature_rows(name):
    """Every layer's Σ f fᵀ (``feature_gram``: on the NCHW layout for pointwise convs on large maps,
    transposed
    rows otherwise) equals that of ``features``, row count included, on the taps the statistics pass reads."""
    model, _ = normalize(synthetic.build(name))
    layers = linear_layers(model)
    values = _tapped_values(model, {lay.tap for lay in layers.values()})
    paths = set()
    for lay in layers.values():
        x = values[lay.tap]
        rows = lay.features(x.astype(np.float64))
        gram, n = lay.feature_gram(x)
        assert gram.dtype == np.float64 and n == rows.shape[1], lay.node
        np.testing.assert_allclose(
            gram, np.matmul(np.swapaxes(rows, 1, 2), rows), rtol=1e-10, atol=1e-10, err_msg=lay.node
        )
        paths.add(
            lay.op == "Conv"
            and lay.groups == 1
            and x.ndim > 2
            and x[0, 0].size >= 2 * x.shape[1]
            and all(k == 1 for k in lay.kernel)
            and all(s == 1 for s in lay.strides)
        )
    if name == "depthwise_se":
        assert paths == {True, False}  # both ways of taking it are exercised


def _tapped_values(model: onnx.ModelProto, taps: set[str]) -> dict[str, np.ndarray]:
    tapped = onnx.ModelProto()
    tapped.CopyFrom(model)
    have = {o.name for o in tapped.graph.output}
    tapped.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in sorted(taps - have))
    return dict(
        zip(
            [o.name for o in tapped.graph.output],
            run_ort(tapped, synthetic.random_inputs(model, 3)),
            strict=True,
        )
    )


@pytest.mark.parametrize("name", ["depthwise_se", "residual_add", "paddle_convnet"])
def test_pooled_layers_read_every_position_of_the_pooled_map(name):
    """A layer after GlobalAveragePool taps the map before the pooling: one feature row per position, and the
    mean over a sample's positions of W·row + b is the layer's output (W·mean(x) = mean(W·x))."""
    model, _ = normalize(synthetic.build(name))
    pooled = {n: lay for n, lay in linear_layers(model).items() if lay.pooled_from}
    assert pooled and all(lay.tap == lay.pooled_from != lay.input for lay in pooled.values())
    inits = initializer_dict(model)
    values = _tapped_values(model, {t for lay in pooled.values() for t in (lay.tap, lay.output)})
    for lay in pooled.values():
        x = values[lay.tap].astype(np.float64)
        positions = int(np.prod(x.shape[2:]))
        rows = lay.features(x)
        assert rows.shape[1] == len(x) * positions
        w = lay.matrix(inits[lay.weight]).astype(np.float64)
        y = (rows @ np.swapaxes(w, 1, 2))[0].reshape(len(x), positions, -1).mean(1)
        bias = inits[lay.bias].reshape(1, -1) if lay.bias else 0.0
        np.testing.assert_allclose(
            y + bias, values[lay.output].reshape(len(x), -1), atol=1e-5, err_msg=lay.node
        )


def test_only_channel_preserving_paths_from_global_pooling_count_as_pooled():
    h, tp = onnx.helper, onnx.TensorProto
    nodes = [
        h.make_node("GlobalAveragePool", ["x"], ["p"]),
        h.make_node("Flatten", ["p"], ["f1"], axis=1),
        h.make_node("Gemm", ["f1", "w", "b"], ["y1"], transB=1),
        h.make_node("Flatten", ["p"], ["f0"], axis=0),
        h.make_node("Gemm", ["f0", "w4", "b"], ["y0"], transB=1),
        h.make_node("Conv", ["p", "k3"], ["c3"], pads=[1, 1, 1, 1]),
        h.make_node("Conv", ["p", "k1"], ["c1"]),
        h.make_node("Gemm", ["z", "w", "b"], ["y2"], transB=1),
    ]
    for i, node in enumerate(nodes):
        node.name = f"n{i}"
    inits = [
        onnx.numpy_helper.from_array(np.ones(s, np.float32), n)
        for n, s in (("w", (2, 4)), ("w4", (2, 4)), ("b", (2,)), ("k3", (2, 4, 3, 3)), ("k1", (2, 4, 1, 1)))
    ]
    graph = h.make_graph(
        nodes,
        "g",
        [
            h.make_tensor_value_info("x", tp.FLOAT, [1, 4, 5, 5]),
            h.make_tensor_value_info("z", tp.FLOAT, [1, 4]),
        ],
        [h.make_tensor_value_info(o, tp.FLOAT, None) for o in ("y1", "y0", "c3", "c1", "y2")],
        inits,
    )
    layers = {lay.output: lay for lay in linear_layers(h.make_model(graph)).values()}
    assert {o: lay.pooled_from for o, lay in layers.items()} == {
        "y1": "x",
        "y0": None,
        "c3": None,
        "c1": "x",
        "y2": None,
    }


@pytest.mark.parametrize("opset", [13, 18])
def test_reduce_mean_over_every_spatial_axis_counts_as_global_pooling(opset):
    """torch's ``x.mean((2, 3))`` exports as ReduceMean (axes an attribute before opset 18, an input from 18
    on):
    over all spatial axes it pools like GlobalAveragePool; over some of them it does not."""
    h, tp = onnx.helper, onnx.TensorProto
    rng = np.random.default_rng(0)
    nodes, inits = [h.make_node("Relu", ["x"], ["r"], name="relu")], []
    outputs = []
    for i, (axes, keep) in enumerate((([2, 3], 0), ([-1, -2], 1), ([2], 0), ([1, 2, 3], 1))):
        ins = ["r"]
        if opset >= 18:
            inits.append(onnx.numpy_helper.from_array(np.array(axes, np.int64), f"axes{i}"))
            ins.append(f"axes{i}")
            nodes.append(h.make_node("ReduceMean", ins, [f"m{i}"], name=f"mean{i}", keepdims=keep))
        else:
            nodes.append(h.make_node("ReduceMean", ins, [f"m{i}"], name=f"mean{i}", axes=axes, keepdims=keep))
        feat = f"m{i}"
        if keep:
            nodes.append(h.make_node("Flatten", [feat], [f"f{i}"], name=f"flat{i}"))
            feat = f"f{i}"
        k = 5 if i == 2 else 1 if i == 3 else 4  # mean over H only leaves [N, C, W]: MatMul on W
        op = "MatMul" if i >= 2 else "Gemm"
        inits.append(onnx.numpy_helper.from_array(rng.standard_normal((k, 3)).astype(np.float32), f"w{i}"))
        nodes.append(h.make_node(op, [feat, f"w{i}"], [f"y{i}"], name=f"fc{i}"))
        outputs.append(h.make_tensor_value_info(f"y{i}", tp.FLOAT, None))
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", tp.FLOAT, [2, 4, 6, 5])], outputs, inits)
    model = infer_shapes(h.make_model(graph, opset_imports=[h.make_opsetid("", opset)], ir_version=9))
    layers = {lay.node: lay for lay in linear_layers(model).values()}
    assert {n: lay.pooled_from for n, lay in layers.items()} == {
        "fc0": "r",
        "fc1": "r",
        "fc2": None,
        "fc3": None,
    }
    x = rng.standard_normal((2, 4, 6, 5)).astype(np.float32)
    values = dict(
        zip(
            ["y0", "y1", "r"],
            run_ort(_with_outputs(model, ["r"]), {"x": x})[:2] + [np.maximum(x, 0)],
            strict=True,
        )
    )
    for name in ("fc0", "fc1"):
        lay = layers[name]
        rows = lay.features(values[lay.tap].astype(np.float64))
        w = lay.matrix(onnx.numpy_helper.to_array(next(t for t in inits if t.name == lay.weight))).astype(
            np.float64
        )
        y = (rows @ np.swapaxes(w, 1, 2))[0].reshape(2, 30, -1).mean(1)
        np.testing.assert_allclose(y, values[lay.output], atol=1e-5)


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in names)
    return out


def test_residual_partners_are_the_other_operand_of_the_add_a_layer_alone_feeds():
    h, tp = onnx.helper, onnx.TensorProto
    nodes = [
        h.make_node("Conv", ["x", "k"], ["c1"]),
        h.make_node("Add", ["c1", "x"], ["a1"]),  # residual: x
        h.make_node("Conv", ["a1", "k"], ["c2"]),
        h.make_node("Add", ["c2", "b4"], ["a2"]),  # bias Add
        h.make_node(
            "Constant", [], ["cb"], value=onnx.numpy_helper.from_array(np.ones((1, 4, 1, 1), np.float32))
        ),
        h.make_node("Conv", ["a2", "k"], ["c3"]),
        h.make_node("Add", ["cb", "c3"], ["a3"]),  # Constant node
        h.make_node("Conv", ["a3", "k"], ["c4"]),
        h.make_node("Relu", ["c4"], ["r4"]),
        h.make_node("Add", ["c4", "r4"], ["a4"]),  # c4 read twice: its partner is computed from it
        h.make_node("Conv", ["a4", "dw"], ["c5"], group=4),
        h.make_node("Add", ["c5", "a4"], ["a5"]),  # grouped
        h.make_node("Flatten", ["a5"], ["f"]),
        h.make_node("Gemm", ["f", "w", "z"], ["g"], transB=1),
        h.make_node("Add", ["g", "y"], ["out"]),  # Gemm + another input: residual
        h.make_node("Conv", ["a5", "k"], ["c6"]),
        h.make_node("Add", ["c6", "a5"], ["a6"]),
    ]  # c6: graph output
    for i, node in enumerate(nodes):
        node.name = f"n{i}"
    inits = [
        onnx.numpy_helper.from_array(np.ones(s, np.float32), n)
        for n, s in (
            ("k", (4, 4, 1, 1)),
            ("b4", (1, 4, 1, 1)),
            ("dw", (4, 1, 1, 1)),
            ("w", (3, 4)),
            ("z", (3,)),
        )
    ]
    graph = h.make_graph(
        nodes,
        "g",
        [
            h.make_tensor_value_info("x", tp.FLOAT, [2, 4, 1, 1]),
            h.make_tensor_value_info("y", tp.FLOAT, [2, 3]),
        ],
        [h.make_tensor_value_info(o, tp.FLOAT, None) for o in ("out", "a6", "c6")],
        inits,
    )
    model = h.make_model(graph)
    layers = linear_layers(model)
    by_output = {lay.output: lay.node for lay in layers.values()}
    assert residual_partners(model, layers) == {by_output["c1"]: "x", by_output["g"]: "y"}


def test_residual_partner_found_past_a_bias_add():
    """Transformer exports add the bias separately: MatMul → Add(bias) → Add(residual) is W·x + b + s."""
    h, tp = onnx.helper, onnx.TensorProto
    nodes = [
        h.make_node("MatMul", ["x", "w"], ["m1"]),
        h.make_node("Add", ["b", "m1"], ["t1"]),
        h.make_node("Add", ["t1", "x"], ["r1"]),  # residual after the bias: partner x
        h.make_node("MatMul", ["r1", "w"], ["m2"]),
        h.make_node("Add", ["m2", "b"], ["t2"]),
        h.make_node("Relu", ["t2"], ["out"]),  # no residual after the bias
        h.make_node("MatMul", ["r1", "w"], ["m3"]),
        h.make_node("Add", ["m3", "b"], ["t3"]),
        h.make_node("Add", ["t3", "r1"], ["r3"]),
    ]  # t3 is also a graph output: its own value matters
    for i, node in enumerate(nodes):
        node.name = f"n{i}"
    inits = [onnx.numpy_helper.from_array(np.ones(s, np.float32), n) for n, s in (("w", (4, 4)), ("b", (4,)))]
    graph = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x", tp.FLOAT, [2, 3, 4])],
        [h.make_tensor_value_info(o, tp.FLOAT, None) for o in ("out", "r3", "t3")],
        inits,
    )
    model = h.make_model(graph)
    assert residual_partners(model, linear_layers(model)) == {"n0": "x"}


def test_rectified_outputs_are_the_bounds_of_the_clamp_that_alone_reads_a_layer():
    h, tp = onnx.helper, onnx.TensorProto
    lo, hi = (onnx.numpy_helper.from_array(np.array(v, np.float32), n) for v, n in ((0.0, "lo"), (6.0, "hi")))
    nodes = [
        h.make_node("Conv", ["x", "k"], ["c1"]),
        h.make_node("Relu", ["c1"], ["r1"]),  # ReLU: [0, inf)
        h.make_node("Conv", ["r1", "k"], ["c2"]),
        h.make_node("Clip", ["c2", "lo", "hi"], ["r2"]),  # ReLU6
        h.make_node("Conv", ["r2", "k"], ["c3"]),
        h.make_node("Clip", ["c3", "", "hi"], ["r3"]),  # no min
        h.make_node("Conv", ["r3", "k"], ["c4"]),
        h.make_node("Relu", ["c4"], ["r4"]),
        h.make_node("Add", ["c4", "r4"], ["a4"]),  # c4 is read twice: its own value matters
        h.make_node("Conv", ["a4", "dw"], ["c5"], group=4),
        h.make_node("Relu", ["c5"], ["r5"]),  # grouped
        h.make_node("Conv", ["r5", "k"], ["c6"]),
        h.make_node("Clip", ["c6", "x0"], ["r6"]),  # min not constant
        h.make_node("Conv", ["r6", "k"], ["c7"]),
        h.make_node("Sigmoid", ["c7"], ["out"]),
    ]  # not a clamp
    for i, node in enumerate(nodes):
        node.name = f"n{i}"
    inits = [
        onnx.numpy_helper.from_array(np.ones(s, np.float32), n)
        for n, s in (("k", (4, 4, 1, 1)), ("dw", (4, 1, 1, 1)))
    ]
    graph = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x", tp.FLOAT, [2, 4, 1, 1]), h.make_tensor_value_info("x0", tp.FLOAT, [])],
        [h.make_tensor_value_info("out", tp.FLOAT, None)],
        [*inits, lo, hi],
    )
    model = h.make_model(graph)
    layers = linear_layers(model)
    by_output = {lay.output: lay.node for lay in layers.values()}
    assert rectified_outputs(model, layers) == {
        by_output["c1"]: (0.0, np.inf, None),
        by_output["c2"]: (0.0, 6.0, None),
        by_output["c3"]: (-np.inf, 6.0, None),
    }


def test_rectified_outputs_read_clip_attributes_of_opset_6():
    h, tp = onnx.helper, onnx.TensorProto
    nodes = [
        h.make_node("Conv", ["x", "k"], ["c1"], name="conv"),
        h.make_node("Clip", ["c1"], ["out"], name="clip", min=0.0, max=6.0),
    ]
    graph = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x", tp.FLOAT, [2, 4, 1, 1])],
        [h.make_tensor_value_info("out", tp.FLOAT, None)],
        [onnx.numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), "k")],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 10)])
    assert rectified_outputs(model, linear_layers(model)) == {"conv": (0.0, 6.0, None)}


def test_rectified_outputs_see_through_the_residual_add_a_layer_alone_feeds():
    """ResNet's conv → Add(skip) → ReLU: the clamp reads the block output; the partner is the skip."""
    h, tp = onnx.helper, onnx.TensorProto
    nodes = [
        h.make_node("Conv", ["x", "k"], ["c1"]),
        h.make_node("Add", ["x", "c1"], ["a1"]),
        h.make_node("Relu", ["a1"], ["r1"]),  # residual, then ReLU
        h.make_node("Conv", ["r1", "k"], ["c2"]),
        h.make_node("Add", ["c2", "r1"], ["a2"]),
        h.make_node("Relu", ["a2"], ["r2"]),
        h.make_node("Conv", ["a2", "k"], ["c3"]),  # a2 read twice
        h.make_node("Add", ["c3", "c3"], ["a3"]),
        h.make_node("Relu", ["a3"], ["out"]),
    ]  # not a residual
    for i, node in enumerate(nodes):
        node.name = f"n{i}"
    graph = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x", tp.FLOAT, [2, 4, 1, 1])],
        [h.make_tensor_value_info(o, tp.FLOAT, None) for o in ("out", "r2")],
        [onnx.numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), "k")],
    )
    model = h.make_model(graph)
    assert rectified_outputs(model, linear_layers(model)) == {"n0": (0.0, np.inf, "x")}
