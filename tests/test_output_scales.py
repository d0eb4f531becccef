"""Outputs of very different scales: a small component (a detector's class scores beside box coordinates)
must weigh as much as a large one in the damage the allocator prices and in the fidelity the report shows."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import onnxprune.sensitivity as sensitivity
from models.synthetic_builder import Builder
from onnxprune.fidelity import component_axis, component_r2, headline
from onnxprune.pipeline import CompressOptions, compress
from tests.helpers import run_ort


def two_scale_model() -> onnx.ModelProto:
    """stem (8) -> two branches of 16 channels, equal MACs -> a 1x1 head of 4 outputs each, scaled by 100 and
    by 0.01 -> Concat: one output [N, 8, 8, 8] whose components 0-3 are ~10^4 times components 4-7."""
    b = Builder(3, 17)
    x = b.input("x", ["N", 3, 8, 8])
    s = b.cba(x, 3, 8, name="stem")
    heads = []
    for name, scale in (("big", 100.0), ("small", 0.01)):
        h = b.conv(b.cba(s, 8, 16, name=f"{name}.conv"), 16, 4, k=1, name=f"{name}.head")
        heads.append(b.op("Mul", [h, b.const(f"{name}.scale", scale)], f"{name}.scaled"))
    b.output(b.op("Concat", heads, "out", axis=1), ["N", 8, 8, 8])

    def two_scale():
        pass

    return b.finish(two_scale)


NEW_DAMAGE = sensitivity.output_damage


def old_damage(dense, other, classifier=None) -> float:
    """The measure before components: relative squared error of the whole tensor (the large part
    dominates)."""
    return float(sum(np.sum((a - b) ** 2) / np.sum(a**2) for a, b in zip(dense, other, strict=True)))


@pytest.mark.parametrize(
    "shape, axis", [((4, 84, 8400), 1), ((4, 25200, 85), 2), ((4, 1, 32, 32), 1), ((4, 384), 1), ((4,), None)]
)
def test_component_axis_of_common_layouts(shape, axis):
    assert component_axis(shape) == axis


def test_a_small_component_counts_as_much_as_a_large_one():
    rng = np.random.default_rng(0)
    y = np.stack([100 * rng.normal(size=(16, 8, 8)), 0.01 * rng.normal(size=(16, 8, 8))], axis=1)
    small_gone, big_off = y.copy(), y.copy()
    small_gone[:, 1] = 0.0  # the small component lost entirely
    big_off[:, 0] *= 0.9  # the large one 10% off
    assert old_damage([y], [small_gone]) < 1e-7 < old_damage([y], [big_off])  # the old measure misses it
    assert sensitivity.output_damage([y], [small_gone], [False]) > sensitivity.output_damage(
        [y], [big_off], [False]
    )
    # 0: no better than its mean
    np.testing.assert_allclose(component_r2(y, small_gone), [1.0, 0.0], atol=0.1)


def _compress(tmp_path, monkeypatch, damage) -> tuple[dict, float]:
    monkeypatch.setattr(sensitivity, "output_damage", damage)
    model = two_scale_model()
    onnx.save(model, tmp_path / "m.onnx")
    feeds = {"x": np.random.default_rng(1).normal(size=(512, 3, 8, 8)).astype(np.float32)}
    np.savez(tmp_path / "calib.npz", **feeds)
    report = compress(
        tmp_path / "m.onnx",
        tmp_path / "out",
        CompressOptions(target=1.6, calib=str(tmp_path / "calib.npz"), int8=False),
    )
    kept = {g["members"][0]["node"]: g["kept"] for g in report["groups"] if g["prunable"]}
    test = {"x": np.random.default_rng(2).normal(size=(64, 3, 8, 8)).astype(np.float32)}
    r2 = component_r2(run_ort(model, test)[0], run_ort(onnx.load(report["output"]), test)[0])
    return report, kept["small.conv"], float(r2[4:].mean())


def test_the_small_components_branch_is_protected_where_the_old_measure_cuts_it(tmp_path, monkeypatch):
    _, old_kept, old_r2 = _compress(tmp_path / "old", monkeypatch, old_damage)
    report, kept, r2 = _compress(tmp_path / "new", monkeypatch, NEW_DAMAGE)
    assert old_kept <= 4 and old_r2 < 0.9  # relative error of the whole tensor: the small branch looks free
    assert kept > old_kept and r2 > 0.95 and r2 > old_r2 + 0.05
    fid = report["fidelity"]["out"]  # the report shows each component, the worst first
    assert fid["components"] == 8 and len(fid["worst_components"]) == 5
    assert headline(report["fidelity"]) == ("r2_mean", fid["r2_mean"])


@pytest.fixture(autouse=True)
def _tmp_folders(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()


def test_what_a_component_shows_whatever_the_input_is_not_spread():
    """A detector's box centre is its anchor's position plus a predicted offset: losing the offset must show,
    though the anchor grid makes up nearly all of the component's values."""
    rng = np.random.default_rng(0)
    grid = np.arange(400.0)[None, None, :] * 2.5  # [1, 1, anchors]: the same for every input
    offset = rng.normal(size=(16, 1, 400))
    dense = np.concatenate([grid + offset, rng.normal(size=(16, 1, 400))], axis=1)  # [N, 2, anchors]
    lost = dense.copy()
    lost[:, 0] = grid[:, 0]
    r2 = component_r2(dense, lost)
    assert r2[0] < 0.1 and r2[1] == 1.0
    # one sample: no spread between inputs to measure, the mean over positions stands in
    assert component_r2(dense[:1], dense[:1])[0] == 1.0 and component_r2(dense[:1], lost[:1])[0] > 0.99
