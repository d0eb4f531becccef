"""Measured sensitivity curves: zero damage for identical outputs, monotone curves, orders kept."""

from __future__ import annotations

import numpy as np
from onnxprune.passes.normalize import normalize

from models import synthetic
from onnxprune.criteria import rank_groups
from onnxprune.layers import initializer_dict
from onnxprune.sensitivity import measured_rankings, output_damage
from onnxprune.tracer import trace_channels


def test_output_damage():
    logits = np.random.default_rng(0).normal(size=(8, 5))
    assert output_damage([logits], [logits]) == 0.0
    assert output_damage([logits], [logits + np.eye(5)[[0] * 8] * 3]) > 0
    feat = np.ones((2, 3, 4, 4))
    assert np.isclose(output_damage([feat], [feat * 0.9]), 0.01)


def test_measured_curves_monotone_and_order_kept():
    model, _ = normalize(synthetic.build("residual_add"))
    trace = trace_channels(model)
    groups = trace.prunable_groups()
    rankings, _ = rank_groups("magnitude", trace, groups, initializer_dict(model),
                              {n.name: list(n.input) for n in model.graph.node})
    feeds = synthetic.random_inputs(model, batch=8)
    for mode in ("measured", "scaled"):
        measured = measured_rankings(model, trace, groups, rankings, feeds, mode=mode)
        for g in groups:
            curve = measured[g.id].error
            assert curve[0] == 0 and np.isinf(curve[-1]) and np.all(np.diff(curve[:-1]) >= 0)
            np.testing.assert_array_equal(measured[g.id].order, rankings[g.id].order)
        assert any(measured[g.id].error[g.size // 2] > 0 for g in groups)


def test_scaled_curve_of_a_harmless_group_is_zero_without_warnings(monkeypatch):
    """A group whose measured damage is 0 (dead channels) scales its curve by 0: finite, no inf·0 warning."""
    import warnings

    import onnxprune.sensitivity as sensitivity
    from onnxprune.criteria import GroupRanking

    monkeypatch.setattr(sensitivity, "output_damage", lambda dense, other: 0.0)

    model, _ = normalize(synthetic.build("residual_add"))
    trace = trace_channels(model)
    g = trace.prunable_groups()[0]
    ranking = {g.id: GroupRanking(g.id, np.arange(g.size), np.append(np.linspace(0, 1, g.size), np.inf))}
    feeds = synthetic.random_inputs(model, batch=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = measured_rankings(model, trace, [g], ranking, feeds, mode="scaled",
                                compensate=lambda plan, pruned: None)[g.id]
    assert np.all(out.error[:-1] == 0.0) and np.isinf(out.error[-1])
