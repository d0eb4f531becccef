"""Channel groups: the structure the tracer finds, and every way it must refuse (block) a group."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper
from onnxprune.passes.normalize import normalize

from models import synthetic
from models.synthetic_builder import Builder
from onnxprune.channels import View
from onnxprune.oprules import map_reshape
from onnxprune.tracer import trace_channels


def traced(model):
    model, _ = normalize(model)
    return model, trace_channels(model)


def group_of_node_output(model, trace, node_name, channel=0):
    node = next(n for n in model.graph.node if n.name == node_name)
    return trace.group_of(trace.space_of(node.output[0]), channel)


def roles(group):
    out = {}
    for node, role in group.members:
        out.setdefault(role, set()).add(node)
    return out


def finish(b, fn_name="test_graph"):
    def fn():
        pass
    fn.__name__ = fn_name
    return b.finish(fn)


def test_residual_add_couples_both_branches():
    model, trace = traced(synthetic.build("residual_add"))
    g = group_of_node_output(model, trace, "stem")
    assert g.prunable and g.size == 8
    r = roles(g)
    assert {"stem", "b1.conv2"} <= r["producer"] and {"b1.conv1", "b2.conv1", "b2.proj"} <= r["consumer"]
    assert g is group_of_node_output(model, trace, "b1.conv2")
    tail = group_of_node_output(model, trace, "b2.proj")
    assert tail is group_of_node_output(model, trace, "b2.conv2") and "fc" in roles(tail)["consumer"]


def test_dense_concat_offsets():
    model, trace = traced(synthetic.build("dense_concat"))
    stem, d1 = group_of_node_output(model, trace, "stem"), group_of_node_output(model, trace, "dense1")
    assert stem.size == 6 and d1.size == 4 and stem is not d1
    # the concat outputs are cut into ranges that belong to the source groups
    assert {"dense2", "trans"} <= roles(stem)["consumer"] and {"dense2", "trans"} <= roles(d1)["consumer"]
    assert all(g.prunable for g in (stem, d1))


def test_grouped_conv_prunes_every_group_alike():
    model, trace = traced(synthetic.build("grouped_conv"))
    g = group_of_node_output(model, trace, "gconv1")
    # gconv1 has 4 groups of 3 outputs; gconv2 (2 groups) reads it: one group channel = one index per slice
    assert g.size == 3 and len(g.segments) == 4


def test_depthwise_se_is_one_group():
    model, trace = traced(synthetic.build("depthwise_se"))
    g = group_of_node_output(model, trace, "stem")
    assert g.prunable and {"dw", "se/fc2"} <= set(roles(g)["pass-through"]) | set(roles(g)["producer"])
    assert "se/fc1" in roles(g)["consumer"]


def test_flatten_gemm_consumer_reads_chw_blocks():
    model, trace = traced(synthetic.build("flatten_gemm"))
    conv = group_of_node_output(model, trace, "conv")
    member = next(m for m in trace.members if m.node == "fc1" and m.role == "consumer")
    shape = trace.spaces[member.space].size
    assert conv.prunable and member.inner > 1 and member.outer == 1 and shape == conv.size


def test_channel_shuffle_is_blocked_with_reason():
    model, trace = traced(synthetic.build("channel_shuffle"))
    g = group_of_node_output(model, trace, "gconv1")
    assert not g.prunable and "shuffle/reshape" in " ".join(g.reasons)


def test_transformer_ffn_prunable_heads_and_residual_blocked():
    model, trace = traced(synthetic.build("transformer_block"))
    ffn = group_of_node_output(model, trace, "ffn1/matmul")
    assert ffn.prunable and ffn.size == 32 and "ffn2/matmul" in roles(ffn)["consumer"]
    q = group_of_node_output(model, trace, "q/matmul")
    assert not q.prunable and "q/heads" in " ".join(q.reasons)
    stream = group_of_node_output(model, trace, "attn_out/matmul")
    assert not stream.prunable and "normalizes over the channel axis" in " ".join(stream.reasons)


def test_graph_outputs_block_their_group():
    model, trace = traced(synthetic.build("resize_fpn"))
    for out in model.graph.output:
        g = trace.group_of(trace.space_of(out.name), 0)
        assert not g.prunable and f"graph output '{out.name}'" in g.reasons


def test_unknown_custom_op_in_the_middle_of_a_group_blocks_it():
    model, trace = traced(synthetic.build("residual_add"))
    assert group_of_node_output(model, trace, "b1.conv1").prunable
    # insert com.acme::Mystery between b1.conv1 (+relu) and b1.conv2
    conv2 = next(n for n in model.graph.node if n.name == "b1.conv2")
    src = conv2.input[0]
    conv2.input[0] = "mystery_out"
    index = [n.name for n in model.graph.node].index("b1.conv2")
    model.graph.node.insert(index, helper.make_node("Mystery", [src], ["mystery_out"], name="mystery", domain="com.acme"))
    model.opset_import.append(helper.make_opsetid("com.acme", 1))
    trace = trace_channels(model)
    g = group_of_node_output(model, trace, "b1.conv1")
    assert not g.prunable
    assert any("'mystery'" in r and "com.acme::Mystery" in r for r in g.reasons), g.reasons
    with pytest.raises(ValueError, match="not prunable"):
        trace.kept_channels({g.id: np.arange(g.size - 1)})


def _softmax_graph(axis):
    b = Builder(0, 17)
    x = b.input("x", ["N", 3, 8, 8])
    h = b.conv(x, 3, 6, name="c1")
    s = b.op("Softmax", [h], "softmax", axis=axis)
    y = b.conv(s, 6, 4, name="c2")
    b.output(y, ["N", 4, 8, 8])
    return finish(b)


@pytest.mark.parametrize("axis, prunable", [(1, False), (-1, True)])
def test_softmax_over_channels_blocks(axis, prunable):
    model, trace = traced(_softmax_graph(axis))
    g = group_of_node_output(model, trace, "c1")
    assert g.prunable is prunable
    if not prunable:
        assert "'softmax' (Softmax) normalizes over the channel axis" in g.reasons[0]


def test_einsum_on_channels_blocks_naming_node():
    b = Builder(0, 17)
    x = b.input("x", ["N", 3, 8, 8])
    h = b.conv(x, 3, 6, name="c1")
    w = b.weight("w", [6, 5])
    y = b.op("Einsum", [h, w], "mix", equation="nchw,cd->ndhw")
    b.output(y, ["N", 5, 8, 8])
    model, trace = traced(finish(b))
    g = group_of_node_output(model, trace, "c1")
    assert not g.prunable and "'mix' (Einsum)" in g.reasons[0]


@pytest.mark.parametrize("in_shape, view, out_shape, expected", [
    ((2, 8, 4, 4), View(0, 1), (2, 128), View(0, 1, 1, 16)),  # Flatten: C·H·W blocks
    ((2, 4, 4, 8), View(0, 3), (2, 128), View(0, 1, 16, 1)),  # NHWC flatten: channel innermost
    ((2, 8, 1, 1), View(0, 1), (2, 8), View(0, 1)),  # squeeze spatial
    ((2, 5, 12), View(0, 2), (10, 12), View(0, 1)),  # merge batch and sequence
    ((2, 5, 12), View(0, 2), (2, 5, 3, 4), None),  # split into heads: cannot map
    ((2, 6, 4), View(0, 1), (2, 24), View(0, 1, 1, 4)),
])
def test_map_reshape(in_shape, view, out_shape, expected):
    assert map_reshape(in_shape, view, out_shape) == expected


def test_every_synthetic_graph_traces_and_json_serializes():
    import json

    for name in synthetic.names():
        _, trace = traced(synthetic.build(name))
        assert trace.groups and json.dumps([g.to_dict() for g in trace.groups])


def test_paddle_constant_weights_trace_like_initializers():
    _, plain = traced(synthetic.build("paddle_convnet"))
    _, paddle = traced(synthetic.paddle_style_model())
    assert [(g.size, g.prunable) for g in plain.groups] == [(g.size, g.prunable) for g in paddle.groups]


def test_analyze_reports_groups(tmp_path, capsys):
    import json

    from onnxprune.cli import main

    path = tmp_path / "m.onnx"
    onnx.save_model(synthetic.build("channel_shuffle"), str(path))
    with pytest.raises(SystemExit):
        main(["analyze", str(path), "--json"])
    a = json.loads(capsys.readouterr().out)
    groups = a["channel_groups"]
    assert any(g["prunable"] for g in groups)
    blocked = [g for g in groups if not g["prunable"]]
    assert any("shuffle/reshape" in g["reason"] for g in blocked)
    assert all(g["macs"] >= 0 and g["members"] for g in groups)
    with pytest.raises(SystemExit):
        main(["analyze", str(path)])
    out = capsys.readouterr().out
    assert "Channel groups" in out and "shuffle/reshape" in out
