"""Normalization keeps the function (rel. error < 1e-5) while removing Constant/Identity/BN nodes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxprune.passes.normalize import normalize

from models import synthetic
from onnxprune.shapes import declared_shape
from tests.helpers import rel_error, run_ort

RNG = np.random.default_rng(0)


def _t(name, *shape, positive=False):
    a = RNG.uniform(0.5, 2.0, shape) if positive else RNG.normal(size=shape)
    return numpy_helper.from_array(a.astype(np.float32), name)


def _bn(prefix, c):
    return [
        _t(f"{prefix}_g", c, positive=True),
        _t(f"{prefix}_b", c),
        _t(f"{prefix}_m", c),
        _t(f"{prefix}_v", c, positive=True),
    ]


def _bn_node(prefix, x, y):
    return helper.make_node(
        "BatchNormalization",
        [x, f"{prefix}_g", f"{prefix}_b", f"{prefix}_m", f"{prefix}_v"],
        [y],
        name=prefix,
        epsilon=1e-3,
    )


def _model(nodes, inputs, outputs, inits, opset=17):
    m = helper.make_model(
        helper.make_graph(nodes, "g", inputs, outputs, inits), opset_imports=[helper.make_opsetid("", opset)]
    )
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def assert_equivalent(model, feeds, tol=1e-5):
    normalized, report = normalize(model)
    onnx.checker.check_model(normalized, full_check=True)
    for a, b in zip(run_ort(normalized, feeds), run_ort(model, feeds), strict=True):
        assert a.shape == b.shape and rel_error(a, b) < tol
    return normalized, report


def ops(model):
    return [n.op_type for n in model.graph.node]


def test_bn_folds_into_conv_grouped_convtranspose_and_gemm():
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv", pads=[1, 1, 1, 1]),
        _bn_node("bn1", "c1", "r1"),
        helper.make_node("ConvTranspose", ["r1", "w2"], ["c2"], name="deconv", strides=[2, 2], group=2),
        _bn_node("bn2", "c2", "r2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["g1"], name="gemm_tb", transB=1, alpha=0.7, beta=1.3),
        _bn_node("bn3", "g1", "h1"),
        helper.make_node("Gemm", ["h1", "w4"], ["g2"], name="gemm_plain"),
        _bn_node("bn4", "g2", "y"),
    ]
    inits = [
        _t("w1", 8, 3, 3, 3),
        _t("b1", 8),
        _t("w2", 8, 3, 2, 2),
        _t("w3", 10, 6),
        _t("b3", 10),
        _t("w4", 10, 5),
        *_bn("bn1", 8),
        *_bn("bn2", 6),
        *_bn("bn3", 10),
        *_bn("bn4", 5),
    ]
    model = _model(nodes, [_vi("x", ["N", 3, 8, 8])], [_vi("y", ["N", 5])], inits)
    out, report = assert_equivalent(model, {"x": RNG.normal(size=(3, 3, 8, 8)).astype(np.float32)})
    assert "BatchNormalization" not in ops(out)
    assert report.bn_folded == 4 and not report.bn_kept
    assert set(report.bn_scales) == {"conv", "deconv", "gemm_tb", "gemm_plain"}
    g = numpy_helper.to_array(inits[6 + 0])  # bn1 gamma
    v = numpy_helper.to_array(inits[6 + 3])
    np.testing.assert_allclose(report.bn_scales["conv"], g / np.sqrt(v + 1e-3), rtol=1e-6)
    assert declared_shape(out.graph.input[0])[0] == "N" and declared_shape(out.graph.output[0])[0] == "N"


def test_bn_kept_where_not_foldable_and_shared_weight_not_corrupted():
    # conv output feeds BN and a second consumer: folding would change the other branch
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv_a"),
        _bn_node("bn", "c", "b"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Conv", ["x", "w"], ["d"], name="conv_b"),  # shares w with conv_a
        _bn_node("bn_b", "d", "e"),
        helper.make_node("Add", ["b", "r"], ["s"], name="add"),
        helper.make_node("Add", ["s", "e"], ["y"], name="add2"),
    ]
    inits = [_t("w", 4, 3, 1, 1), *_bn("bn", 4), *_bn("bn_b", 4)]
    model = _model(nodes, [_vi("x", ["N", 3, 5, 5])], [_vi("y", ["N", 4, 5, 5])], inits)
    out, report = assert_equivalent(model, {"x": RNG.normal(size=(2, 3, 5, 5)).astype(np.float32)})
    assert report.bn_kept == ["bn"] and report.bn_folded == 1
    assert "bn" in report.bn_scales and "conv_b" in report.bn_scales


def test_constants_identity_dropout_removed_and_output_name_kept():
    w = numpy_helper.from_array(RNG.normal(size=(4, 3, 3, 3)).astype(np.float32), "wv")
    nodes = [
        helper.make_node("Constant", [], ["w_const"], name="", value=w),
        helper.make_node("Identity", ["w_const"], ["w_id"]),
        helper.make_node("Conv", ["x", "w_id"], ["c"], name="conv"),
        helper.make_node("Identity", ["c"], ["c2"]),
        helper.make_node("Dropout", ["c2"], ["d"], name="drop"),
        helper.make_node("Relu", ["d"], ["r"], name="relu"),
        helper.make_node("Identity", ["r"], ["y"], name="out_identity"),
    ]
    model = _model(nodes, [_vi("x", ["N", 3, 6, 6])], [_vi("y", ["N", 4, 4, 4])], [])
    out, report = assert_equivalent(model, {"x": RNG.normal(size=(2, 3, 6, 6)).astype(np.float32)})
    assert ops(out) == ["Conv", "Relu"]
    assert [o.name for o in out.graph.output] == ["y"]
    assert report.constants_lowered == 1 and report.identities_removed >= 2
    assert all(n.name for n in out.graph.node) and len({n.name for n in out.graph.node}) == len(
        out.graph.node
    )


def test_opset11_is_upgraded_and_equivalent():
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Split", ["c"], ["a", "b"], name="split", axis=1, split=[2, 2]),
        helper.make_node("Clip", ["a", "lo", "hi"], ["ac"], name="clip"),
        helper.make_node("Concat", ["ac", "b"], ["y"], name="cat", axis=1),
    ]
    inits = [
        _t("w", 4, 3, 1, 1),
        numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(0.5, np.float32), "hi"),
    ]
    model = _model(nodes, [_vi("x", ["N", 3, 4, 4])], [_vi("y", ["N", 4, 4, 4])], inits, opset=11)
    out, report = assert_equivalent(model, {"x": RNG.normal(size=(2, 3, 4, 4)).astype(np.float32)})
    assert report.opset_before == 11 and report.opset_after == 13
    split = next(n for n in out.graph.node if n.op_type == "Split")
    assert len(split.input) == 2  # sizes moved to an input, as opset 13 wants


def test_input_model_not_modified():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"), _bn_node("bn", "c", "y")]
    model = _model(
        nodes, [_vi("x", ["N", 3, 4, 4])], [_vi("y", ["N", 4, 4, 4])], [_t("w", 4, 3, 1, 1), *_bn("bn", 4)]
    )
    before = model.SerializeToString()
    normalize(model)
    assert model.SerializeToString() == before


@pytest.mark.parametrize("name", synthetic.names())
def test_synthetic_graphs_equivalent(name):
    model = synthetic.build(name)
    out, _ = assert_equivalent(model, synthetic.random_inputs(model, batch=2))
    assert not {"Constant", "Identity"} & set(ops(out))


@pytest.mark.parametrize("name", synthetic.names())
def test_constant_weight_graphs_equivalent(name):
    model = synthetic.with_constant_weights(synthetic.build(name))
    out, report = assert_equivalent(model, synthetic.random_inputs(model, batch=2))
    assert report.constants_lowered > 0 and "Constant" not in ops(out)
    assert len(out.graph.initializer) > 0


def test_fmnist_equivalent(fmnist_path):
    if not fmnist_path.exists():
        pytest.skip("models/fmnist_resnet.onnx not built")
    model = onnx.load_model(str(fmnist_path))
    x = np.load(fmnist_path.with_name("fmnist_calib.npz"))["input"][:64]
    out, report = assert_equivalent(model, {"input": x})
    assert report.bn_folded >= 3 and "BatchNormalization" not in ops(out)


@pytest.mark.parametrize("name", synthetic.names())
def test_opset11_constant_weight_graphs_upgraded_and_equivalent(name):
    model = synthetic.with_constant_weights(synthetic.with_opset(synthetic.build(name), 11))
    out, report = assert_equivalent(model, synthetic.random_inputs(model, batch=2))
    assert report.opset_before == 11 and report.opset_after >= 13, report.notes


def _pad_conv_model(pads, mode="constant", conv_pads=(1, 0, 1, 0), extra_consumer=False):
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    p = numpy_helper.from_array(np.array(pads, np.int64), "p")
    nodes = [
        helper.make_node("Pad", ["x", "p"], ["xp"], name="pad", mode=mode),
        helper.make_node("Conv", ["xp", "w"], ["y"], name="conv", pads=list(conv_pads), strides=[2, 2]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if extra_consumer:
        nodes.append(helper.make_node("Relu", ["xp"], ["r"], name="relu"))
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9, 9])], outputs, [w, p]
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_spatial_zero_pad_folds_into_conv():
    model = _pad_conv_model([0, 0, 0, 1, 0, 0, 1, 2])  # TF-style asymmetric "same" padding
    out, report = normalize(model)
    assert report.pads_folded == 1 and not [n for n in out.graph.node if n.op_type == "Pad"]
    conv = next(n for n in out.graph.node if n.op_type == "Conv")
    assert list(helper.get_attribute_value(next(a for a in conv.attribute if a.name == "pads"))) == [
        1,
        1,
        2,
        2,
    ]
    x = {"x": np.random.default_rng(1).standard_normal((1, 3, 9, 9)).astype(np.float32)}
    assert rel_error(run_ort(out, x)[0], run_ort(model, x)[0]) < 1e-6
    onnx.checker.check_model(out, full_check=True)


@pytest.mark.parametrize(
    "pads, mode, extra",
    [
        ([1, 0, 0, 0, 0, 0, 0, 0], "constant", False),  # pads the batch axis: not a conv padding
        ([0, 0, 1, 1, 0, 0, 1, 1], "reflect", False),  # not zeros
        ([0, 0, 1, 1, 0, 0, 1, 1], "constant", True),  # the padded tensor is also read elsewhere
    ],
)
def test_pad_kept_where_it_is_not_a_conv_padding(pads, mode, extra):
    model = _pad_conv_model(pads, mode, extra_consumer=extra)
    out, report = normalize(model)
    assert report.pads_folded == 0 and [n for n in out.graph.node if n.op_type == "Pad"]
    x = {"x": np.random.default_rng(1).standard_normal((1, 3, 9, 9)).astype(np.float32)}
    assert rel_error(run_ort(out, x)[0], run_ort(model, x)[0]) < 1e-6
