"""N:M and unstructured sparsity: SparseGPT against a direct OBS computation, TensorRT layout of the masks,
eligibility, and whole models sparsified end to end (checker, onnxruntime, pattern on every eligible
weight)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxprune.passes.staged as staged_module
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxprune.passes.normalize import normalize
from onnxprune.passes.sparsify import SparsifyOptions, pattern_report, sparsify

from onnxprune.layers import initializer_dict
from onnxprune.modelio import load_model
from onnxprune.sparsity import (
    Pattern,
    bias_correction,
    check_pattern,
    corrected_sparsegpt,
    corrected_target,
    magnitude_nm,
    masked_refit,
    obs_reference_prune,
    output_mismatch,
    parse_pattern,
    relative_output_error,
    sparsegpt_prune,
    tap_major_order,
)
from tests.helpers import MODELS, run_ort


def correlated_layer(rows=6, cols=24, samples=300, dead=(5,), seed=0):
    """W and H = (2/n)·XᵀX from correlated inputs with some dead (always zero) features."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, cols)) @ rng.standard_normal((cols, cols)) + rng.standard_normal(cols)
    x[:, list(dead)] = 0.0
    return rng.standard_normal((rows, cols)), 2.0 / samples * x.T @ x


@pytest.mark.parametrize(
    "kwargs", [dict(n=2, m=4), dict(n=1, m=4), dict(n=3, m=8), dict(sparsity=0.5), dict(sparsity=0.3)]
)
def test_sparsegpt_equals_direct_obs(kwargs):
    """Cholesky rows + lazy block updates (blocks of 8 over 24 columns) = explicit OBS steps and downdates."""
    w, h = correlated_layer()
    fast, fast_mask = sparsegpt_prune(w, h, blocksize=8, **kwargs)
    slow, slow_mask = obs_reference_prune(w, h, Pattern(**kwargs), blocksize=8)
    assert np.array_equal(fast_mask, slow_mask)
    assert np.max(np.abs(fast - slow)) < 1e-6
    assert np.all(fast[fast_mask] == 0) and np.all(fast[~fast_mask] != 0)
    if "n" in kwargs:
        assert np.all(fast_mask.reshape(6, -1, kwargs["m"]).sum(-1) == kwargs["n"])
        assert fast_mask[:, 5].all()  # the dead feature costs nothing: always pruned first
    else:
        for start in range(0, 24, 8):  # the fraction holds per block
            assert fast_mask[:, start : start + 8].mean() >= kwargs["sparsity"]
    # compensation pays: lower output error than zeroing the same weights without updating the rest
    assert relative_output_error(w, fast, h) < relative_output_error(w, np.where(fast_mask, 0, w), h)


def test_sparsegpt_beats_magnitude_on_output_error():
    w, h = correlated_layer(rows=16, cols=64, samples=500, dead=(), seed=1)
    sgpt, _ = sparsegpt_prune(w, h)
    mag, _ = magnitude_nm(w, 2, 4)
    assert relative_output_error(w, sgpt, h) < 0.8 * relative_output_error(w, mag, h)


def drifted_inputs(cols=32, samples=400, seed=2):
    """X_d [features, rows] (dense model's inputs) and X_s = X_d + correlated drift (sparsified model's)."""
    rng = np.random.default_rng(seed)
    x_d = rng.standard_normal((cols, cols)) @ rng.standard_normal((cols, samples)) + rng.standard_normal(
        (cols, 1)
    )
    x_s = (
        x_d
        + 0.3 * rng.standard_normal((cols, cols)) @ x_d / np.sqrt(cols)
        + 0.2 * rng.standard_normal((cols, 1))
    )
    return x_d, x_s


def test_error_correction_decomposition():
    """‖W X_d − Ŵ X_s‖² − ‖W* X_s − Ŵ X_s‖² does not depend on Ŵ (W* = W C H_s⁻¹); output_mismatch is
    exact."""
    rng = np.random.default_rng(3)
    x_d, x_s = drifted_inputs()
    w = rng.standard_normal((8, 32))
    cross, h_s, h_d = x_d @ x_s.T, x_s @ x_s.T, x_d @ x_d.T
    target = corrected_target(w, cross, h_s)
    gaps = []
    for scale in (0.0, 1.0, 10.0):
        w_hat = w + scale * rng.standard_normal(w.shape)
        full = np.sum((w @ x_d - w_hat @ x_s) ** 2)
        assert abs(output_mismatch(w, w_hat, cross, h_s, h_d) - full) < 1e-9 * full
        gaps.append(full - np.sum((target @ x_s - w_hat @ x_s) ** 2))
    assert np.ptp(gaps) < 1e-8 * np.sum((w @ x_d) ** 2)


@pytest.mark.parametrize("kwargs", [dict(n=2, m=4), dict(sparsity=0.5)])
def test_corrected_sparsegpt_pattern_and_gain(kwargs):
    rng = np.random.default_rng(4)
    x_d, x_s = drifted_inputs()
    w = rng.standard_normal((8, 32))
    cross, h_s = x_d @ x_s.T, x_s @ x_s.T
    lam = 1e-3 * np.mean(np.diag(h_s))
    fixed, mask = corrected_sparsegpt(w, cross, h_s, lam=lam, blocksize=16, **kwargs)
    assert np.all(fixed[mask] == 0) and np.all(fixed[~mask] != 0)
    if "n" in kwargs:
        assert np.all(mask.reshape(8, -1, 4).sum(-1) == 2)
    else:
        assert mask.mean() == 0.5
    plain = sparsegpt_prune(w, h_s, blocksize=16, **kwargs)[0]
    # toward the dense outputs it is closer than plain SparseGPT (which reproduces W on the drifted inputs)
    assert output_mismatch(w, fixed, cross, h_s, x_d @ x_d.T) < 0.7 * output_mismatch(
        w, plain, cross, h_s, x_d @ x_d.T
    )


def test_masked_refit_is_each_rows_ridge_least_squares_on_its_support():
    """Ŵ_S = argmin ‖W X_d − Ŵ X_s‖² + λ‖Ŵ − W‖² with Ŵ = 0 off S, checked row by row against lstsq on
    the stacked system [X_s,Sᵀ; √λ I]; N:M masks (batched) and uneven unstructured masks alike."""
    rng = np.random.default_rng(6)
    x_d, x_s = drifted_inputs()
    w = rng.standard_normal((8, 32))
    cross, h_s = x_d @ x_s.T, x_s @ x_s.T
    lam = 0.05 * np.mean(np.diag(h_s))
    for keep in (~sparsegpt_prune(w, h_s, blocksize=16)[1], rng.random((8, 32)) < 0.4):
        got = masked_refit(w, cross, h_s, keep, lam)
        for i in range(8):
            s_i = np.flatnonzero(keep[i])
            a = np.vstack([x_s[s_i].T, np.sqrt(lam) * np.eye(len(s_i))])
            b = np.concatenate([w[i] @ x_d, np.sqrt(lam) * w[i, s_i]])
            np.testing.assert_allclose(
                got[i, s_i], np.linalg.lstsq(a, b, rcond=None)[0], rtol=1e-7, atol=1e-9
            )
            assert np.all(got[i][~keep[i]] == 0)
    # on its own mask it fits at least as well as SparseGPT's lazy updates
    plain, pruned = sparsegpt_prune(w, h_s, blocksize=16)
    refit = masked_refit(w, h_s, h_s, ~pruned, 1e-9)
    with pytest.raises(ValueError, match="λ > 0"):
        masked_refit(w, h_s, h_s, ~pruned, 0.0)
    assert output_mismatch(w, refit, h_s, h_s) <= output_mismatch(w, plain, h_s, h_s) + 1e-9


def test_corrected_sparsegpt_without_drift_is_plain():
    w, h = correlated_layer(rows=8, cols=32, dead=(3,), seed=5)
    for kwargs in (dict(n=2, m=4), dict(sparsity=0.5)):
        plain, plain_mask = sparsegpt_prune(w, h, **kwargs)
        fixed, fixed_mask = corrected_sparsegpt(w, h, h, lam=0.1, **kwargs)
        assert np.array_equal(plain_mask, fixed_mask) and np.array_equal(plain, fixed)


def test_bias_correction_matches_dense_mean_output():
    """b' = b + W E[x_d] − Ŵ E[x_s]: zero mean residual, and the best constant for that Ŵ."""
    rng = np.random.default_rng(6)
    x_d, x_s = drifted_inputs(seed=7)
    w, b = rng.standard_normal((8, 32)), rng.standard_normal(8)
    w_hat = corrected_sparsegpt(w, x_d @ x_s.T, x_s @ x_s.T, lam=1.0)[0]
    b_new = bias_correction(w, b, w_hat, x_d.mean(1), x_s.mean(1))
    residual = (w @ x_d + b[:, None]) - (w_hat @ x_s + b_new[:, None])
    assert np.max(np.abs(residual.mean(1))) < 1e-9 * np.max(np.abs(residual))
    for other in (b, b_new + 0.01):
        assert np.sum(residual**2) < np.sum(((w @ x_d + b[:, None]) - (w_hat @ x_s + other[:, None])) ** 2)


def test_tap_major_order_groups_channels_at_one_tap():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 8, 3, 2))  # [K, C, R, S]
    im2col = w.reshape(5, -1)  # LinearLayer.matrix / features order: (c, r, s)
    assert np.array_equal(im2col[:, tap_major_order(8, 6)], w.transpose(0, 2, 3, 1).reshape(5, -1))


def test_check_pattern_layouts():
    w = np.arange(1, 2 * 8 * 3 * 3 + 1, dtype=np.float32).reshape(2, 8, 3, 3)
    w[:, 0::4] = w[:, 1::4] = 0  # two zeros in every 4 consecutive input channels at every (k, r, s)
    assert check_pattern(w, 1, 2, 4) == {
        "compliant": True,
        "groups": 2 * 2 * 9,
        "violating_groups": 0,
        "sparsity": 0.5,
    }
    assert not check_pattern(w, 2, 1, 3)["compliant"]  # along the kernel rows the zeros do not line up
    w[1, 5, 2, 2] = 0
    w[1, 4, 2, 2] = 7  # group (k=1, c=4..7, r=s=2) now has one zero only
    assert check_pattern(w, 1, 2, 4)["violating_groups"] == 1
    assert check_pattern(np.zeros((4, 6)), 1, 2, 4)["compliant"] is False  # 6 not a multiple of 4


def test_parse_pattern():
    assert (parse_pattern("2:4").n, parse_pattern("2:4").m) == (2, 4)
    assert parse_pattern(0.5).sparsity == 0.5 and parse_pattern("0.75").sparsity == 0.75
    for bad in ("4:4", "0:4", "1.5", "0", "x"):
        with pytest.raises(ValueError):
            parse_pattern(bad)


# ---- a model with every layout and every reason to skip -------------------------------------------


def layouts_model(seed=0) -> onnx.ModelProto:
    """stem Conv 3→64 (C % 4 ≠ 0) → conv 64→16 3x3 → grouped conv (2 groups of 8) → depthwise → GAP →
    Gemm transB=1 [64,16] → MatMul B [64,32] → Gemm transB=0 [32,40] → tiny Gemm [40,10]."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def param(name, shape):
        fan_in = int(np.prod(shape[1:])) if len(shape) == 4 else shape[0]
        inits.append(
            numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32), name)
        )
        return name

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    h = node("Conv", ["x", param("stem.w", [64, 3, 3, 3]), param("stem.b", [64])], "stem", pads=[1] * 4)
    h = node("Relu", [h], "stem/relu")
    h = node("Relu", [node("Conv", [h, param("conv.w", [16, 64, 3, 3])], "conv", pads=[1] * 4)], "conv/relu")
    h = node(
        "Relu",
        [node("Conv", [h, param("grouped.w", [16, 8, 3, 3])], "grouped", pads=[1] * 4, group=2)],
        "grouped/relu",
    )
    h = node("Conv", [h, param("dw.w", [16, 1, 3, 3])], "dw", pads=[1] * 4, group=16)
    h = node("Flatten", [node("GlobalAveragePool", [h], "gap")], "flatten")
    h = node(
        "Relu",
        [node("Gemm", [h, param("fc1.w", [64, 16]), param("fc1.b", [64])], "fc1", transB=1)],
        "fc1/relu",
    )
    h = node("Relu", [node("MatMul", [h, param("mm.w", [64, 32])], "mm")], "mm/relu")
    h = node("Relu", [node("Gemm", [h, param("fc2.w", [32, 40]), param("fc2.b", [40])], "fc2")], "fc2/relu")
    node("Gemm", [h, param("head.w", [40, 10])], "head")
    graph = helper.make_graph(
        nodes,
        "layouts",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("head", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def calib(n=64, batch=16, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, 3, 8, 8)).astype(np.float32)
    return lambda: ({"x": x[i : i + batch]} for i in range(0, n, batch))


def groups_of_channels(w: np.ndarray, layout: str, m: int) -> np.ndarray:
    """Zeros per M-group, written out per layout (independently of check_pattern)."""
    if layout == "conv":  # [K, C, R, S]: M consecutive C at each (k, r, s)
        k, c, r, s = w.shape
        return (w.reshape(k, c // m, m, r, s) == 0).sum(2)
    if layout == "out_k":  # Gemm transB=1 [N, K]
        return (w.reshape(w.shape[0], -1, m) == 0).sum(2)
    return (w.T.reshape(w.shape[1], -1, m) == 0).sum(2)  # [K, N]: groups along K = axis 0


ELIGIBLE = {"conv": "conv", "grouped": "conv", "fc1": "out_k", "mm": "k_out", "fc2": "k_out"}
WEIGHT = {"conv": "conv.w", "grouped": "grouped.w", "fc1": "fc1.w", "mm": "mm.w", "fc2": "fc2.w"}


@pytest.mark.parametrize("criterion", ["sparsegpt", "magnitude"])
def test_nm_pattern_on_every_layout_and_skips_reported(criterion):
    model = layouts_model()
    before = initializer_dict(model)
    sparse, report = sparsify(model, calib(), SparsifyOptions(pattern="2:4", criterion=criterion))
    onnx.checker.check_model(sparse, full_check=True)
    x = next(calib()())
    assert run_ort(sparse, x)[0].shape == (16, 10)
    after = initializer_dict(sparse)
    for node, layout in ELIGIBLE.items():
        assert groups_of_channels(after[WEIGHT[node]], layout, 4).min() >= 2, node
        assert not np.array_equal(after[WEIGHT[node]], before[WEIGHT[node]])
    rows = {e["node"]: e for e in report["layers"]}
    assert {n for n, e in rows.items() if e["eligible"]} == set(ELIGIBLE)
    assert "input channels = 3 is not a multiple of M=4" in rows["stem"]["reason"]
    assert "depthwise" in rows["dw"]["reason"]
    assert "tiny layer (400 weights" in rows["head"]["reason"]
    for name in ("stem.w", "stem.b", "dw.w", "head.w", "fc1.b"):  # skipped layers and biases untouched
        assert np.array_equal(after[name], before[name])
    assert all(rows[n]["pattern_ok"] and rows[n]["sparsity"] >= 0.5 for n in ELIGIBLE)
    assert all(0 < rows[n]["relative_output_error"] < 1 for n in ELIGIBLE)
    assert initializer_dict(model)["conv.w"].tolist() == before["conv.w"].tolist()  # input model not edited
    assert pattern_report(sparse)["compliant_layers"] == len(ELIGIBLE)
    assert pattern_report(model)["compliant_layers"] == 0


def test_wrong_column_order_breaks_the_channel_pattern():
    """Pruning 2:4 in im2col (c, r, s) order instead of (r, s, c) does not give the channel layout."""
    w = np.random.default_rng(0).standard_normal((16, 64, 3, 3))
    wrong = magnitude_nm(w.reshape(16, -1), 2, 4)[0].reshape(w.shape)
    assert groups_of_channels(wrong, "conv", 4).min() < 2
    order = tap_major_order(64, 9)
    right = np.empty((16, 64 * 9))
    right[:, order] = magnitude_nm(w.reshape(16, -1)[:, order], 2, 4)[0]
    assert groups_of_channels(right.reshape(w.shape), "conv", 4).min() >= 2


def test_unstructured_half_on_every_eligible_layer():
    model = layouts_model()
    sparse, report = sparsify(model, calib(), SparsifyOptions(pattern=0.5))
    rows = {e["node"]: e for e in report["layers"]}
    eligible = {n for n, e in rows.items() if e["eligible"]}
    assert eligible == set(ELIGIBLE) | {"stem"}  # no M constraint: the 3-channel stem qualifies
    after = initializer_dict(sparse)
    for e in report["layers"]:
        if e["eligible"]:
            assert np.mean(after[e["weight"]] == 0) >= 0.5, e["node"]
    assert np.array_equal(after["dw.w"], initializer_dict(model)["dw.w"])
    onnx.checker.check_model(sparse, full_check=True)


def test_error_correcting_sparsify():
    """Both models advance together; pattern on every layout, biases refit (added where a conv had none)."""
    model = layouts_model()
    x = next(calib(seed=1)())
    dense = run_ort(model, x)[0]
    sparse, report = sparsify(model, calib(), SparsifyOptions(pattern="2:4", correct="validated", bias=True))
    onnx.checker.check_model(sparse, full_check=True)
    after = initializer_dict(sparse)
    for node, layout in ELIGIBLE.items():
        assert groups_of_channels(after[WEIGHT[node]], layout, 4).min() >= 2, node
    rows = {e["node"]: e for e in report["layers"]}
    assert {rows[n]["correction"] for n in ELIGIBLE} <= {"plain", "corrected"}
    assert "conv.bias_corrected" in after and "mm.bias_corrected" not in after  # MatMul: no bias input
    assert not np.array_equal(after["fc1.b"], initializer_dict(model)["fc1.b"])
    plain = run_ort(sparsify(model, calib(), SparsifyOptions(pattern="2:4", correct="off"))[0], x)[0]
    assert np.linalg.norm(run_ort(sparse, x)[0] - dense) < np.linalg.norm(plain - dense)
    with pytest.raises(ValueError, match="correction"):
        sparsify(model, calib(), SparsifyOptions(pattern="2:4", correct="yes"))


def test_sparsegpt_needs_calibration_and_known_criterion():
    with pytest.raises(ValueError, match="calibration"):
        sparsify(layouts_model(), None, SparsifyOptions(pattern="2:4"))
    with pytest.raises(ValueError, match="criterion"):
        sparsify(layouts_model(), calib(), SparsifyOptions(pattern="2:4", criterion="random"))
    # magnitude is data-free
    sparse, report = sparsify(layouts_model(), None, SparsifyOptions(pattern="2:4", criterion="magnitude"))
    assert report["calibration_samples"] == 0 and pattern_report(sparse)["compliant_layers"] == len(ELIGIBLE)


# ---- the shipped Fashion-MNIST ResNet ---------------------------------------------------------------


@pytest.fixture(scope="module")
def fmnist():
    model, _ = normalize(load_model(MODELS / "fmnist_resnet.onnx"))
    x = np.load(MODELS / "fmnist_calib.npz")["input"]
    evaluation = np.load(MODELS / "fmnist_eval.npz")
    return model, x[:128], evaluation["input"][:2000], evaluation["labels"][:2000]


def test_fmnist_two_four_end_to_end(fmnist):
    model, x, x_eval, labels = fmnist
    batches = lambda: ({"input": x[i : i + 32]} for i in range(0, len(x), 32))  # noqa: E731
    results = {}
    for criterion in ("sparsegpt", "magnitude"):
        sparse, report = sparsify(model, batches, SparsifyOptions(pattern="2:4", criterion=criterion))
        onnx.checker.check_model(sparse, full_check=True)
        weights = initializer_dict(sparse)
        eligible = [e for e in report["layers"] if e["eligible"]]
        assert len(eligible) >= 5 and report["sparsity_eligible"] >= 0.5
        for e in eligible:
            assert (
                groups_of_channels(weights[e["weight"]], "conv" if e["op"] == "Conv" else "out_k", 4).min()
                >= 2
            )
        results[criterion] = np.mean(run_ort(sparse, {"input": x_eval})[0].argmax(1) == labels)
    dense = np.mean(run_ort(model, {"input": x_eval})[0].argmax(1) == labels)
    # second-order masks and compensation lose far less accuracy than magnitude masks
    assert dense - results["sparsegpt"] < 0.5 * (dense - results["magnitude"])


def test_validated_correction_honours_groups():
    """groups equal to the batch halves change nothing; interleaved groups split rows inside batches and
    still give a valid 2:4 model."""
    model = layouts_model()
    base = initializer_dict(sparsify(model, calib(), SparsifyOptions(pattern="2:4", correct="validated"))[0])
    same = initializer_dict(
        sparsify(model, calib(), SparsifyOptions(pattern="2:4", correct="validated"), np.repeat([5, 9], 32))[
            0
        ]
    )
    for name, want in base.items():
        np.testing.assert_array_equal(same[name], want)
    mixed, report = sparsify(
        model, calib(), SparsifyOptions(pattern="2:4", correct="validated"), np.arange(64) % 7
    )
    onnx.checker.check_model(mixed, full_check=True)
    after = initializer_dict(mixed)
    for node, layout in ELIGIBLE.items():
        assert groups_of_channels(after[WEIGHT[node]], layout, 4).min() >= 2, node


def test_residual_drift_enters_target_refit_and_mismatch():
    """With the drift Δ of a residual partner (block output W·x + s), ``skip_cross`` E = Δ X_sᵀ makes
    corrected_target, masked_refit and output_mismatch solve / measure ‖W X_d + Δ − Ŵ X_s‖² (+ λ‖Ŵ − W‖²)."""
    rng = np.random.default_rng(7)
    x_d, x_s = drifted_inputs()
    w = rng.standard_normal((8, 32))
    delta = 0.2 * rng.standard_normal((8, 32)) @ x_s + rng.standard_normal((8, x_s.shape[1]))
    cross, h_s, skip = x_d @ x_s.T, x_s @ x_s.T, delta @ x_s.T
    lam = 0.05 * np.mean(np.diag(h_s))
    goal = w @ x_d + delta
    stacked = np.vstack([x_s.T, np.sqrt(lam) * np.eye(32)])
    want = np.linalg.lstsq(stacked, np.vstack([goal.T, np.sqrt(lam) * w.T]), rcond=None)[0].T
    np.testing.assert_allclose(corrected_target(w, cross, h_s, lam, skip), want, rtol=1e-7, atol=1e-9)
    keep = rng.random((8, 32)) < 0.5
    got = masked_refit(w, cross, h_s, keep, lam, skip)
    for i in range(8):
        s_i = np.flatnonzero(keep[i])
        a = np.vstack([x_s[s_i].T, np.sqrt(lam) * np.eye(len(s_i))])
        b = np.concatenate([goal[i], np.sqrt(lam) * w[i, s_i]])
        np.testing.assert_allclose(got[i, s_i], np.linalg.lstsq(a, b, rcond=None)[0], rtol=1e-7, atol=1e-9)
    gaps = [
        np.sum((goal - w_hat @ x_s) ** 2) - output_mismatch(w, w_hat, cross, h_s, skip_cross=skip)
        for w_hat in (w, got, w + rng.standard_normal(w.shape))
    ]
    assert np.ptp(gaps) < 1e-8 * np.sum(goal**2)


def residual_model(channels=32, seed=0) -> onnx.ModelProto:
    """x → conv_a 1x1 → Relu (r) → conv_b 1x1 → Add(conv_b, r): conv_b's residual partner r drifts once
    conv_a is sparsified."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(
            (rng.standard_normal((channels, channels, 1, 1)) / np.sqrt(channels)).astype(np.float32), n
        )
        for n in ("a.w", "b.w")
    ]
    nodes = [
        helper.make_node("Conv", ["x", "a.w"], ["a"], name="conv_a"),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "b.w"], ["b"], name="conv_b"),
        helper.make_node("Add", ["b", "r"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes,
        "residual",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", channels, 4, 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_sparsify_fits_the_block_output_of_a_residual_layer(monkeypatch):
    """conv_b's fit keeps conv_b(r) + r, so it also takes up the drift that conv_a's 2:4 left in r: the
    block output on the calibration data is closer to the dense one than when conv_b only keeps conv_b(r)."""
    model = residual_model()
    rng = np.random.default_rng(1)
    x = (
        rng.standard_normal((128, 32, 1, 1)) * rng.standard_normal((128, 32, 4, 4))
        + rng.standard_normal((1, 32, 1, 1))
    ).astype(np.float32)
    batches = lambda: ({"x": x[i : i + 32]} for i in range(0, len(x), 32))  # noqa: E731
    dense = run_ort(model, {"x": x})[0]
    sparse, report = sparsify(model, batches, SparsifyOptions(pattern="2:4"))
    onnx.checker.check_model(sparse, full_check=True)
    assert {e["node"]: e["residual_partner"] for e in report["layers"]} == {"conv_a": None, "conv_b": "r"}
    monkeypatch.setattr(staged_module, "residual_partners", lambda *args: {})
    layer_only = sparsify(model, batches, SparsifyOptions(pattern="2:4"))[0]
    err = {
        name: np.sum((run_ort(m, {"x": x})[0] - dense) ** 2)
        for name, m in (("block", sparse), ("layer", layer_only))
    }
    assert err["block"] < 0.9 * err["layer"]
