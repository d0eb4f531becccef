"""Calibration mosaics: every quadrant is an unscaled crop of a different calibration image, they feed the
statistics pass only, and `compress --calib-mosaics` validates and reports them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnxprune.calibration.augment import image_input, mosaics, spatial_axes
from onnxprune.calibration.readers import CalibrationSet

from tests.helpers import FMNIST_64, MODELS, run_cli


def _find_crop(tile: np.ndarray, images: np.ndarray, axes: tuple[int, int]) -> set[int]:
    """Indices of the images that contain ``tile`` as an unscaled crop (any position)."""
    ya, xa = (a - 1 for a in axes)
    th, tw = tile.shape[ya], tile.shape[xa]
    found = set()
    for k, img in enumerate(images):
        for top in range(img.shape[ya] - th + 1):
            for left in range(img.shape[xa] - tw + 1):
                crop = np.take(np.take(img, range(top, top + th), ya), range(left, left + tw), xa)
                if np.array_equal(crop, tile):
                    found.add(k)
    return found


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("size", [(9, 8), (8, 11)])  # odd sides: quadrants of unequal size
def test_every_quadrant_is_a_crop_of_a_different_image(layout, size):
    h, w = size
    shape = (6, 3, h, w) if layout == "nchw" else (6, h, w, 3)
    images = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    axes = spatial_axes(images.shape)
    assert axes == ((2, 3) if layout == "nchw" else (1, 2))
    out = mosaics(images, 5, np.random.default_rng(0))
    assert out.shape == (5, *shape[1:]) and out.dtype == np.float32
    ya, xa = (a - 1 for a in axes)
    for m in out:
        sources = []
        for rows in (slice(0, h // 2), slice(h // 2, h)):
            for cols in (slice(0, w // 2), slice(w // 2, w)):
                index = [slice(None)] * 3
                index[ya], index[xa] = rows, cols
                found = _find_crop(m[tuple(index)], images, axes)
                assert len(found) == 1  # random data: a crop matches exactly one image
                sources.append(found.pop())
        assert len(set(sources)) == 4


def test_mosaics_are_seeded():
    images = np.random.default_rng(2).standard_normal((8, 3, 16, 16)).astype(np.float32)
    a, b = (mosaics(images, 3, np.random.default_rng(7)) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, mosaics(images, 3, np.random.default_rng(8)))


def test_image_input_detection():
    assert image_input({"x": np.zeros((2, 3, 224, 224), np.float32)}) == "x"
    assert image_input({"x": np.zeros((2, 224, 224, 3), np.float32)}) == "x"
    assert (
        image_input({"x": np.zeros((2, 1, 28, 28), np.float32)}, min_side=64) is None
    )  # too small by default
    assert image_input({"x": np.zeros((2, 3, 224, 224), np.int64)}) is None
    assert image_input({"ids": np.zeros((2, 128), np.int64)}) is None
    assert image_input({"x": np.zeros((2, 16, 32, 32), np.float32)}) is None  # 16 channels: a feature map
    assert (
        image_input({"a": np.zeros((2, 3, 32, 32), np.float32), "b": np.zeros((2, 3, 32, 32), np.float32)})
        is None
    )
    with pytest.raises(ValueError, match="not a batch of images"):
        mosaics(np.zeros((4, 10), np.float32), 1, np.random.default_rng(0))


def test_statistics_batches_read_calibration_then_mosaics():
    x = np.random.default_rng(3).standard_normal((10, 3, 16, 16)).astype(np.float32)
    cs = CalibrationSet({"x": x}, {"x": x[:2]}, "test")
    assert cs.add_mosaics(7, seed=0) is None
    assert (cs.n_calib(), cs.n_statistics()) == (10, 17)
    stats = np.concatenate([b["x"] for b in cs.batches("statistics", 4)])
    np.testing.assert_array_equal(stats[:10], x)
    np.testing.assert_array_equal(stats[10:], mosaics(x, 7, np.random.default_rng(0)))
    assert sum(len(b["x"]) for b in cs.batches("calib", 4)) == 10  # the refit and INT8 read real samples only
    fixed = CalibrationSet({"x": x}, {}, "test", fixed_batch=4)
    fixed.add_mosaics(7)
    assert fixed.n_statistics() == 14 and all(len(b["x"]) == 4 for b in fixed.batches("statistics"))
    tokens = CalibrationSet({"ids": np.zeros((4, 8), np.int64)}, {}, "test")
    assert "needs a single image input" in tokens.add_mosaics(4) and tokens.n_statistics() == 4


def _report(tmp_path, capsys, *args):
    code, out, err = run_cli(
        capsys, *FMNIST_64, "--target", "1.2x", "--no-int8", "-o", tmp_path, "--json", *args
    )
    assert code == 0, err
    return json.loads(out)


def test_compress_mosaics_default_explicit_and_reported(tmp_path, capsys):
    assert _report(tmp_path, capsys)["calibration"]["mosaics"] == 0  # 28-pixel images: off by default
    report = _report(tmp_path, capsys, "--calib-mosaics", "32")
    assert report["calibration"]["mosaics"] == 32 and report["calibration"]["samples"] == 64


def test_compress_mosaics_bad_count_and_non_image_input(tmp_path, capsys):
    code, _, err = run_cli(
        capsys,
        "compress",
        MODELS / "fmnist_resnet.onnx",
        "--calib",
        MODELS / "fmnist_calib.npz",
        "--calib-mosaics",
        "-1",
        "-o",
        tmp_path,
    )
    assert code == 2 and "--calib-mosaics must be ≥ 0" in err and len(err.strip().splitlines()) == 1
    # a Gemm model fed [N, 16] vectors: mosaics are asked for, not possible, and the report says so
    w = helper.make_tensor(
        "w", TensorProto.FLOAT, [16, 8], np.random.default_rng(0).standard_normal(128).tolist()
    )
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["y"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [
            w,
            helper.make_tensor(
                "w2", TensorProto.FLOAT, [8, 4], np.random.default_rng(1).standard_normal(32).tolist()
            ),
        ],
    )
    model = tmp_path / "mlp.onnx"
    model.write_bytes(
        helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9
        ).SerializeToString()
    )
    data = tmp_path / "x.npz"
    np.savez(data, x=np.random.default_rng(2).standard_normal((96, 16)).astype(np.float32))
    code, out, err = run_cli(
        capsys,
        "compress",
        model,
        "--calib",
        data,
        "--calib-samples",
        "64",
        "--target",
        "1.2x",
        "--calib-mosaics",
        "16",
        "--no-int8",
        "-o",
        tmp_path / "out",
        "--json",
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["calibration"]["mosaics"] == 0
    assert any("--calib-mosaics needs a single image input" in w for w in report["warnings"])


def test_sparsegpt_reads_the_mosaics_magnitude_does_not(tmp_path, capsys):
    base = ("--target", "1x", "--sparsity", "2:4", "--calib-mosaics", "32")
    report = _report(tmp_path, capsys, *base)
    assert report["sparsity"]["calibration_samples"] == 64 + 32 and report["calibration"]["mosaics"] == 32
    report = _report(tmp_path, capsys, *base, "--criterion", "magnitude")
    assert report["sparsity"]["calibration_samples"] == 64
