"""models.synthetic: every graph is valid ONNX, runs in onnxruntime, and its variants keep semantics."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from models import synthetic

NAMES = synthetic.names()
REQUIRED = {
    "residual_add",
    "dense_concat",
    "depthwise_se",
    "grouped_conv",
    "split_slice",
    "flatten_gemm",
    "reshape_matmul",
    "transpose_nhwc",
    "resize_fpn",
    "channel_shuffle",
    "lstm",
    "transformer_block",
    "conv_chain",
    "conv_transpose",
    "mlp_gemm",
}


def run(model: onnx.ModelProto | Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    src = str(model) if isinstance(model, Path) else model.SerializeToString()
    sess = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))


@functools.cache
def reference(name: str, batch: int = 2) -> tuple[dict, dict]:
    """(feeds, outputs) of the default build (opset 17, seed 0)."""
    model = synthetic.build(name)
    feeds = synthetic.random_inputs(model, batch=batch)
    return feeds, run(model, feeds)


def assert_same_outputs(model: onnx.ModelProto | Path, name: str, atol: float = 1e-6, rtol: float = 0.0):
    feeds, expected = reference(name)
    got = run(model, feeds)
    assert got.keys() == expected.keys()
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], atol=atol, rtol=rtol, err_msg=f"{name}: output {k}")


def count_ops(model: onnx.ModelProto, op_type: str) -> int:
    return sum(n.op_type == op_type for n in model.graph.node)


def test_registry():
    assert REQUIRED <= set(NAMES)
    assert NAMES == list(synthetic.GRAPHS)
    with pytest.raises(KeyError, match="unknown synthetic graph"):
        synthetic.build("no_such_graph")
    with pytest.raises(synthetic.UnsupportedOpset):
        synthetic.build("residual_add", opset=10)


@pytest.mark.parametrize("name", NAMES)
def test_graph_is_valid_and_runs(name):
    model = synthetic.build(name)
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert model.graph.doc_string, "builder docstring becomes the graph doc"
    node_names = [n.name for n in model.graph.node]
    assert all(node_names) and len(set(node_names)) == len(node_names)
    for vi in [*model.graph.input, *model.graph.output]:
        assert vi.type.tensor_type.shape.dim[0].dim_param == "N", vi.name
    for batch in (1, 3):
        outs = run(model, synthetic.random_inputs(model, batch=batch))
        assert {k: v.shape for k, v in outs.items()} == synthetic.output_shapes(model, batch)
        for k, v in outs.items():
            assert v.dtype == np.float32 and np.isfinite(v).all(), k
            assert v.std() > 1e-3, f"{k} is (nearly) constant"


@pytest.mark.parametrize("name", NAMES)
def test_weights_are_seeded_and_nontrivial(name):
    model = synthetic.build(name, seed=0)
    assert model.SerializeToString() == synthetic.build(name, seed=0).SerializeToString()
    other = {i.name: numpy_helper.to_array(i) for i in synthetic.build(name, seed=1).graph.initializer}
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert any(not np.array_equal(v, other[k]) for k, v in inits.items())
    for k, v in inits.items():
        assert v.dtype in (np.float32, np.int64), k
        if k.endswith("/bn.var"):
            assert ((v >= 0.5) & (v <= 2.0)).all()
        if k.endswith(("/bn.scale", "ln_emb.weight", "ln1.weight", "ln2.weight")):
            assert ((v >= 0.5) & (v <= 1.5)).all()
        if k.endswith((".bias", ".B")):
            assert (v != 0).all(), k


@pytest.mark.parametrize("name", NAMES)
def test_constant_weights_variant(name):
    model = synthetic.build(name)
    cw = synthetic.with_constant_weights(model)
    onnx.checker.check_model(cw, full_check=True)
    assert len(cw.graph.initializer) == 0
    assert len(model.graph.initializer) > 0, "the argument is not modified"
    assert count_ops(cw, "Constant") == len(model.graph.initializer)
    assert count_ops(cw, "Identity") >= 1
    assert_same_outputs(cw, name, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_opset11_variant(name):
    m11 = synthetic.with_opset(synthetic.build(name), 11)
    onnx.checker.check_model(m11, full_check=True)  # validates every node against opset-11 schemas
    assert [o.version for o in m11.opset_import] == [11]
    assert count_ops(m11, "LayerNormalization") == count_ops(m11, "HardSwish") == 0
    for node in m11.graph.node:
        if node.op_type in ("Split", "Squeeze"):
            assert len(node.input) == 1 and node.attribute, node.name
    assert_same_outputs(m11, name, atol=1e-5, rtol=1e-5)  # same seed -> same weights


@pytest.mark.parametrize("name", NAMES)
def test_external_data_round_trip(name, tmp_path):
    model = synthetic.build(name)
    path = synthetic.with_external_data(model, tmp_path / f"{name}.onnx")
    assert (tmp_path / f"{name}.onnx.data").stat().st_size > 0
    assert all(i.HasField("raw_data") for i in model.graph.initializer), "the argument is not modified"
    shallow = onnx.load(str(path), load_external_data=False)
    external = {i.name for i in shallow.graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL}
    assert {i.name for i in model.graph.initializer if i.name.endswith(".weight")} <= external
    loaded = onnx.load(str(path))
    for a, b in zip(model.graph.initializer, loaded.graph.initializer, strict=True):
        np.testing.assert_array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))
    onnx.checker.check_model(str(path), full_check=True)
    assert_same_outputs(path, name, atol=0.0)


def test_external_data_of_constant_weights(tmp_path):
    cw = synthetic.with_constant_weights(synthetic.build("residual_add"))
    path = synthetic.with_external_data(cw, tmp_path / "cw.onnx", convert_attribute=True)
    shallow = onnx.load(str(path), load_external_data=False)
    const = next(n for n in shallow.graph.node if n.op_type == "Constant")
    assert const.attribute[0].t.data_location == onnx.TensorProto.EXTERNAL
    assert_same_outputs(path, "residual_add")


def test_static_batch():
    model = synthetic.with_static_batch(synthetic.build("lstm"), 3)
    onnx.checker.check_model(model, full_check=True)
    dims = [d for vi in [*model.graph.input, *model.graph.output] for d in vi.type.tensor_type.shape.dim]
    assert all(d.HasField("dim_value") for d in dims)
    outs = run(model, synthetic.random_inputs(model))
    assert {k: v.shape for k, v in outs.items()} == {"seq_head": (3, 6, 5), "cls_head": (3, 4)}


def test_identity_noise():
    model = synthetic.build("transformer_block")
    noisy = synthetic.with_identity_noise(model, seed=1, fraction=0.5)
    onnx.checker.check_model(noisy, full_check=True)
    assert count_ops(noisy, "Identity") > 5 and count_ops(model, "Identity") == 0
    assert_same_outputs(noisy, "transformer_block", atol=1e-6)


def test_with_opset_replays_variants_and_rejects_foreign_models():
    model = synthetic.with_static_batch(synthetic.with_constant_weights(synthetic.build("split_slice")), 2)
    m13 = synthetic.with_opset(model, 13)
    assert [o.version for o in m13.opset_import] == [13] and len(m13.graph.initializer) == 0
    assert m13.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    assert_same_outputs(m13, "split_slice")
    foreign = onnx.ModelProto()
    foreign.CopyFrom(model)
    del foreign.metadata_props[:]
    with pytest.raises(ValueError, match="with_opset needs"):
        synthetic.with_opset(foreign, 11)


def test_paddle_style_model():
    model = synthetic.paddle_style_model()
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import] == [11]
    assert len(model.graph.initializer) == 0
    assert count_ops(model, "Constant") > 20 and count_ops(model, "BatchNormalization") == 5
    assert count_ops(model, "Identity") >= 1
    assert_same_outputs(model, "paddle_convnet", atol=1e-5, rtol=1e-5)


def test_random_inputs_dtypes_and_seeds():
    graph = helper.make_graph(
        [helper.make_node("Identity", ["ids"], ["out"])],
        "ints",
        [helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, ["B", 5])],
        [helper.make_tensor_value_info("out", onnx.TensorProto.INT64, ["B", 5])],
    )
    feeds = synthetic.random_inputs(helper.make_model(graph), batch=4)
    assert feeds["ids"].dtype == np.int64 and feeds["ids"].shape == (4, 5)
    assert feeds["ids"].min() >= 0 and feeds["ids"].max() < 4
    model = synthetic.build("transformer_block")
    a, b = synthetic.random_inputs(model, seed=0), synthetic.random_inputs(model, seed=1)
    assert a["x"].shape == (2, 8, 16) and a["x"].dtype == np.float32
    np.testing.assert_array_equal(a["x"], synthetic.random_inputs(model, seed=0)["x"])
    assert not np.array_equal(a["x"], b["x"])


def test_runtime_shaped_attention_is_attention():
    """transformer_runtime_shapes computes multi-head attention (3 heads of 4) with its head split and merge
    shapes read at run time: numpy's attention on the same weights gives the same output."""
    model = synthetic.build("transformer_runtime_shapes")
    w = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    x = synthetic.random_inputs(model, batch=3)["x"]

    def linear(name, t):
        return t @ w[f"{name}.weight"] + w[f"{name}.bias"]

    def heads(t):
        return t.reshape(3, 8, 3, 4).transpose(0, 2, 1, 3)

    q, k, v = heads(linear("q", x)), heads(linear("k", x)), heads(linear("v", x))
    scores = q @ k.transpose(0, 1, 3, 2) / 2.0
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    h = linear("attn_out", (p @ v).transpose(0, 2, 1, 3).reshape(3, 8, 12)) + x
    want = linear("ffn2", np.maximum(linear("ffn1", h), 0.0)) + h
    got = run(model, {"x": x})
    np.testing.assert_allclose(next(iter(got.values())), want, atol=1e-5)
    assert {n.op_type for n in model.graph.node} >= {"Shape", "Slice", "Concat", "Reshape", "Softmax"}
