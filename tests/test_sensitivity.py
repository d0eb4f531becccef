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
