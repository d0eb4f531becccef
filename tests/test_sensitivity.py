"""Measured sensitivity curves: zero damage for identical outputs, monotone curves, orders kept."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
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

    monkeypatch.setattr(sensitivity, "output_damage", lambda dense, other, classifier=None: 0.0)

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
            inits += [numpy_helper.from_array(rng.normal(size=(8, 8)).astype(np.float32), f"w{i}"),
                      numpy_helper.from_array(np.ones(8, np.float32), f"b{i}")]
            nodes += [helper.make_node("MatMul", [cur, f"w{i}"], [f"m{i}"]), helper.make_node("Add", [f"m{i}", f"b{i}"], [out])]
        elif op == "Add":  # a residual: features, not scores
            nodes.append(helper.make_node("Add", [cur, cur], [out]))
        elif op == "Div":  # e.g. mean pooling's sum / count
            inits.append(numpy_helper.from_array(np.full(8, 2.0, np.float32), f"c{i}"))
            nodes.append(helper.make_node("Div", [cur, f"c{i}"], [out]))
        else:
            nodes.append(helper.make_node(op, [cur], [out]))
        cur = out
    nodes.append(helper.make_node("Identity", [cur], ["y"]))
    graph = helper.make_graph(nodes, "h", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("ops, scores", [(("Gemm",), True), (("MatMul+Add",), True), (("Gemm", "Softmax"), True),
                                         (("Gemm", "Flatten"), True), (("Gemm", "Relu"), False),
                                         (("MatMul+Add", "Div"), False), (("Gemm", "Add"), False), ((), False)])
def test_classifier_outputs_are_class_scores_not_features(ops, scores):
    from onnxprune.fidelity import classifier_outputs

    assert classifier_outputs(_head_model(*ops)) == [scores]


def test_features_get_relative_error_and_no_top_k_even_when_2d():
    from onnxprune.fidelity import compare

    emb = np.random.default_rng(1).normal(size=(6, 8))
    assert np.isclose(output_damage([emb], [emb * 0.9], [False]), 0.01)
    fid = compare([emb], [emb * 0.9], ["sentence_embedding"], [False])["sentence_embedding"]
    assert "top1_agreement" not in fid and "kl_dense_to_pruned" not in fid and np.isclose(fid["cosine_mean"], 1.0)
    assert "kl_dense_to_pruned" in compare([emb], [emb * 0.9], ["logits"], [True])["logits"]


def test_half_statistics_fit_one_half_of_the_sources_and_measure_on_the_other():
    """The sensitivity's compensation is fitted on half A of the calibration sources and its damage
    measured on half B, so it is priced on inputs it did not fit (``pipeline._half_statistics``)."""
    from onnxprune.calibration.collect import collect_statistics
    from onnxprune.calibration.readers import CalibrationSet

    from onnxprune.layers import linear_layers
    from onnxprune.pipeline import CompressOptions, _half_statistics

    model, _ = normalize(synthetic.build("conv_chain"))
    name = model.graph.input[0].name
    x = synthetic.random_inputs(model, batch=24, seed=3)[name]
    groups = np.repeat(np.arange(6), 4)  # six sources, four samples each
    calib = CalibrationSet({name: x}, {}, "test", groups=groups)
    layers = linear_layers(model)
    hessians, rows, half_b = _half_statistics(model, calib, layers, CompressOptions())
    b_rows = [i for i in range(24) if any(np.array_equal(x[i], r) for r in half_b[name])]
    a_rows = sorted(set(range(24)) - set(b_rows))
    assert b_rows and a_rows and not set(groups[a_rows]) & set(groups[b_rows])
    direct = collect_statistics(model, [{name: x[a_rows]}], layers, {}, dtype=np.float32)
    for n, h in direct.hessians.items():
        np.testing.assert_allclose(hessians[n], h.hessian(), rtol=1e-5, atol=1e-6)
        assert rows[n] == h.n
    one_source = CalibrationSet({name: x}, {}, "test", groups=np.zeros(24, int))
    assert _half_statistics(model, one_source, layers, CompressOptions()) is None
