"""Pruning pass oracles: pruned == dense with the pruned channels' consumer weights zeroed (DESIGN #1),
on hypothesis-generated keep-plans over every synthetic graph and the Fashion-MNIST ResNet; plus the
cost model agreeing with the tracer's MAC prediction, and shared weights surviving intact."""

from __future__ import annotations

from functools import cache

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnxprune.passes.normalize import normalize
from onnxprune.passes.prune_channels import mask_channels, prune_channels

from models import synthetic
from models.synthetic_builder import Builder
from onnxprune.costs import model_cost
from onnxprune.tracer import trace_channels
from tests.helpers import MODELS, rel_error, run_ort

GRAPHS = [*synthetic.names(), "fmnist_resnet"]


@cache
def prepared(name: str):
    if name == "fmnist_resnet":
        model = onnx.load_model(str(MODELS / "fmnist_resnet.onnx"))
        feeds = {"input": np.load(MODELS / "fmnist_calib.npz")["input"][:3]}
    else:
        model = synthetic.build(name)
        feeds = synthetic.random_inputs(model, batch=3)
    model, _ = normalize(model)
    trace = trace_channels(model)
    base = model_cost(model)
    return model, trace, feeds, {n.name: n.macs or 0 for n in base.nodes}


@st.composite
def keep_plans(draw, trace):
    """Any subset of the prunable groups, each keeping any non-empty subset of its channels."""
    plan = {}
    for g in trace.prunable_groups():
        if draw(st.booleans()):
            kept = draw(st.sets(st.integers(0, g.size - 1), min_size=1, max_size=g.size))
            plan[g.id] = np.array(sorted(kept))
    return plan


def check_plan(name: str, plan) -> None:
    model, trace, feeds, node_macs = prepared(name)
    pruned = prune_channels(model, trace, plan)
    onnx.checker.check_model(pruned, full_check=True)
    masked = mask_channels(model, trace, plan)
    for a, b in zip(run_ort(pruned, feeds), run_ort(masked, feeds), strict=True):
        assert a.shape == b.shape and rel_error(a, b) <= 1e-5
    predicted = trace.predict_macs(node_macs, plan)
    assert abs(model_cost(pruned).macs - predicted) <= 1e-9 * max(predicted, 1)


def _property(name: str, examples: int):
    _, trace, _, _ = prepared(name)
    if not trace.prunable_groups():
        pytest.skip("no prunable group")

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(plan=keep_plans(trace))
    def run(plan):
        check_plan(name, plan)

    run()


@pytest.mark.parametrize("name", GRAPHS)
def test_mask_equivalence_quick(name):
    _property(name, 6)


@pytest.mark.slow
@pytest.mark.parametrize("name", GRAPHS)
def test_mask_equivalence_100_examples(name):
    _property(name, 100)


@pytest.mark.parametrize("name", GRAPHS)
def test_half_of_every_group_valid_and_macs_predicted(name):
    _, trace, _, _ = prepared(name)
    plan = {g.id: np.arange(0, g.size, 2) for g in trace.prunable_groups()}
    check_plan(name, plan)


def test_pruned_model_really_smaller_and_untouched_input():
    model, trace, feeds, _ = prepared("residual_add")
    before = model.SerializeToString()
    plan = {g.id: np.arange(g.size // 2) for g in trace.prunable_groups()}
    pruned = prune_channels(model, trace, plan)
    assert model.SerializeToString() == before
    assert model_cost(pruned).params < model_cost(model).params
    conv = next(t for t in pruned.graph.initializer if t.name.startswith("b1.conv1.weight"))
    assert conv.dims[0] == 4 and conv.dims[1] == 4


def test_shared_weight_is_copied_not_sliced_under_another_reader():
    b = Builder(0, 17)
    x = b.input("x", ["N", 3, 8, 8])
    w = b.weight("shared.weight", [6, 3, 3, 3])
    a = b.op("Conv", [x, w], "conv_a", pads=[1, 1, 1, 1])
    a = b.op("Relu", [a], "relu_a")
    y1 = b.conv(a, 6, 4, name="head_a")
    y2 = b.op("Conv", [x, w], "conv_b", pads=[1, 1, 1, 1])  # same weight, output is a graph output
    b.output(y1, ["N", 4, 8, 8])
    b.output(y2, ["N", 6, 8, 8])

    def shared_weight():
        pass

    model, _ = normalize(b.finish(shared_weight))
    trace = trace_channels(model)
    g = trace.group_of(trace.space_of("conv_a"), 0)
    plan = {g.id: np.array([0, 2, 5])}
    pruned = prune_channels(model, trace, plan)
    feeds = synthetic.random_inputs(model, batch=2)
    got, want = run_ort(pruned, feeds), run_ort(mask_channels(model, trace, plan), feeds)
    assert rel_error(got[0], want[0]) <= 1e-5
    np.testing.assert_array_equal(got[1], run_ort(model, feeds)[1])  # conv_b still reads the full weight
    dims = {
        n.name: [t.dims for t in pruned.graph.initializer if t.name == n.input[1]][0]
        for n in pruned.graph.node
        if n.name in ("conv_a", "conv_b")
    }
    assert dims == {"conv_a": [3, 3, 3, 3], "conv_b": [6, 3, 3, 3]}


def test_unfolded_batchnorm_and_prelu_params_are_sliced():
    b = Builder(0, 17)
    x = b.input("x", ["N", 3, 8, 8])
    h = b.conv(x, 3, 8, name="c1")
    s = b.op("Add", [h, b.conv(x, 3, 8, name="c2")], "sum")
    s = b.bn(s, 8, name="bn_after_add")  # cannot fold: its input comes from an Add
    s = b.op(
        "PRelu", [s, b.param("slope", np.linspace(0.1, 0.4, 8, dtype=np.float32).reshape(8, 1, 1))], "prelu"
    )
    s = b.op(
        "Mul", [s, b.param("scale", np.linspace(1, 2, 8, dtype=np.float32).reshape(1, 8, 1, 1))], "mul_scale"
    )
    y = b.conv(s, 8, 4, name="head")
    b.output(y, ["N", 4, 8, 8])

    def bn_prelu():
        pass

    model, report = normalize(b.finish(bn_prelu))
    assert report.bn_kept == ["bn_after_add"]
    trace = trace_channels(model)
    g = trace.group_of(trace.space_of("c1"), 0)
    plan = {g.id: np.array([1, 4, 6])}
    pruned = prune_channels(model, trace, plan)
    onnx.checker.check_model(pruned, full_check=True)
    feeds = synthetic.random_inputs(model, batch=2)
    assert rel_error(run_ort(pruned, feeds)[0], run_ort(mask_channels(model, trace, plan), feeds)[0]) <= 1e-5
    sizes = {t.name: list(t.dims) for t in pruned.graph.initializer}
    assert sizes["slope"] == [3, 1, 1] and sizes["scale"] == [1, 3, 1, 1]


def test_blocked_group_plan_is_refused():
    _, trace, _, _ = prepared("residual_add")
    blocked = next(g for g in trace.groups if not g.prunable)
    with pytest.raises(ValueError, match="not prunable"):
        trace.kept_channels({blocked.id: np.array([0])})
    g = trace.prunable_groups()[0]
    with pytest.raises(ValueError, match="not be empty|distinct"):
        trace.kept_channels({g.id: np.array([], np.int64)})


def _more_ops_graph():
    """InstanceNormalization, Resize with explicit sizes, spatial Pad, Sub/Div/Max with per-channel
    constants, Cast round trip, Unsqueeze/Squeeze, ReduceMean over space: all pass channels through."""
    b = Builder(1, 17)
    x = b.input("x", ["N", 3, 8, 8])
    h = b.conv(x, 3, 6, name="c1")
    h = b.op(
        "InstanceNormalization",
        [
            h,
            b.param("in.scale", np.linspace(0.5, 1.5, 6, dtype=np.float32)),
            b.param("in.bias", np.linspace(-1, 1, 6, dtype=np.float32)),
        ],
        "inorm",
    )
    h = b.op(
        "Resize", [h, "", "", b.param("sizes", np.array([2, 6, 16, 16], np.int64))], "up", mode="nearest"
    )
    h = b.op("Pad", [h, b.param("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))], "pad")
    h = b.op("Sub", [h, b.param("mean", np.arange(6, dtype=np.float32).reshape(6, 1, 1))], "sub")
    h = b.op("Div", [h, b.param("std", np.linspace(1, 2, 6, dtype=np.float32).reshape(6, 1, 1))], "div")
    h = b.op("Max", [h, b.param("floor", np.full((1, 6, 1, 1), -0.5, np.float32))], "max")
    h = b.op(
        "Cast", [b.op("Cast", [h], "to16", to=onnx.TensorProto.FLOAT16)], "to32", to=onnx.TensorProto.FLOAT
    )
    h = b.op("Unsqueeze", [h, b.param("ax", np.array([2], np.int64))], "unsq")
    h = b.op("Squeeze", [h, b.param("ax", np.array([2], np.int64))], "sq")
    h = b.op("ReduceMean", [h], "gap", axes=[2, 3], keepdims=1)
    y = b.conv(h, 6, 4, k=1, name="head")
    b.output(y, [2, 4, 1, 1])

    def more_ops():
        pass

    model = b.finish(more_ops)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2  # Resize sizes fix the batch
    return model


def test_more_ops_pass_channels_through():
    model, _ = normalize(_more_ops_graph())
    trace = trace_channels(model)
    g = trace.group_of(trace.space_of("c1"), 0)
    assert g.prunable, g.reasons
    kinds = {(m.node, m.kind) for m in trace.members}
    assert ("up", "resize") in kinds and ("inorm", "param") in kinds
    plan = {g.id: np.array([0, 3, 4])}
    pruned = prune_channels(model, trace, plan)
    onnx.checker.check_model(pruned, full_check=True)
    feeds = synthetic.random_inputs(model, batch=2)
    assert rel_error(run_ort(pruned, feeds)[0], run_ort(mask_channels(model, trace, plan), feeds)[0]) <= 1e-5
    sizes = next(t for t in pruned.graph.initializer if t.name == "sizes")
    assert list(onnx.numpy_helper.to_array(sizes)) == [2, 3, 16, 16]


def test_pad_on_channel_axis_blocks():
    b = Builder(0, 17)
    x = b.input("x", ["N", 3, 8, 8])
    h = b.conv(x, 3, 6, name="c1")
    h = b.op("Pad", [h, b.param("pads", np.array([0, 1, 0, 0, 0, 1, 0, 0], np.int64))], "chan_pad")
    b.output(b.conv(h, 8, 4, name="head"), ["N", 4, 8, 8])

    def pad_channels():
        pass

    model, _ = normalize(b.finish(pad_channels))
    trace = trace_channels(model)
    g = trace.group_of(trace.space_of("c1"), 0)
    assert not g.prunable and "'chan_pad' (Pad)" in " ".join(g.reasons)
