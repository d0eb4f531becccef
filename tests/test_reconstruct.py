"""Reconstruction internals: the frontier runner and the per-layer choice of fit."""

from __future__ import annotations

import numpy as np
import onnx
import onnxprune.passes.reconstruct as reconstruct_module
import onnxprune.passes.staged as staged_module
import pytest
from onnxprune.calibration.collect import Frontier, tapped_session
from onnxprune.passes.normalize import normalize
from onnxprune.passes.reconstruct import (
    RefitInputs,
    RidgeProblem,
    _Fit,
    reconstruct,
    rectified_refit,
    rectified_target,
)
from onnxprune.passes.staged import layer_stages, partner_drift, settled_partners

from models import synthetic
from onnxprune.layers import LinearLayer, linear_layers, residual_partners


def _model_and_batches(name: str, n_batches: int = 3):
    model, _ = normalize(synthetic.build(name))
    batches = [synthetic.random_inputs(model, batch=2, seed=i) for i in range(n_batches)]
    return model, batches


def _assert_tapped(model, batches, taps, got) -> None:
    """``got`` (per batch: tap → array) equals a tapped session run from the graph inputs."""
    sess, need = tapped_session(model, taps)
    for feeds, vals in zip(batches, got, strict=True):
        want = sess.run(taps, {k: v for k, v in feeds.items() if k in need})
        for t, w in zip(taps, want, strict=True):
            np.testing.assert_allclose(vals[t], w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "name", ["residual_add", "dense_concat", "depthwise_se", "split_slice", "resize_fpn"]
)
def test_frontier_gives_the_tapped_tensors_stage_by_stage(name):
    model, batches = _model_and_batches(name)
    layers = linear_layers(model)
    front = Frontier(batches)
    for stage in layer_stages(model, layers, set(layers)):
        taps = sorted({layers[n].input for n in stage})
        _assert_tapped(model, batches, taps, front.advance(model, taps))


def test_frontier_runs_downstream_nodes_with_their_edited_weights():
    model, batches = _model_and_batches("residual_add", 1)
    layers = linear_layers(model)
    stages = layer_stages(model, layers, set(layers))
    front = Frontier(batches)
    front.advance(model, sorted({layers[n].input for n in stages[0]}))
    for t in model.graph.initializer:  # zero every weight not yet run: the next taps must see it
        if t.name in {layers[n].weight for n in stages[0]}:
            t.raw_data = bytes(len(t.raw_data))
    later = sorted({layers[n].input for n in stages[1]})
    _assert_tapped(model, batches, later, front.advance(model, later))


def test_frontier_refuses_a_tap_it_has_passed():
    model, batches = _model_and_batches("residual_add", 1)
    layers = linear_layers(model)
    stages = layer_stages(model, layers, set(layers))
    front = Frontier(batches)
    front.advance(model, sorted({layers[n].input for n in stages[-1]}))
    early = [layers[stages[0][0]].output]
    with pytest.raises(ValueError, match="left the frontier"):
        front.advance(model, early)


def _gemm_fit(kept, rng, drift, rows=400, feats=8):
    """A Gemm layer W [3, feats] whose pruned copy reads ``drift(x_dense[:, kept], half)``."""
    dense = LinearLayer("g", "Gemm", "x", "y", "w", "b", groups=1, trans_b=True)
    fit = _Fit(dense, dense, np.arange(1), bias=True, kept_in=np.asarray(kept))
    wd = [np.hstack([rng.normal(size=(3, feats)), rng.normal(size=(3, 1))])]
    for half in (0, 1):
        for _ in range(4):
            xd = rng.normal(size=(rows // 8, feats)).astype(np.float32)
            fit.add(xd, drift(xd[:, kept], half).astype(np.float32), half)
    w0 = [np.hstack([wd[0][:, kept], wd[0][:, -1:]])]
    return fit, wd, w0


def test_refit_keeps_error_correction_for_a_drift_seen_in_both_halves():
    rng = np.random.default_rng(1)
    fit, wd, w0 = _gemm_fit([0, 1, 2, 4, 6], rng, lambda x, half: 2.0 * x + 0.5)
    assert fit.choose(wd, w0, ridge=1e-6)[0] == "correcting"


def test_refit_falls_back_to_local_when_the_drift_does_not_generalize():
    rng = np.random.default_rng(2)
    # each half drifts in its own direction: correcting for one half's drift hurts on the other
    mix = [np.eye(5) + 0.8 * rng.normal(size=(5, 5)) for _ in range(2)]
    fit, wd, w0 = _gemm_fit([0, 1, 2, 4, 6], rng, lambda x, half: x @ mix[half])
    assert fit.choose(wd, w0, ridge=1e-6)[0] == "local"


def test_refit_folds_an_exactly_redundant_input_back_without_the_ridge_pull():
    # input 7 is 1.5 × input 2 and is pruned: W' = W_K with column 2 += 1.5 · column 7 reproduces the dense
    # output exactly, and validation must pick the unregularized fit over the ridge's pull toward W_K
    rng = np.random.default_rng(3)
    dense = LinearLayer("g", "Gemm", "x", "y", "w", "b", groups=1, trans_b=True)
    kept = np.arange(7)
    fit = _Fit(dense, dense, np.arange(1), bias=True, kept_in=kept)
    wd = [np.hstack([rng.normal(size=(3, 8)), rng.normal(size=(3, 1))])]
    for half in (0, 1):
        for _ in range(4):
            xd = rng.normal(size=(50, 8))
            xd[:, 7] = 1.5 * xd[:, 2]
            xd = xd.astype(np.float32)
            fit.add(xd, xd[:, kept], half)
    w0 = [np.hstack([wd[0][:, kept], wd[0][:, -1:]])]
    cand = fit.choose(wd, w0, ridge=1e-3)
    got = fit.solve(fit.halves[0] + fit.halves[1], 0, wd[0], w0[0], 1e-3, cand)
    want = np.hstack([wd[0][:, kept], wd[0][:, -1:]])
    want[:, 2] += 1.5 * wd[0][:, 7]
    assert cand[1] == 0.0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _flatten_fit(rows: int, seed: int = 4):
    """A Gemm reading 6 channels × 16 positions (a Flatten) of which channel 4 is 0.8 × channel 1 (and is
    pruned), from ``rows`` samples per validation half: 96 features, so with 40 rows a half no fit on
    features is determined."""
    rng = np.random.default_rng(seed)
    dense = LinearLayer("g", "Gemm", "x", "y", "w", "b", groups=1, trans_b=True)
    kept = np.array([0, 1, 2, 3, 5])
    positions = (kept[:, None] * 16 + np.arange(16)).reshape(-1)
    fit = _Fit(dense, dense, np.arange(1), bias=True, kept_in=positions, in_unit=16)
    wd = [np.hstack([rng.normal(size=(3, 96)), rng.normal(size=(3, 1))])]
    for half in (0, 1):
        maps = rng.normal(size=(rows, 6, 16))
        maps[:, 4] = 0.8 * maps[:, 1]
        xd = maps.reshape(rows, 96).astype(np.float32)
        fit.add(xd, xd[:, positions], half)
    w0 = [np.hstack([wd[0][:, positions], wd[0][:, -1:]])]
    want = w0[0].copy()
    want[:, 16:32] += 0.8 * wd[0][:, 64:80]  # channel 4's columns into channel 1's, position by position
    return fit, wd, w0, want


def test_channel_fold_is_exact_where_the_features_outnumber_the_rows():
    fit, wd, w0, want = _flatten_fit(rows=40)
    assert fit.fold_layout() is not None
    cand = fit.choose(wd, w0, ridge=1e-3)
    got = fit.solve(fit.halves[0] + fit.halves[1], 0, wd[0], w0[0], 1e-3, cand)
    assert cand[0] == "fold"
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_channel_fold_is_not_offered_where_a_fit_on_features_is_determined():
    fit, *_ = _flatten_fit(rows=400)
    assert fit.fold_layout() is None


def test_candidates_that_tie_go_to_the_least_regularized(monkeypatch):
    """Validation errors within TIE of each other are one error: the unregularized fit is taken."""
    rng = np.random.default_rng(1)
    fit, wd, w0 = _gemm_fit([0, 1, 2, 4, 6], rng, lambda x, half: x)
    totals = [-1e6, -1e6 + 0.3, -1e6 + 0.1, -1e6 + 0.2]  # per candidate (two folds each); the first is best
    errors = iter(np.repeat(totals, 2) / 2)
    monkeypatch.setattr(reconstruct_module, "output_mismatch", lambda *a, **k: next(errors))
    assert fit.choose(wd, w0, ridge=1e-3) == ("correcting", 0.0, 1e-6)


def test_local_compensation_is_the_least_squares_fit_on_the_kept_dense_inputs():
    """compensate_locally (dense Hessians only) = numpy lstsq of the dense outputs on the kept input
    features."""
    from onnx import numpy_helper
    from onnxprune.calibration.collect import HessianSum
    from onnxprune.passes.prune_channels import prune_channels
    from onnxprune.passes.reconstruct import compensate_locally

    from onnxprune.tracer import trace_channels

    model, batches = _model_and_batches("residual_add", 4)
    layers = linear_layers(model)
    trace = trace_channels(model)
    group = max(trace.prunable_groups(), key=lambda g: g.size)
    plan = {group.id: np.arange(0, group.size, 2)}
    kept = trace.kept_channels(plan)
    k_in = {
        n: kept[trace.space_of(lay.input)]
        for n, lay in layers.items()
        if trace.space_of(lay.input) is not None
    }
    k_out = {
        n: kept[trace.space_of(lay.output)]
        for n, lay in layers.items()
        if trace.space_of(lay.output) is not None
    }
    taps = sorted({lay.input for lay in layers.values()})
    sess, need = tapped_session(model, taps)
    acts = [
        dict(zip(taps, sess.run(taps, {k: v for k, v in f.items() if k in need}), strict=True))
        for f in batches
    ]
    sums = {n: HessianSum(lay) for n, lay in layers.items()}
    for a in acts:
        for n, lay in layers.items():
            sums[n].add(a[lay.input])
    hessians = {n: s.hessian() for n, s in sums.items()}
    rows = {n: s.n for n, s in sums.items()}
    pruned = prune_channels(model, trace, plan, infer=False)
    done = compensate_locally(model, pruned, hessians, rows, k_in, k_out, ridge=1e-12, shrink=0.0)
    assert done  # the group feeds at least one layer
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    p_inits = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    for name in done:
        lay = layers[name]
        x = np.concatenate(
            [lay.features(a[lay.input].astype(np.float64))[0] for a in acts]
        )  # [rows, features]
        wd = lay.matrix(inits[lay.weight])[0].astype(np.float64)
        taps_per = wd.shape[1] // (lay.in_per_group if lay.op == "Conv" else wd.shape[1])
        cols = (np.asarray(k_in[name])[:, None] * taps_per + np.arange(taps_per)).reshape(-1)
        out_rows = np.asarray(k_out.get(name, np.arange(len(wd))))
        got = linear_layers(pruned)[name].matrix(p_inits[lay.weight])[0]
        want = np.linalg.lstsq(x[:, cols], x @ wd[out_rows].T, rcond=None)[0].T
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_validation_halves_keep_every_group_on_one_side():
    from onnxprune.passes.staged import half_chunks, validation_halves

    assert [h.tolist() for h in validation_halves([2, 2, 1])] == [
        [0, 0],
        [0, 0],
        [1],
    ]  # batches, first half first
    photos = np.array(list(range(10)) * 2 + list(range(10, 14)))  # view-major: two views of 0-9, one of 10-13
    halves = np.concatenate(validation_halves([8, 8, 8], photos))
    for p in np.unique(photos):
        assert len(set(halves[photos == p])) == 1, f"photo {p} on both sides"
    assert abs(int(halves.sum()) - len(halves) // 2) <= 2  # balanced
    with pytest.raises(ValueError, match="3 groups for 4"):
        validation_halves([2, 2], photos[:3])
    rows = [
        (r.tolist() if isinstance(r, np.ndarray) else r, h)
        for r, h in half_chunks(np.array([0, 1, 0, 0, 1, 1]), 4)
    ]
    assert rows == [([0, 2, 3], 0), ([1], 1), (slice(4, 8), 1)]  # a chunk wholly in one half stays a slice


def test_refit_with_groups_equal_to_the_batch_halves_is_the_default_refit():
    from onnx import numpy_helper
    from onnxprune.passes.prune_channels import prune_channels

    from onnxprune.tracer import trace_channels

    model, batches = _model_and_batches("residual_add", 4)  # 4 batches of 2 rows
    trace = trace_channels(model)
    group = max(trace.prunable_groups(), key=lambda g: g.size)
    plan = {group.id: np.arange(0, group.size, 2)}
    layers = linear_layers(model)
    k_in, k_out = trace.layer_kept(layers, plan)
    changed = {m.node for m in trace.members if m.space in trace.kept_channels(plan)}
    results = []
    for groups in (None, np.array([7, 7, 7, 7, 3, 3, 3, 3])):
        pruned = prune_channels(model, trace, plan, infer=False)
        reconstruct(
            model, pruned, changed, lambda: iter(batches), RefitInputs(k_out, k_in, groups=groups), ridge=1e-3
        )
        results.append({t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer})
    for name, want in results[0].items():
        np.testing.assert_array_equal(results[1][name], want)


def test_only_partners_of_settled_layers_are_tapped():
    """A projection shortcut: b2.proj's partner is b2.conv2's output (fit one stage later: tapping it would
    run b2.conv2 with stale weights), b2.conv2's partner is b2.proj's output (fit one stage earlier)."""
    model, _ = normalize(synthetic.build("residual_add"))
    layers = linear_layers(model)
    partners = residual_partners(model, layers)
    assert set(partners) == {"b1.conv2", "b2.proj", "b2.conv2"}
    assert settled_partners(model, partners, layer_stages(model, layers, set(layers))) == {
        "b1.conv2": partners["b1.conv2"],
        "b2.conv2": partners["b2.conv2"],
    }


def test_refit_keeps_the_block_output_of_a_residual_layer(monkeypatch):
    """x → conv_a → Relu (r) → conv_b → Add(conv_b, r), conv_a's outputs damaged: the refit of conv_b keeps
    conv_b(r) + r, taking up r's drift too, closer to the dense block output than a fit of conv_b(r) alone."""
    rng = np.random.default_rng(0)
    c = 16
    w_a, w_b = (rng.standard_normal((c, c, 1, 1)).astype(np.float32) / 4 for _ in range(2))
    h = onnx.helper

    def model(wa):
        nodes = [
            h.make_node("Conv", ["x", "a.w"], ["a"], name="conv_a"),
            h.make_node("Relu", ["a"], ["r"], name="relu"),
            h.make_node("Conv", ["r", "b.w"], ["b"], name="conv_b"),
            h.make_node("Add", ["b", "r"], ["y"], name="add"),
        ]
        inits = [onnx.numpy_helper.from_array(wa, "a.w"), onnx.numpy_helper.from_array(w_b, "b.w")]
        vi = lambda n: h.make_tensor_value_info(n, onnx.TensorProto.FLOAT, ["N", c, 3, 3])  # noqa: E731
        return h.make_model(
            h.make_graph(nodes, "res", [vi("x")], [vi("y")], inits),
            opset_imports=[h.make_opsetid("", 17)],
            ir_version=8,
        )

    dense = model(w_a)
    damaged = w_a.copy()
    damaged[: c // 2] *= rng.uniform(0.3, 1.7, (c // 2, c, 1, 1)).astype(np.float32)
    x = (rng.standard_normal((96, c, 3, 3)) + rng.standard_normal((1, c, 1, 1))).astype(np.float32)
    batches = [{"x": x[i : i + 16]} for i in range(0, len(x), 16)]
    want = tapped_session(dense, ["y"])[0].run(["y"], {"x": x})[0]
    errors = {}
    for label in ("block", "layer"):
        if label == "layer":
            monkeypatch.setattr(staged_module, "residual_partners", lambda *args: {})
        pruned = model(damaged)
        done = reconstruct(dense, pruned, {"conv_a"}, lambda: iter(batches), RefitInputs({}), ridge=1e-3)
        assert list(done) == ["conv_b"] and done["conv_b"].endswith("block output") == (label == "block")
        got = tapped_session(pruned, ["y"])[0].run(["y"], {"x": x})[0]
        errors[label] = float(np.sum((got - want) ** 2))
    assert errors["block"] < 0.8 * errors["layer"]


def test_partner_drift_lines_up_with_the_layers_output_rows():
    conv = LinearLayer(
        "c", "Conv", "x", "y", "w", None, 1, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), in_per_group=3
    )
    rng = np.random.default_rng(0)
    s_dense, s_pruned = rng.standard_normal((2, 4, 3, 3)), rng.standard_normal((2, 2, 3, 3))
    kept = np.array([1, 3])
    got = partner_drift(conv, s_dense, s_pruned, (18, 2), kept)
    np.testing.assert_allclose(got, conv.output_rows(s_dense[:, kept] - s_pruned), rtol=1e-6)
    assert partner_drift(conv, s_dense, s_dense, (18, 4)) is not None
    assert partner_drift(conv, s_dense, s_dense, (18, 2)) is None  # not the layer's outputs
    assert partner_drift(conv, s_dense[:, :, :1, :1], s_dense[:, :, :1, :1], (18, 4)) is None  # broadcast Add


def test_rectified_target_keeps_the_dense_output_where_the_clamp_passes_it():
    y_dense = np.array([[-2.0, 0.5, 7.0, -1.0, 9.0]])
    y_fit = np.array([[1.0, 0.2, 5.0, -3.0, 8.0]])
    # below 0: the fit's value if it is dead too, else 0; above 6: the fit's value if it saturates, else 6
    np.testing.assert_array_equal(rectified_target(y_dense, y_fit, 0.0, 6.0), [[0.0, 0.5, 6.0, -3.0, 8.0]])


def _rectified_problem(rng, rows=4000, feats=6):
    """Pruned inputs (a noisy, partial view of the dense ones) for a layer whose output a ReLU reads."""
    xd = rng.normal(size=(rows, feats)).astype(np.float32)
    xp = (xd[:, :4] + 0.3 * rng.normal(size=(rows, 4))).astype(np.float32)
    wd = np.hstack([rng.normal(size=(3, feats)), -0.5 * np.ones((3, 1))])
    x1 = np.hstack([xp, np.ones((rows, 1), np.float32)]).astype(np.float64)
    return xd, xp, wd, x1.T @ x1


def _errors(w, wd, xd, xp):
    """(squared distance of the fit's outputs to those the ReLU maps onto the dense ones, error after the
    ReLU)."""
    ones = np.ones((len(xd), 1))
    y_dense, y_fit = np.hstack([xd, ones]) @ wd.T, np.hstack([xp, ones]) @ w.T
    distance = float(np.sum((rectified_target(y_dense, y_fit, 0.0, np.inf) - y_fit) ** 2))
    return distance, float(np.sum((np.maximum(y_dense, 0) - np.maximum(y_fit, 0)) ** 2))


def test_rectified_refit_lowers_the_error_after_the_relu_step_by_step():
    rng = np.random.default_rng(4)
    xd, xp, wd, g = _rectified_problem(rng)
    x1 = np.hstack([xp, np.ones((len(xp), 1))])
    least_squares = np.linalg.lstsq(x1, np.hstack([xd, np.ones((len(xd), 1))]) @ wd.T, rcond=None)[0].T

    def rows():
        for lo in range(0, len(xd), 1000):
            yield xd[lo : lo + 1000], xp[lo : lo + 1000]

    w0 = np.zeros_like(least_squares)
    errors = [_errors(least_squares, wd, xd, xp)]
    for steps in (1, 2, 4, 8):
        w = rectified_refit(
            least_squares, RidgeProblem(wd, w0, g, 0.0, True), (0.0, np.inf), rows, steps=steps
        )
        errors.append(_errors(w, wd, xd, xp))
    distances = [d for d, _ in errors]
    assert all(
        b <= a * (1 + 1e-6) for a, b in zip(distances, distances[1:], strict=False)
    )  # every step helps
    assert errors[-1][1] < 0.9 * errors[0][1]  # and what the ReLU passes on is closer to the dense model's


def test_rectified_refit_without_clamping_is_the_least_squares_fit():
    rng = np.random.default_rng(5)
    xd, xp, wd, g = _rectified_problem(rng)
    x1 = np.hstack([xp, np.ones((len(xp), 1))])
    want = np.linalg.lstsq(x1, np.hstack([xd, np.ones((len(xd), 1))]) @ wd.T, rcond=None)[0].T
    start = want + 0.1 * rng.normal(
        size=want.shape
    )  # any start: nothing clamps, so one step is least squares
    got = rectified_refit(
        start,
        RidgeProblem(wd, np.zeros_like(want), g, 0.0, True),
        (-np.inf, np.inf),
        lambda: iter([(xd, xp)]),
        steps=1,
    )
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _relu_refit_errors(monkeypatch, seed: int, bias: float, residual: bool) -> tuple[dict, dict]:
    """x → conv_a [→ Relu (r)] → conv_b [→ Add(conv_b, r)] → Relu with a third of conv_a's outputs lost (no
    refit
    is exact): conv_b's refit without (RECTIFY_STEPS = 0) and with the refinement for that last Relu; returns
    (the refit's report, squared error after the last Relu against the dense model, per steps)."""
    rng = np.random.default_rng(seed)
    c = 12
    w_a, w_b = (rng.standard_normal((c, c, 1, 1)).astype(np.float32) / 3 for _ in range(2))
    b_b = rng.normal(bias, 0.3, c).astype(np.float32)  # mostly below zero: a mostly dead ReLU
    h = onnx.helper

    def model(wa):
        if residual:
            nodes = [
                h.make_node("Conv", ["x", "a.w"], ["a"], name="conv_a"),
                h.make_node("Relu", ["a"], ["r"], name="relu_a"),
                h.make_node("Conv", ["r", "b.w", "b.b"], ["b"], name="conv_b"),
                h.make_node("Add", ["b", "r"], ["s"], name="add"),
                h.make_node("Relu", ["s"], ["y"], name="relu"),
            ]
        else:
            nodes = [
                h.make_node("Conv", ["x", "a.w"], ["a"], name="conv_a"),
                h.make_node("Conv", ["a", "b.w", "b.b"], ["b"], name="conv_b"),
                h.make_node("Relu", ["b"], ["y"], name="relu"),
            ]
        inits = [
            onnx.numpy_helper.from_array(wa, "a.w"),
            onnx.numpy_helper.from_array(w_b, "b.w"),
            onnx.numpy_helper.from_array(b_b, "b.b"),
        ]
        vi = lambda n: h.make_tensor_value_info(n, onnx.TensorProto.FLOAT, ["N", c, 3, 3])  # noqa: E731
        return h.make_model(
            h.make_graph(nodes, "relu", [vi("x")], [vi("y")], inits),
            opset_imports=[h.make_opsetid("", 17)],
            ir_version=8,
        )

    dense = model(w_a)
    damaged = w_a.copy()
    damaged[: c // 3] = 0
    x = rng.standard_normal((96, c, 3, 3)).astype(np.float32)
    batches = [{"x": x[i : i + 16]} for i in range(0, len(x), 16)]
    want = tapped_session(dense, ["y"])[0].run(["y"], {"x": x})[0]
    errors = {}
    for steps in (0, 2):
        monkeypatch.setattr(reconstruct_module, "RECTIFY_STEPS", steps)
        pruned = model(damaged)
        done = reconstruct(dense, pruned, {"conv_a"}, lambda: iter(batches), RefitInputs({}), ridge=1e-3)
        got = tapped_session(pruned, ["y"])[0].run(["y"], {"x": x})[0]
        errors[steps] = float(np.sum((got - want) ** 2))
    return done, errors


def test_refit_of_a_layer_a_relu_reads_is_closer_after_the_relu(monkeypatch):
    done, errors = _relu_refit_errors(monkeypatch, seed=1, bias=-0.5, residual=False)
    assert list(done) == ["conv_b"]
    assert errors[2] < 0.98 * errors[0]  # measured: 3 % closer (580 vs 598)


def test_refit_of_a_residual_layer_a_relu_reads_is_closer_after_the_relu(monkeypatch):
    """The ReLU reads the block output conv_b(r) + r: the block-output refit is refined in that space."""
    done, errors = _relu_refit_errors(monkeypatch, seed=2, bias=-0.8, residual=True)
    assert list(done) == ["conv_b"] and done["conv_b"].endswith("residual block output")
    assert errors[2] < 0.98 * errors[0]  # measured: 3 % closer (839 vs 864)


def test_rectified_refit_reading_every_kth_row_stays_close_to_reading_all():
    rng = np.random.default_rng(4)
    xd, xp, wd, g = _rectified_problem(rng, rows=20000)
    x1 = np.hstack([xp, np.ones((len(xp), 1))])
    least_squares = np.linalg.lstsq(x1, np.hstack([xd, np.ones((len(xd), 1))]) @ wd.T, rcond=None)[0].T
    w0 = np.zeros_like(least_squares)
    every, strided = (
        rectified_refit(
            least_squares,
            RidgeProblem(wd, w0, g, 0.0, True),
            (0.0, np.inf),
            lambda: iter([(xd, xp)]),
            steps=2,
            stride=k,
        )
        for k in (1, 4)
    )
    errors = [_errors(w, wd, xd, xp)[1] for w in (least_squares, every, strided)]
    assert errors[2] < errors[0] and abs(errors[2] - errors[1]) < 0.02 * errors[1]
