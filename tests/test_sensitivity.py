"""Measured sensitivity curves: zero damage for identical outputs, monotone curves, orders kept."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnxprune.passes.normalize import normalize

from models import synthetic
from onnxprune.criteria import GroupRanking, RankData, rank_groups
from onnxprune.fidelity import classifier_outputs
from onnxprune.sensitivity import (
    Trials,
    group_starts,
    guard_deep_cuts,
    measured_rankings,
    metric_measure,
    output_damage,
    raised_curve,
)
from onnxprune.tracer import trace_channels
from tests.helpers import run_ort


def test_output_damage():
    logits = np.random.default_rng(0).normal(size=(8, 5))
    assert output_damage([logits], [logits]) == 0.0
    assert output_damage([logits], [logits + np.eye(5)[[0] * 8] * 3]) > 0
    feat = np.ones((2, 3, 4, 4))  # constant components: measured against their own magnitude
    assert np.isclose(output_damage([feat], [feat * 0.9]), 0.01)


def _ranked(built: onnx.ModelProto):
    """The normalized model, its trace, prunable groups and magnitude rankings."""
    model, _ = normalize(built)
    trace = trace_channels(model)
    groups = trace.prunable_groups()
    rankings, _ = rank_groups("magnitude", groups, RankData.of(model, trace))
    return model, trace, groups, rankings


def test_measured_curves_monotone_and_order_kept():
    model, trace, groups, rankings = _ranked(synthetic.build("residual_add"))
    trials = Trials(model, trace, groups, synthetic.random_inputs(model, batch=8))
    for mode in ("measured", "scaled"):
        measured = measured_rankings(trials, groups, rankings, mode=mode)
        for g in groups:
            curve = measured[g.id].error
            assert curve[0] == 0 and np.isinf(curve[-1]) and np.all(np.diff(curve[:-1]) >= 0)
            np.testing.assert_array_equal(measured[g.id].order, rankings[g.id].order)
        assert any(measured[g.id].error[g.size // 2] > 0 for g in groups)


@pytest.mark.parametrize(
    "name",
    [
        "residual_add",
        "dense_concat",
        "depthwise_se",
        "split_slice",
        "transformer_block",
        "resize_fpn",
        "paddle_convnet",
        "static_batch",
    ],
)
def test_trials_from_the_dense_values_below_a_group_match_whole_model_runs(name):
    """A trial run from where the group's edits start (``group_starts``: the dense values the suffix reads)
    gives the damage of running the whole pruned model, compensated or not, for every group; groups whose
    suffix starts at the graph input read the feeds themselves."""
    built = (
        synthetic.with_static_batch(synthetic.build("residual_add"), 4)
        if name == "static_batch"
        else synthetic.paddle_style_model()
        if name == "paddle_convnet"
        else synthetic.build(name)
    )
    model, trace, groups, rankings = _ranked(built)
    feeds = synthetic.random_inputs(model, batch=4)
    starts = group_starts(model, trace, groups, feeds)
    assert set(starts) == {g.id for g in groups}
    assert any(len(cut[0]) < len(model.graph.node) for cut, _ in starts.values())  # some trials skip nodes

    def halve(plan, pruned):  # a stand-in compensation: edits the weights of the group's consumers
        (gid,) = plan
        consumers = {m.node for m in trace.members_of(gid) if m.role == "consumer"}
        weights = {n.input[1] for n in pruned.graph.node if n.name in consumers and len(n.input) > 1}
        for t in pruned.graph.initializer:
            if t.name in weights and t.data_type == onnx.TensorProto.FLOAT:
                t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t) * 0.5, t.name))

    damages = []
    for g in groups:
        plan = {g.id: np.sort(rankings[g.id].order[g.size // 2 :])}
        for comp in (None, halve):
            trials = Trials(model, trace, groups, feeds, comp)
            whole, suffix = trials.run(plan), trials.run(plan, starts.get(g.id))
            assert np.isclose(suffix, whole, rtol=1e-4, atol=1e-9), (g.id, whole, suffix)
            damages.append(whole)
    assert max(damages) > 0


def test_no_suffix_start_where_an_output_does_not_depend_on_the_edits():
    """Edits to one head of a two-head model leave the other output to nodes the suffix would not hold."""
    from onnxprune.calibration.collect import downstream_cut

    model, _ = normalize(synthetic.build("resize_fpn"))
    assert len(model.graph.output) == 2
    head = next(n for n in model.graph.node if model.graph.output[0].name in n.output)
    assert downstream_cut(model, {head.name}) is None
    nodes, reads = downstream_cut(model, {model.graph.node[0].name})
    assert len(nodes) == len(model.graph.node) and reads == [model.graph.input[0].name]


def _quiet_group_curve(monkeypatch, damage):
    """The scaled curve of residual_add's first group when removing m channels measures damage(m / size)."""
    import warnings

    import onnxprune.sensitivity as sensitivity
    from onnxprune.criteria import GroupRanking

    model, _ = normalize(synthetic.build("residual_add"))
    trace = trace_channels(model)
    g = trace.prunable_groups()[0]
    fractions = []

    def fake_trial(self, plan, start=None):
        fractions.append(1 - len(plan[g.id]) / g.size)
        return damage(fractions[-1])

    monkeypatch.setattr(sensitivity.Trials, "run", fake_trial)
    ranking = {g.id: GroupRanking(g.id, np.arange(g.size), np.append(np.linspace(0, 1, g.size), np.inf))}
    feeds = synthetic.random_inputs(model, batch=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no inf·0
        trials = Trials(model, trace, [g], feeds, compensate=lambda plan, pruned: None)
        out = measured_rankings(trials, [g], ranking, mode="scaled")[g.id]
    return out.error, ranking[g.id].error, fractions


def test_a_quiet_group_is_measured_further_and_never_scaled_to_zero(monkeypatch):
    """No damage at any measured fraction (exactly redundant there): the criterion's own curve stands; a zero
    curve would make every removal of the group look free to the allocator."""
    got, est, fractions = _quiet_group_curve(monkeypatch, lambda f: 0.0)
    assert len(fractions) == 4 and fractions[-1] > 0.8  # 0.25, 0.5, then 0.75 and 0.9
    np.testing.assert_array_equal(got, est)


def test_the_level_of_a_quiet_group_comes_from_the_first_damage(monkeypatch):
    got, est, fractions = _quiet_group_curve(monkeypatch, lambda f: 0.0 if f < 0.7 else 0.3)
    assert len(fractions) == 3  # 0.75 shows damage: 0.9 is not needed
    at = int(round(fractions[-1] * (len(est) - 1)))
    np.testing.assert_allclose(got[at], 0.3) and np.isinf(got[-1])
    assert np.all(got[1:at] > 0)


def _head_model(*ops: str) -> onnx.ModelProto:
    """x [N, 8] -> <ops> -> y: each op from a small table (weights as initializers)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes, cur = [], [], "x"
    for i, op in enumerate(ops):
        out = f"t{i}"
        if op == "Gemm":
            inits += [numpy_helper.from_array(rng.normal(size=(8, 8)).astype(np.float32), f"w{i}")]
            nodes.append(helper.make_node("Gemm", [cur, f"w{i}"], [out]))
        elif op == "MatMul+Add":
            inits += [
                numpy_helper.from_array(rng.normal(size=(8, 8)).astype(np.float32), f"w{i}"),
                numpy_helper.from_array(np.ones(8, np.float32), f"b{i}"),
            ]
            nodes += [
                helper.make_node("MatMul", [cur, f"w{i}"], [f"m{i}"]),
                helper.make_node("Add", [f"m{i}", f"b{i}"], [out]),
            ]
        elif op == "Add":  # a residual: features, not scores
            nodes.append(helper.make_node("Add", [cur, cur], [out]))
        elif op == "Div":  # e.g. mean pooling's sum / count
            inits.append(numpy_helper.from_array(np.full(8, 2.0, np.float32), f"c{i}"))
            nodes.append(helper.make_node("Div", [cur, f"c{i}"], [out]))
        else:
            nodes.append(helper.make_node(op, [cur], [out]))
        cur = out
    nodes.append(helper.make_node("Identity", [cur], ["y"]))
    graph = helper.make_graph(
        nodes,
        "h",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    "ops, scores",
    [
        (("Gemm",), True),
        (("MatMul+Add",), True),
        (("Gemm", "Softmax"), True),
        (("Gemm", "Flatten"), True),
        (("Gemm", "Relu"), False),
        (("MatMul+Add", "Div"), False),
        (("Gemm", "Add"), False),
        ((), False),
    ],
)
def test_classifier_outputs_are_class_scores_not_features(ops, scores):

    assert classifier_outputs(_head_model(*ops)) == [scores]


def test_features_get_standardized_error_and_no_top_k_even_when_2d():
    """Each of an embedding's 8 dims: 1 − R² = mean((0.1·y)²) / var(y), averaged over the dims."""
    from onnxprune.fidelity import compare

    emb = np.random.default_rng(1).normal(size=(6, 8))
    want = float(np.mean(0.01 * np.mean(emb**2, axis=0) / emb.var(axis=0)))
    assert np.isclose(output_damage([emb], [emb * 0.9], [False]), want)
    fid = compare([emb], [emb * 0.9], ["sentence_embedding"], [False])["sentence_embedding"]
    assert (
        "top1_agreement" not in fid
        and "kl_dense_to_pruned" not in fid
        and np.isclose(fid["cosine_mean"], 1.0)
    )
    assert np.isclose(fid["r2_mean"], 1 - want) and fid["components"] == 8 and fid["component_axis"] == 1
    assert "kl_dense_to_pruned" in compare([emb], [emb * 0.9], ["logits"], [True])["logits"]


def test_sensitivity_halves_split_the_sources_and_build_each_halfs_mosaics_from_its_own_images():
    """The sensitivity's compensation is fitted on half A of the calibration sources and its damage
    measured on half B (``stages.sensitivity_halves``): no source on both sides, each half's holdout
    is the other half, and a half's mosaics only hold crops of its own images."""
    from onnxprune.calibration.readers import CalibrationSet

    from onnxprune.stages import sensitivity_halves as _sensitivity_halves

    groups = np.repeat(np.arange(6), 4)  # six sources, four samples each
    x = np.broadcast_to(
        np.arange(24, dtype=np.float32)[:, None, None, None], (24, 3, 16, 16)
    ).copy()  # value = row
    calib = CalibrationSet({"x": x}, {}, "test", groups=groups)
    a, b = _sensitivity_halves(calib, mosaics=24, seed=0)
    rows_a, rows_b = a.calib["x"][:, 0, 0, 0].astype(int), b.calib["x"][:, 0, 0, 0].astype(int)
    assert sorted([*rows_a, *rows_b]) == list(range(24)) and not set(groups[rows_a]) & set(groups[rows_b])
    np.testing.assert_array_equal(a.holdout["x"], b.calib["x"])
    assert a.n_statistics() - a.n_calib() + b.n_statistics() - b.n_calib() == 24
    for half, own in ((a, rows_a), (b, rows_b)):
        tiles = {
            half.mosaics["x"][m, 0, y, z]
            for m in range(len(half.mosaics["x"]))
            for y in (0, 8)
            for z in (0, 8)
        }
        assert tiles <= set(own.astype(np.float32))
    one_source = CalibrationSet({"x": x}, {}, "test", groups=np.zeros(24, int))
    assert _sensitivity_halves(one_source, 24, 0) is None


def test_split_statistics_are_each_streams_and_merge_to_the_whole():
    """One pass over two streams gives each stream's Hessians (as if collected alone) and, merged, the
    Hessians of all rows: the sensitivity's half costs no second pass."""
    from onnxprune.calibration.collect import Wanted, collect_split_statistics, collect_statistics

    from onnxprune.layers import linear_layers

    model, _ = normalize(synthetic.build("conv_chain"))
    name = model.graph.input[0].name
    x = synthetic.random_inputs(model, batch=20, seed=3)[name]
    layers = linear_layers(model)
    a, b = collect_split_statistics(
        model, [[{name: x[:8]}, {name: x[8:12]}], [{name: x[12:]}]], Wanted(layers, {name: 1})
    )
    for step, rows in (("a", x[:12]), ("b", x[12:]), ("a + b", x)):
        if step == "a + b":
            a.merge(b)
        part = b if step == "b" else a
        direct = collect_statistics(model, [{name: rows}], Wanted(layers, {name: 1}))
        for n, h in direct.hessians.items():
            np.testing.assert_allclose(part.hessians[n].hessian(), h.hessian(), rtol=1e-10, atol=1e-12)
            assert part.hessians[n].n == h.n
        np.testing.assert_allclose(part.channels[name].mean_abs, direct.channels[name].mean_abs, rtol=1e-6)
        np.testing.assert_array_equal(part.channels[name].apoz, direct.channels[name].apoz)


def test_pooled_classifier_hessian_is_the_gram_of_every_position():
    """After GlobalAveragePool the classifier's H is (2/(n·P))·Σ x_s x_sᵀ over the P positions of the pooled
    map (a 1x1 conv on it), not the rank-≤n Gram of the n pooled rows."""
    from onnxprune.calibration.collect import Wanted, collect_statistics

    from onnxprune.layers import linear_layers

    model, _ = normalize(synthetic.build("residual_add"))
    name = model.graph.input[0].name
    x = synthetic.random_inputs(model, batch=6, seed=1)[name]
    layers = {n: lay for n, lay in linear_layers(model).items() if lay.pooled_from}
    (fc,) = layers
    stats = collect_statistics(model, [{name: x}], Wanted(layers))
    tapped = onnx.ModelProto()
    tapped.CopyFrom(model)
    tapped.graph.output.extend(
        onnx.helper.make_empty_tensor_value_info(t) for t in (layers[fc].tap, layers[fc].input)
    )
    pre, pooled = run_ort(tapped, {name: x})[-2:]
    pos = np.moveaxis(pre, 1, -1).reshape(-1, pre.shape[1]).astype(np.float64)
    np.testing.assert_allclose(stats.hessians[fc].hessian()[0], 2.0 / len(pos) * pos.T @ pos, rtol=1e-6)
    assert (stats.hessians[fc].n, stats.hessians[fc].samples) == (len(pos), len(x))  # dampening counts images
    flat = pooled.reshape(len(x), -1).astype(np.float64)
    assert not np.allclose(stats.hessians[fc].hessian()[0], 2.0 / len(flat) * flat.T @ flat, rtol=1e-2)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 10), min_size=3, max_size=40), st.data())
def test_a_raised_curve_passes_through_the_measurement_and_keeps_the_measured_part(steps, data):
    error = np.append(np.cumsum([0.0, *steps[:-1]]), np.inf)
    n = len(error) - 1
    deepest = data.draw(st.integers(0, n - 2))
    removed = data.draw(st.integers(deepest + 1, n - 1))
    damage = data.draw(st.floats(0, 100))
    out = raised_curve(error, deepest, removed, damage)
    assert out[removed] >= min(damage, 1e300) - 1e-9 and out[removed] >= error[removed]
    np.testing.assert_array_equal(out[: deepest + 1], error[: deepest + 1])  # what was measured stays
    assert np.all(out[:-1] >= error[:-1]) and np.all(np.diff(out[:-1]) >= 0) and np.isinf(out[-1])
    if damage <= error[removed]:
        np.testing.assert_array_equal(out, error)


def test_the_guard_measures_cuts_past_the_trials_and_replans_where_the_curve_was_low():
    """A curve that says a group's last channels are free (as a criterion extrapolated past its trials may)
    gets that group cut to one channel; the guard measures the cut, raises the curve through the damage and
    the re-plan keeps more channels; every cut of the final plan to under a quarter lies within measured
    depth."""
    model, trace, groups, rankings = _ranked(synthetic.build("residual_add"))
    trials = Trials(model, trace, groups, synthetic.random_inputs(model, batch=8))
    points: dict = {}
    rankings = measured_rankings(trials, groups, rankings, mode="scaled", points=points)
    assert all(max(m for m, _ in points[g.id]) == g.size // 2 for g in groups)
    victim = max(groups, key=lambda g: g.size)
    half = victim.size // 2
    fooled = rankings[victim.id].error.copy()
    fooled[half + 1 : -1] = fooled[half]  # past the trials the curve is flat: the last channels look free
    rankings[victim.id] = GroupRanking(victim.id, rankings[victim.id].order, fooled)
    level = {g.id: rankings[g.id].error[g.size // 2] for g in groups}

    def allocate():  # each group as deep as its curve stays at the level of its measured half-cut
        plan = {}
        for g in groups:
            ok = [m for m in range(g.size) if rankings[g.id].error[m] <= level[g.id]]
            plan[g.id] = np.sort(rankings[g.id].order[max(ok) :])
        return plan

    first = allocate()
    assert len(first[victim.id]) == 1
    plan, guard = guard_deep_cuts(trials, groups, rankings, points, first, allocate)
    raised = [r for r in guard["measurements"] if r["group"] == victim.id and r["raised"]]
    assert raised and raised[0]["measured"] > raised[0]["predicted"]
    assert len(plan[victim.id]) > 1 and guard["unverified"] == []
    for g in groups:  # every cut to under a quarter of the final plan is backed by a measurement as deep
        assert len(plan[g.id]) >= g.size / 4 or g.size - len(plan[g.id]) <= max(m for m, _ in points[g.id])
    assert len(guard["plans"]) >= 2 and guard["plans"][guard["kept"]] == min(guard["plans"])
    assert guard["plans"][guard["kept"]] == trials.damage(plan)


def test_a_replan_that_measures_worse_as_a_whole_is_not_kept():
    """The re-plan is a proposal: one that pays for the raised group by emptying the others measures worse
    end to end than the plan it replaces, and the guard keeps the first plan."""
    model, trace, groups, rankings = _ranked(synthetic.build("residual_add"))
    trials = Trials(model, trace, groups, synthetic.random_inputs(model, batch=8))
    points = {g.id: [(1, 0.0)] for g in groups}  # trials only one channel deep: every deeper cut is past them
    victim = max(groups, key=lambda g: g.size)
    first = {victim.id: np.arange(1)}  # the victim cut to one channel, everything else kept
    flat = rankings[victim.id].error.copy()
    flat[:-1] = 0.0  # the curve says that cut is free: the measurement will raise it
    rankings[victim.id] = GroupRanking(victim.id, rankings[victim.id].order, flat)

    def allocate():  # the victim whole, every other group down to its last channel
        return {g.id: np.arange(g.size if g.id == victim.id else 1) for g in groups}

    plan, guard = guard_deep_cuts(trials, groups, rankings, points, first, allocate, rounds=1)
    assert guard["measurements"][0]["raised"]
    assert guard["plans"][1] > guard["plans"][0] and guard["kept"] == 0
    assert {k: v.tolist() for k, v in plan.items()} == {victim.id: [0]}


def test_a_static_batch_model_is_measured_on_every_batch():
    """Trials of a model with a static batch run over several batches: the damage is that of the same samples
    on the dynamic-batch model, suffix trials included."""
    dynamic = synthetic.build("residual_add")
    feeds = synthetic.random_inputs(dynamic, batch=8)
    batches = [{k: v[i : i + 2] for k, v in feeds.items()} for i in range(0, 8, 2)]
    damages = []
    for built, f in ((dynamic, feeds), (synthetic.with_static_batch(dynamic, 2), batches)):
        model, trace, groups, rankings = _ranked(built)
        trials = Trials(model, trace, groups, f)
        assert len(trials.dense[0]) == 8
        damages.append([trials.damage({g.id: np.sort(rankings[g.id].order[g.size // 2 :])}) for g in groups])
    np.testing.assert_allclose(damages[1], damages[0], rtol=1e-4)


def test_a_metric_with_a_damage_prices_its_output_and_the_default_the_others():
    from onnxprune.metrics import detection_damage, load_metric

    rng = np.random.default_rng(0)
    head = rng.uniform(0, 1, (2, 7, 30)).astype(np.float32)  # [N, 4 + 3 classes, anchors]
    head[:, :4] *= 50
    feat = rng.normal(size=(2, 16)).astype(np.float32)
    moved, off = head.copy(), feat * 0.5
    moved[:, 0] += 3.0
    names, classifier = ["det", "feat"], [False, False]
    measure = metric_measure(load_metric("detection-f1", "score=0.3"), names, classifier)
    expected = detection_damage({"det": head}, {"det": moved}, score=0.3) + output_damage(
        [feat], [off], [False]
    )
    assert measure([head, feat], [moved, off]) == pytest.approx(expected) and expected > 0
    # the metric reads the output its options name (else the first); the default measure prices the rest
    named = metric_measure(load_metric("detection-f1", "score=0.3,output=det"), ["feat", "det"], classifier)
    assert named([feat, head], [off, moved]) == pytest.approx(expected)
    assert metric_measure(load_metric("map-iou"), names, classifier) is None
    assert metric_measure(None, names, []) is None
