"""Criteria math: the WoodFisher inverse, the row sample it is built from, and the CLI path."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnxprune.calibration.collect import RowSample

from onnxprune.criteria import woodfisher_hessian, woodfisher_inverse
from onnxprune.layers import LinearLayer
from tests.helpers import MODELS, run_cli, run_ort


def test_woodfisher_recursion_equals_the_direct_inverse():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 300, 12)) * rng.uniform(0.1, 3.0, size=12)  # two conv groups, uneven scales
    lam = np.array([0.05, 0.2])
    direct = np.linalg.inv(lam[:, None, None] * np.eye(12) + (2 / 300) * np.swapaxes(x, 1, 2) @ x)
    for block in (1, 7, 64, 1000):  # rank-1 WoodFisher, ragged blocks, one block
        np.testing.assert_allclose(woodfisher_inverse(x, lam, block), direct, rtol=1e-8, atol=1e-10)


def test_woodfisher_hessian_dampens_like_obs():
    x = np.random.default_rng(1).normal(size=(1, 50, 80))  # fewer rows than features: singular Hessian
    h, hinv = woodfisher_hessian(x, damp=0.01, rows=50)
    lam = (0.01 + 80 / 50) * np.mean(np.diag(h[0]))
    np.testing.assert_allclose(hinv[0] @ (h[0] + lam * np.eye(80)), np.eye(80), atol=1e-8)


def test_row_sample_is_bounded_uniform_and_deterministic():
    layer = LinearLayer("g", "Gemm", "x", "y", "w", None, groups=1, trans_b=True)
    a, b = RowSample(layer, limit=100, seed=3), RowSample(layer, limit=100, seed=3)
    for i in range(20):  # 2000 rows whose first feature is their index
        x = np.arange(i * 100, (i + 1) * 100, dtype=np.float64)[:, None] * np.ones((1, 4))
        a.add(x)
        b.add(x)
    assert a.rows.shape == (1, 100, 4) and a.n == 2000
    np.testing.assert_array_equal(a.rows, b.rows)
    idx = a.rows[0, :, 0]
    assert len(np.unique(idx)) == 100
    assert 600 < idx.mean() < 1400  # drawn from the whole stream, not its start or end


def test_row_samples_of_two_streams_merge_to_a_sample_of_both():
    layer = LinearLayer("g", "Gemm", "x", "y", "w", None, groups=1, trans_b=True)
    a, b = RowSample(layer, limit=100, seed=3, part=0), RowSample(layer, limit=100, seed=3, part=1)
    for i in range(20):
        (a if i < 10 else b).add(
            np.arange(i * 100, (i + 1) * 100, dtype=np.float64)[:, None] * np.ones((1, 4))
        )
    a.merge(b)
    both = a
    assert both.rows.shape == (1, 100, 4) and both.n == 2000
    idx = both.rows[0, :, 0]
    assert len(np.unique(idx)) == 100 and 25 < (idx >= 1000).sum() < 75  # from both streams
    np.testing.assert_allclose(both.hessian()[0], 2 / 100 * both.rows[0].T @ both.rows[0])


def test_compress_with_woodfisher_criterion(tmp_path, capsys):
    code, out, _ = run_cli(
        capsys,
        "compress",
        MODELS / "fmnist_resnet.onnx",
        "--target",
        "1.5x",
        "--calib",
        MODELS / "fmnist_calib.npz",
        "--calib-samples",
        "64",
        "--criterion",
        "woodfisher",
        "-o",
        tmp_path,
        "--json",
    )
    assert code == 0
    report = json.loads(out)
    assert report["criterion"] == "woodfisher" and not any("magnitude" in w for w in report["warnings"])
    model = onnx.load(report["output"])
    onnx.checker.check_model(model, full_check=True)
    x = np.load(MODELS / "fmnist_calib.npz")["input"][:4]
    assert np.isfinite(run_ort(model, {model.graph.input[0].name: x})[0]).all()
    assert report["pruned"]["macs"] <= report["dense"]["macs"] / 1.5


def _gemm_consumer(x: np.ndarray, out: int = 4, damp: float = 0.01, seed: int = 0):
    """A Gemm consumer of the group whose channels are the columns of x, as ``rank_groups`` builds it."""
    from onnxprune.criteria import _Consumer, _Exact

    rng = np.random.default_rng(seed)
    w = rng.normal(size=(1, out, x.shape[1]))
    h = (2.0 / len(x)) * (x.T @ x)[None]
    hinv = np.linalg.inv(h + damp * np.mean(np.diag(h[0])) * np.eye(x.shape[1]))
    energy = float(np.einsum("bof,bfh,boh->", w, h, w))
    feats = [np.array([j]) for j in range(x.shape[1])]
    return _Consumer(w, hinv, feats, energy, _Exact(h, w.copy(), feats, energy, features=True))


def test_obs_removes_exactly_redundant_channels_first():
    from onnxprune.channels import ChannelGroup
    from onnxprune.criteria import obs_ranking

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 8))
    x[:, 6] = 0.0  # dead
    x[:, 3] = 2.5 * x[:, 0]  # a scaled duplicate
    x[:, 5] *= 0.02  # alive but faint: dampened OBS prices it below the duplicate
    group = ChannelGroup(id=0, size=8, segments=[], members=[], reasons=[])
    ranked = obs_ranking(group, [_gemm_consumer(x)])
    assert set(ranked.order[:2]) in ({6, 3}, {6, 0}) and ranked.error[2] == 0.0 < ranked.error[3]
    # without enough rows per feature to tell, nothing counts as free: the dampened order stands
    c = _gemm_consumer(x)
    c.exact = None
    plain = obs_ranking(group, [c])
    assert plain.order[1] == 5 and plain.error[1] > 0


def test_channels_a_flatten_gemm_cannot_tell_apart_are_tested_as_whole_maps():
    """A Gemm reading 6 channels × 16 positions from 40 samples: 40 rows for 96 features, so every feature
    is a combination of the others on the data; per channel (all 640 positions) a dead channel and a
    scaled duplicate are still exactly redundant, and nothing else is."""
    from onnxprune.channels import ChannelGroup
    from onnxprune.criteria import RankData, _obs_consumer, free_channels
    from onnxprune.layers import LinearLayer

    rng = np.random.default_rng(1)
    maps = rng.normal(size=(40, 6, 16))
    maps[:, 4] = 0.0
    maps[:, 2] = 0.7 * maps[:, 5]
    x = maps.reshape(40, 96)
    layer = LinearLayer("fc", "Gemm", "x", "y", "fc.weight", None, 1, trans_b=True)
    h = (2.0 / len(x)) * (x.T @ x)[None]
    group = ChannelGroup(id=0, size=6, segments=[], members=[], reasons=[])

    class _Trace:  # the one space of 6 channels, each a block of 16 features
        spaces = [type("S", (), {"size": 6})()]
        segments = {0: [type("Seg", (), {"start": 0, "group": 0})()]}

    member = type("M", (), {"space": 0, "outer": 1, "inner": 16, "groups": 1, "node": "fc"})()
    data = RankData(
        _Trace(), {"fc.weight": rng.normal(size=(5, 96))}, {}, {"fc": layer}, {"fc": h}, {"fc": 40}
    )
    c = _obs_consumer(data, group, member)
    assert c.exact is not None and not c.exact.features
    alive = np.ones(6, bool)
    assert sorted(free_channels([c], alive)) in ([2, 4], [4, 5])
    assert alive.sum() == 4
