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
from onnxprune.ops.shape import map_reshape
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


def test_channel_shuffle_maps_as_a_permutation():
    """Reshape [N,2,4,H,W] -> Transpose -> Reshape: output channel 2j + k is channel 4k + j of gconv1. Each of
    gconv1's two slices loses the same channels, and gconv2 (2 groups, reading the shuffled order) couples
    shuffled channels 0..3 with 4..7, i.e. slice channels j and j + 2."""
    model, trace = traced(synthetic.build("channel_shuffle"))
    g = group_of_node_output(model, trace, "gconv1")
    assert g.prunable and g.size == 2
    assert {"shuffle/reshape", "dw"} <= roles(g)["pass-through"] and "gconv2" in roles(g)["consumer"]
    kept = trace.kept_channels({g.id: np.array([0])})
    gconv1 = trace.space_of(next(n.output[0] for n in model.graph.node if n.name == "gconv1"))
    assert kept[gconv1].tolist() == [0, 2, 4, 6]
    shuffled = trace.views[next(n.output[0] for n in model.graph.node if n.name == "shuffle/merge")]
    assert (shuffled.axis, shuffled.outer, shuffled.inner) == (1, 1, 2)  # channel j of a slice at 2j + k


def test_plain_channels_beside_shuffled_ones_are_re_expressed():
    """A conv output added to (and an SE gate multiplied with) the shuffled stream: its plain channels
    2j + k are the shuffled positions of slice channel j, so its rows are pruned two at a time; a Split of
    the shuffled order at a whole-channel boundary splits the group."""
    model, trace = traced(synthetic.build("shuffle_residual"))
    first, second = (group_of_node_output(model, trace, "gconv", c) for c in (0, 2))
    assert first.prunable and second.prunable and first.size == second.size == 2
    assert {"res", "se/fc2"} <= roles(first)["producer"] and "head" in roles(first)["consumer"]
    assert "fc" in roles(second)["consumer"]
    res = next(m for m in trace.members if m.node == "res" and m.role == "producer" and m.input_index == 1)
    assert (res.outer, res.inner) == (1, 2)
    kept = trace.kept_channels({first.id: np.array([1])})
    res_space = trace.space_of(next(n.output[0] for n in model.graph.node if n.name == "res"))
    assert trace.views[next(n.output[0] for n in model.graph.node if n.name == "res")].inner == 2
    assert kept[res_space].tolist() == [1, 2, 3]  # slice channel 0 of the first half goes: positions 0 and 1


def test_a_concat_of_shuffled_channels_blocks_with_its_reason():
    b = Builder(0, 17)
    x = b.input("x", ["N", 3, 8, 8])
    g = b.shuffle(b.cba(b.cba(x, 3, 8, name="stem"), 8, 8, k=1, group=2, name="gconv"), 2, 4, 8)
    cat = b.op("Concat", [g, b.cba(g, 8, 4, name="branch")], "cat", axis=1)
    b.output(b.conv(cat, 12, 4, name="head"), ["N", 4, 8, 8])
    model, trace = traced(finish(b))
    g = group_of_node_output(model, trace, "gconv")
    assert not g.prunable and "'cat'" in " ".join(g.reasons)


def test_reshape_with_a_constant_channel_count_built_at_run_time_blocks():
    """Reshape(x, Concat(Shape(x)[0], [2, 4, 8, 8])): after pruning the constant 4 would be wrong."""
    b = Builder(0, 17)
    x = b.input("x", ["N", 3, 8, 8])
    h = b.conv(x, 3, 8, name="conv")
    batch = b.op("Gather", [b.op("Shape", [h], "shape"), b.const("zero", 0, np.int64)], "batch")
    n = b.op("Unsqueeze", [batch, b.const("axes0", [0], np.int64)], "batch1")
    target = b.op("Concat", [n, b.const("rest", [2, 4, 8, 8], np.int64)], "target", axis=0)
    h = b.op("Reshape", [h, target], "split")
    h = b.op("Transpose", [h], "t", perm=[0, 2, 1, 3, 4])
    h = b.op("Reshape", [h, b.const("merge.shape", [0, -1, 8, 8], np.int64)], "merge")
    b.output(b.conv(h, 8, 4, name="head"), ["N", 4, 8, 8])
    model, trace = traced(finish(b))
    g = group_of_node_output(model, trace, "conv")
    assert not g.prunable and "at run time with the channel count 4" in " ".join(g.reasons)


def test_transformer_ffn_prunable_heads_and_residual_blocked():
    model, trace = traced(synthetic.build("transformer_block"))
    ffn = group_of_node_output(model, trace, "ffn1/matmul")
    assert ffn.prunable and ffn.size == 32 and "ffn2/matmul" in roles(ffn)["consumer"]
    q = group_of_node_output(model, trace, "q/matmul")
    assert not q.prunable and "'scores'" in " ".join(q.reasons)
    v = group_of_node_output(model, trace, "v/matmul")  # V's head dims: the same ones in every head
    assert v.prunable and v.size == 8 and "attn_out/matmul" in roles(v)["consumer"]
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
    model.graph.node.insert(
        index, helper.make_node("Mystery", [src], ["mystery_out"], name="mystery", domain="com.acme")
    )
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


@pytest.mark.parametrize(
    "in_shape, view, out_shape, expected",
    [
        ((2, 8, 4, 4), View(0, 1), (2, 128), View(0, 1, 1, 16)),  # Flatten: C·H·W blocks
        ((2, 4, 4, 8), View(0, 3), (2, 128), View(0, 1, 16, 1)),  # NHWC flatten: channel innermost
        ((2, 8, 1, 1), View(0, 1), (2, 8), View(0, 1)),  # squeeze spatial
        ((2, 5, 12), View(0, 2), (10, 12), View(0, 1)),  # merge batch and sequence
        ((2, 5, 12), View(0, 2), (2, 5, 3, 4), None),  # split into heads: cannot map
        ((2, 6, 4), View(0, 1), (2, 24), View(0, 1, 1, 4)),
    ],
)
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
    onnx.save_model(synthetic.build("transformer_block"), str(path))
    with pytest.raises(SystemExit):
        main(["analyze", str(path), "--json"])
    a = json.loads(capsys.readouterr().out)
    groups = a["channel_groups"]
    assert any(g["prunable"] for g in groups)
    blocked = [g for g in groups if not g["prunable"]]
    assert any("'scores'" in g["reason"] for g in blocked)
    assert all(g["macs"] >= 0 and g["members"] for g in groups)
    with pytest.raises(SystemExit):
        main(["analyze", str(path)])
    out = capsys.readouterr().out
    assert "Channel groups" in out and "scores" in out


def test_a_head_split_in_a_runtime_built_shape_blocks_its_projection_with_the_reason():
    """transformer_runtime_shapes: the q/k/v projections are split into heads by a Reshape whose target is
    Concat(Shape pieces, [heads, head size]); with the head size a constant there, slicing channels would
    break the Reshape, so those spaces block naming the node and the constant; the FFN's neurons stay a
    prunable group."""
    model, _ = normalize(synthetic.build("transformer_runtime_shapes"))
    trace = trace_channels(model)
    reasons = [r for g in trace.groups for r in g.reasons]
    for name in ("q/heads", "k/heads", "v/heads"):
        assert any(f"'{name}'" in r and "channel count 4 as a constant" in r for r in reasons), name
    prunable = [g for g in trace.groups if g.prunable]
    assert [g.size for g in prunable] == [24]
    assert {m.node for m in trace.members_of(prunable[0].id)} >= {"ffn1/matmul", "ffn2/matmul"}
