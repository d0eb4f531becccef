"""--metric-fn: the shipped detection and map metrics against hand-built outputs, and a user function as the
report's fidelity and the --max-drop gate."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models import synthetic
from onnxprune.errors import InputError
from onnxprune.fidelity import compare
from onnxprune.metrics import (
    box_iou,
    detection_damage,
    detection_f1,
    detection_parts,
    load_metric,
    map_iou,
    map_pearson,
    nms,
    parse_options,
)
from tests.helpers import FMNIST_64, MODELS, run_cli


def yolov8(boxes, classes, scores, num_classes=3, anchors=20) -> np.ndarray:
    """One sample's raw YOLOv8 head [4 + classes, anchors]: the given boxes (cx, cy, w, h) in the first
    anchors,
    the rest below any threshold."""
    out = np.zeros((4 + num_classes, anchors), np.float32)
    out[:4] = 10.0
    for i, (box, cls, score) in enumerate(zip(boxes, classes, scores, strict=True)):
        out[:4, i] = box
        out[4 + cls, i] = score
    return out


def test_box_iou_and_nms():
    a = np.array([[0, 0, 10, 10], [5, 5, 15, 15]], float)
    np.testing.assert_allclose(box_iou(a, a), [[1, 25 / 175], [25 / 175, 1]])
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], float)
    # the second box overlaps the first of its class and goes; the third is another class; the fourth is apart
    assert nms(boxes, np.array([0.9, 0.8, 0.7, 0.6]), np.array([0, 0, 1, 0]), 0.45, 300).tolist() == [0, 2, 3]
    # across classes the third box goes too: it covers the first exactly
    kept = nms(boxes, np.array([0.9, 0.8, 0.7, 0.6]), np.array([0, 0, 1, 0]), 0.45, 300, agnostic=True)
    assert kept.tolist() == [0, 3]


def test_detection_f1_counts_matched_detections_of_the_same_class():
    dense = yolov8([(20, 20, 10, 10), (60, 60, 20, 20), (100, 30, 8, 8)], [0, 1, 2], [0.9, 0.8, 0.7])
    same = {"out": dense[None]}
    assert detection_f1(same, same) == 1.0
    missed = yolov8([(20, 20, 10, 10), (60, 60, 20, 20), (100, 30, 8, 8)], [0, 1, 2], [0.9, 0.1, 0.7])
    assert detection_f1(same, {"out": missed[None]}) == pytest.approx(2 * 2 / (3 + 2))  # one score fell
    wrong = yolov8([(20, 20, 10, 10), (60, 60, 20, 20), (100, 30, 8, 8)], [0, 2, 2], [0.9, 0.8, 0.7])
    assert detection_f1(same, {"out": wrong[None]}) == pytest.approx(2 * 2 / 6)  # one class changed
    shifted = yolov8([(28, 20, 10, 10), (60, 60, 20, 20), (100, 30, 8, 8)], [0, 1, 2], [0.9, 0.8, 0.7])
    assert detection_f1(same, {"out": shifted[None]}) == pytest.approx(2 * 2 / 6)  # IoU of 2/18 < 0.5
    assert detection_f1(same, {"out": shifted[None]}, iou=0.1) == 1.0
    # two classes on one box: per-class NMS keeps both, class-agnostic NMS the better one only
    double = yolov8([(20, 20, 10, 10), (20, 20, 10, 10)], [0, 1], [0.9, 0.8])
    single = yolov8([(20, 20, 10, 10)], [0], [0.9])
    assert detection_f1({"o": double[None]}, {"o": single[None]}) == pytest.approx(2 / 3)
    assert detection_f1({"o": double[None]}, {"o": single[None]}, agnostic=1) == 1.0
    nothing = {"out": yolov8([], [], [])[None]}
    assert detection_f1(nothing, nothing) == 1.0 and detection_f1(same, nothing) == 0.0


def test_detection_f1_yolov5_layout_multiplies_objectness():
    v8 = yolov8([(20, 20, 10, 10), (60, 60, 20, 20)], [0, 1], [0.9, 0.8])
    v5 = np.concatenate([v8[:4], np.ones((1, v8.shape[1]), np.float32), v8[4:]]).T[
        None
    ]  # [1, anchors, 5 + C]
    dimmed = v5.copy()
    dimmed[0, 1, 4] = 0.2  # objectness 0.2 × class score 0.8 < 0.25
    assert detection_f1({"o": v5}, {"o": v5}, layout="yolov5") == 1.0
    assert detection_f1({"o": v5}, {"o": dimmed}, layout="yolov5") == pytest.approx(2 / 3)
    with pytest.raises(InputError, match="unknown layout"):
        detection_f1({"o": v5}, {"o": v5}, layout="ssd")


def test_detection_parts_separate_boxes_and_classes():
    boxes = [(20, 20, 10, 10), (60, 60, 20, 20), (100, 30, 8, 8)]
    rng = np.random.default_rng(0)
    dense = np.stack(
        [yolov8(boxes, [0, 1, 2], [0.9, 0.8, 0.7]) + rng.uniform(0, 0.01, (7, 20)) for _ in range(4)]
    )
    # the class of every sample's second detection changes; boxes stay where they are
    swapped = dense.copy()
    swapped[:, [5, 6], 1] = swapped[:, [6, 5], 1]
    parts = detection_parts({"o": dense}, {"o": swapped})
    assert parts["detections"] == {
        "dense": 12,
        "candidate": 12,
        "matched": 8,
        "precision": pytest.approx(8 / 12),
        "recall": pytest.approx(8 / 12),
        "f1": pytest.approx(8 / 12),
    }
    assert parts["boxes"]["r2_mean"] == 1.0 and parts["boxes"]["matched_iou_mean"] == pytest.approx(1.0)
    assert parts["classes"]["same_class_on_box_matches"] == pytest.approx(8 / 12)
    assert parts["classes"]["r2_min"] < 0.9 and parts["classes"]["lowest_class"] in (1, 2)
    assert "objectness" not in parts
    # the boxes shift by 2 px: the classes stay whole, the boxes' R² and IoU fall
    moved = dense.copy()
    moved[:, 0, :3] += 2
    parts = detection_parts({"o": dense}, {"o": moved})
    assert parts["classes"]["r2_min"] == 1.0 and parts["classes"]["same_class_on_box_matches"] == 1.0
    assert parts["boxes"]["r2_min"] < 1.0 and parts["boxes"]["matched_iou_mean"] < 0.9
    # yolov5 has an objectness part; compare() puts the parts beside the metric's value
    objectness = rng.uniform(0.8, 1.0, (4, 1, 20))
    v5 = np.concatenate([dense[:, :4], objectness, dense[:, 4:]], axis=1).transpose(0, 2, 1)
    dim = v5.copy()
    dim[:, :, 4] = 1.8 - dim[:, :, 4]  # objectness mirrored within its range
    fid = compare([v5], [dim], ["o"], [False], load_metric("detection-f1", "layout=yolov5"))
    assert fid["metric_fn"]["parts"]["objectness"]["r2"] < 0.5
    assert fid["metric_fn"]["parts"]["boxes"]["r2_mean"] == 1.0


def test_detection_damage_prices_what_decodes_and_ignores_the_background():
    boxes = [(20, 20, 10, 10), (60, 60, 20, 20)]
    dense = yolov8(boxes, [0, 1], [0.9, 0.8])[None]
    assert detection_damage({"o": dense}, {"o": dense}) == 0.0
    background = dense.copy()
    background[0, :4, 5:] += 50.0  # boxes of anchors no model scores: never decoded
    assert detection_damage({"o": dense}, {"o": background}) == 0.0
    moved = dense.copy()
    moved[0, 0, 0] += 5  # half a box width: IoU 1/3 on one of two live anchors
    assert detection_damage({"o": dense}, {"o": moved}) == pytest.approx((1 - 1 / 3) / 2)
    dimmed = dense.copy()
    dimmed[0, 5, 1] = 0.7  # one class score 0.1 lower: 0.1 / 0.25 of the threshold
    assert detection_damage({"o": dense}, {"o": dimmed}) == pytest.approx(0.4 / 2)
    appeared = dense.copy()
    appeared[0, 6, 7] = 0.5  # a new detection where the dense model has none counts in full
    # its box equals the dense one: the score term alone
    assert detection_damage({"o": dense}, {"o": appeared}) == pytest.approx(1 / 3)
    assert load_metric("detection-f1").damage is detection_damage and load_metric("map-iou").damage is None


def test_map_metrics():
    rng = np.random.default_rng(0)
    prob = rng.random((4, 1, 16, 16))
    assert map_iou({"m": prob}, {"m": prob}) == 1.0 and map_pearson(
        {"m": prob}, {"m": prob}
    ) == pytest.approx(1.0)
    half = prob.copy()
    half[:, :, :8] = 0.0
    inter = np.sum((prob > 0.5) & (half > 0.5), axis=(1, 2, 3))
    union = np.sum((prob > 0.5) | (half > 0.5), axis=(1, 2, 3))
    assert map_iou({"m": prob}, {"m": half}) == pytest.approx(np.mean(inter / union))
    assert map_pearson({"m": prob}, {"m": 1 - prob}) == pytest.approx(-1.0)


def test_options_and_specs():
    assert parse_options("layout=yolov8,score=0.3,max_det=100") == {
        "layout": "yolov8",
        "score": 0.3,
        "max_det": 100,
    }
    with pytest.raises(InputError, match="bad --metric-options"):
        parse_options("score")
    with pytest.raises(InputError, match="bad --metric-fn"):
        load_metric("accuracy")


def test_a_user_metric_is_the_reports_fidelity_and_the_gate(tmp_path, capsys):
    script = tmp_path / "metric.py"
    script.write_text("def half(dense, pruned, bias=0.0):\n    return 0.5 + bias\n")
    out = tmp_path / "out"
    args = [*FMNIST_64, "--no-int8", "--target", "1.2x", "-o", out, "--metric-fn", f"{script}:half"]
    code, _, err = run_cli(capsys, *args, "--metric-options", "bias=0.25", "--max-drop", "0.2", "--json")
    assert code == 4 and "quality gate failed" in err and f"{script}:half 0.7500" in err
    report = json.loads((out / "fmnist_resnet.report.json").read_text())
    assert report["fidelity"]["metric_fn"]["value"] == 0.75 and report["quality_gate"]["passed"] is False
    code, _, err = run_cli(capsys, *args, "--max-drop", "0.6")
    assert code == 0, err


@pytest.mark.parametrize(
    "body, words",
    [
        ("def m(a, b):\n    return 'good'\n", "expected a finite number"),
        ("def m(a, b):\n    return float('nan')\n", "expected a finite number"),
        ("def m(a, b):\n    raise KeyError('logits')\n", "raised KeyError"),
        ("raise SystemExit(2)\n", "raised SystemExit"),
        ("x = 1\n", "has no function 'm'"),
    ],
)
def test_a_broken_user_metric_is_one_line_exit_2(tmp_path, capsys, body, words):
    (tmp_path / "metric.py").write_text(body)
    model = tmp_path / "m.onnx"
    model.write_bytes(synthetic.build("conv_chain").SerializeToString())
    np.savez(tmp_path / "c.npz", **synthetic.random_inputs(synthetic.build("conv_chain"), batch=24))
    code, _, err = run_cli(
        capsys,
        "compress",
        model,
        "--calib",
        tmp_path / "c.npz",
        "--no-int8",
        "-o",
        tmp_path / "out",
        "--metric-fn",
        f"{tmp_path / 'metric.py'}:m",
    )
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and words in lines[0], err
    assert not (tmp_path / "out").exists()


def test_quantize_reports_the_user_metric_and_gates_on_it(tmp_path, capsys):
    script = tmp_path / "metric.py"
    script.write_text(
        "import numpy as np\n\ndef agree(dense, int8):\n"
        "    return float(np.mean(dense['logits'].argmax(1) == int8['logits'].argmax(1)))\n"
    )
    out = tmp_path / "out"
    code, _, err = run_cli(
        capsys,
        "quantize",
        MODELS / "fmnist_resnet.onnx",
        "--calib",
        MODELS / "fmnist_calib.npz",
        "--calib-samples",
        "64",
        "-o",
        out,
        "--metric-fn",
        f"{script}:agree",
        "--max-drop",
        "0.5",
    )
    assert code == 0, err
    report = json.loads((out / "fmnist_resnet.int8.report.json").read_text())
    got = report["fidelity"]["int8_vs_fp32"]
    assert got["metric_fn"]["value"] == pytest.approx(got["logits"]["top1_agreement"])
    assert report["quality_gate"]["metric"] == f"{script}:agree" and report["quality_gate"]["passed"]
