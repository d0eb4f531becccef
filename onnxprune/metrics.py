"""Fidelity metrics chosen with ``--metric-fn``: a shipped one by name, or ``file.py:function`` of the user's.

A metric is a function ``fn(dense, candidate, **options) -> float`` of two dicts {output name: array over the
held-out samples} — the dense model's outputs and the compressed model's — returning a fidelity where 1.0
means the candidate behaves like the dense model; ``--max-drop X`` fails when it falls below 1 − X. Options
come from ``--metric-options key=value,...`` (numbers are parsed; the rest stay strings).

Shipped:

* ``detection-f1``: the candidate's detections against the dense model's after each model's own decode and
  non-maximum suppression, F1 at IoU ≥ ``iou`` with the same class. ``layout``: ``yolov8`` (output
  [N, 4 + classes, anchors]: cx, cy, w, h, class scores) or ``yolov5`` ([N, anchors, 5 + classes]: cx, cy,
  w, h,
  objectness, class scores; score = objectness × class score); ``score`` (0.25) the confidence threshold,
  ``nms`` (0.45) the suppression IoU, ``agnostic`` (0: per class; 1: across classes), ``max_det`` (300),
  ``output`` (default the first output).
* ``map-iou``: mean over samples of the IoU of the two maps thresholded at ``threshold`` (0.5) — a text
  detector's probability map, a segmenter's mask.
* ``map-pearson``: mean over samples of the Pearson correlation of the two maps.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .fidelity import component_r2
from .userfn import user_function

Outputs = Mapping[str, np.ndarray]


def _pick(outputs: Outputs, output: str | None) -> np.ndarray:
    if output is None:
        return next(iter(outputs.values()))
    if output not in outputs:
        raise InputError(f"metric option output='{output}': the model has outputs {', '.join(outputs)}")
    return outputs[output]


def pair_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``a`` and ``b`` (x1, y1, x2, y2 on the last axis), broadcast over the other axes."""
    lo, hi = np.maximum(a[..., :2], b[..., :2]), np.minimum(a[..., 2:], b[..., 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    area = lambda x: np.prod(np.clip(x[..., 2:] - x[..., :2], 0, None), axis=-1)  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-12)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` [n, 4] with every box of ``b`` [m, 4], boxes as x1, y1, x2, y2."""
    return pair_iou(a[:, None], b[None, :])


def corners(p: np.ndarray) -> np.ndarray:
    """cx, cy, w, h (the first four entries of the last axis) → x1, y1, x2, y2."""
    return np.concatenate([p[..., :2] - p[..., 2:4] / 2, p[..., :2] + p[..., 2:4] / 2], axis=-1)


def anchors(raw: np.ndarray, layout: str) -> tuple[np.ndarray, np.ndarray]:
    """A YOLO head's raw output (one sample or a batch) as (predictions [..., anchors, 4 + …] with cx, cy, w,
    h first, class confidences [..., anchors, classes]: the class scores, times objectness for yolov5)."""
    if layout == "yolov8":
        preds = np.swapaxes(raw, -1, -2)  # [..., anchors, 4 + classes]
        return preds, preds[..., 4:]
    if layout == "yolov5":
        return raw, raw[..., 5:] * raw[..., 4:5]
    raise InputError(f"detection-f1: unknown layout '{layout}' (choose yolov8 or yolov5)")


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    iou: float,
    max_det: int,
    agnostic: bool = False,
) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first: per class, or across classes when
    ``agnostic``."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    suppressed = np.zeros(len(order), bool)
    overlaps = box_iou(boxes[order], boxes[order]) if len(order) else np.zeros((0, 0))
    same = (classes[order][:, None] == classes[order][None, :]) | bool(agnostic)
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(int(order[i]))
        if len(keep) == max_det:
            break
        suppressed |= (overlaps[i] > iou) & same[i]
    return np.array(keep, dtype=int)


def decode(
    raw: np.ndarray, layout: str, score: float, nms_iou: float, max_det: int, agnostic: bool = False
) -> tuple[np.ndarray, ...]:
    """One sample's detections (boxes x1 y1 x2 y2, classes, scores) from a YOLO head's raw output."""
    preds, cls_scores = anchors(raw, layout)
    classes = cls_scores.argmax(1)
    conf = cls_scores[np.arange(len(preds)), classes]
    sel = conf >= score
    boxes = corners(preds[sel])
    keep = nms(boxes, conf[sel], classes[sel], nms_iou, max_det, agnostic)
    return boxes[keep], classes[sel][keep], conf[sel][keep]


def matched_pairs(
    ref: tuple[np.ndarray, ...], cand: tuple[np.ndarray, ...], iou: float
) -> list[tuple[int, int, float]]:
    """(candidate, reference, IoU) of the candidate detections matching a reference detection of the same
    class at IoU ≥ ``iou``: each reference detection matched once, the candidates taken best score first."""
    if not len(ref[0]) or not len(cand[0]):
        return []
    overlaps = box_iou(cand[0], ref[0]) * (cand[1][:, None] == ref[1][None, :])
    taken = np.zeros(len(ref[0]), bool)
    pairs = []
    for i in np.argsort(-cand[2], kind="stable"):
        best = np.where(taken, -1.0, overlaps[i])
        j = int(best.argmax())
        if best[j] >= iou:
            taken[j] = True
            pairs.append((int(i), j, float(best[j])))
    return pairs


def matched(ref: tuple[np.ndarray, ...], cand: tuple[np.ndarray, ...], iou: float) -> int:
    """How many candidate detections match a reference detection (``matched_pairs``)."""
    return len(matched_pairs(ref, cand, iou))


@dataclass(frozen=True)
class Detection:
    """The detection metrics' options (``--metric-options``): output layout, score threshold, match IoU,
    NMS IoU, detections kept per image, class-agnostic NMS (1) and which output holds the predictions."""

    layout: str = "yolov8"
    score: float = 0.25
    iou: float = 0.5
    nms: float = 0.45
    max_det: int = 300
    agnostic: int = 0
    output: str | None = None

    def decoded(self, dense: Outputs, candidate: Outputs):
        """Per sample, the dense model's and the candidate's detections (``decode``)."""
        for r, c in zip(_pick(dense, self.output), _pick(candidate, self.output), strict=True):
            yield (
                decode(r, self.layout, self.score, self.nms, int(self.max_det), bool(self.agnostic)),
                decode(c, self.layout, self.score, self.nms, int(self.max_det), bool(self.agnostic)),
            )


def detection_f1(dense: Outputs, candidate: Outputs, **options) -> float:
    """F1 of the candidate's detections against the dense model's (see the module doc; ``options``:
    ``Detection``); 1.0 when neither model detects anything."""
    det = Detection(**options)
    hits = n_ref = n_cand = 0
    for ref, cand in det.decoded(dense, candidate):
        hits += matched(ref, cand, det.iou)
        n_ref, n_cand = n_ref + len(ref[0]), n_cand + len(cand[0])
    return 1.0 if n_ref + n_cand == 0 else 2.0 * hits / (n_ref + n_cand)


def detection_parts(dense: Outputs, candidate: Outputs, **options) -> dict:
    """A detector's fidelity part by part, so that a collapse of one cannot hide behind the F1:

    * ``detections``: counts, precision, recall and F1 of the candidate's detections against the dense
      model's;
    * ``boxes``: R² of the box components (cx, cy, w, h) over all anchors, and the mean IoU of the candidate's
      detections matched to the dense model's regardless of class;
    * ``objectness`` (yolov5): R² of the objectness component;
    * ``classes``: mean and lowest R² of the class-score components, and on the class-agnostic matches the
      share whose class is the same.
    """
    det = Detection(**options)
    r2 = component_r2(_pick(dense, det.output), _pick(candidate, det.output))
    first_class = 4 if det.layout == "yolov8" else 5
    hits = n_ref = n_cand = box_hits = same_class = 0
    ious: list[float] = []
    for ref, cand in det.decoded(dense, candidate):
        hits += matched(ref, cand, det.iou)
        n_ref, n_cand = n_ref + len(ref[0]), n_cand + len(cand[0])
        anyclass = (ref[0], np.zeros_like(ref[1]), ref[2]), (cand[0], np.zeros_like(cand[1]), cand[2])
        for i, j, overlap in matched_pairs(*anyclass, det.iou):
            box_hits += 1
            same_class += int(ref[1][j] == cand[1][i])
            ious.append(overlap)
    out = {
        "detections": {
            "dense": n_ref,
            "candidate": n_cand,
            "matched": hits,
            "precision": hits / n_cand if n_cand else 1.0,
            "recall": hits / n_ref if n_ref else 1.0,
            "f1": 1.0 if n_ref + n_cand == 0 else 2.0 * hits / (n_ref + n_cand),
        },
        "boxes": {
            "r2_mean": float(r2[:4].mean()),
            "r2_min": float(r2[:4].min()),
            "matched_iou_mean": float(np.mean(ious)) if ious else None,
            "matched": box_hits,
        },
    }
    if det.layout == "yolov5":
        out["objectness"] = {"r2": float(r2[4])}
    cls = r2[first_class:]
    out["classes"] = {
        "r2_mean": float(cls.mean()),
        "r2_min": float(cls.min()),
        "lowest_class": int(cls.argmin()),
        "same_class_on_box_matches": same_class / box_hits if box_hits else None,
    }
    return out


def detection_damage(
    dense: Outputs,
    candidate: Outputs,
    layout: str = "yolov8",
    score: float = 0.25,
    output: str | None = None,
    **_,
) -> float:
    """A smooth stand-in for 1 − ``detection_f1`` that sensitivity trials can price (F1 moves in steps of
    whole detections). On the anchors where either model's best score reaches half the threshold ``score`` —
    the ones that carry or nearly carry a detection, before NMS:

        damage = mean(1 − IoU(dense box, candidate box)) + mean(min(1, max_class |Δ score| / score)),

    0 when the two agree; each term at most 1. Background anchors, whose boxes are never decoded, do not
    count."""
    ref, ref_s = anchors(_pick(dense, output).astype(np.float64), layout)
    cand, cand_s = anchors(_pick(candidate, output).astype(np.float64), layout)
    live = (ref_s.max(-1) >= score / 2) | (cand_s.max(-1) >= score / 2)
    if not live.any():
        return 0.0
    overlap = pair_iou(corners(ref[live]), corners(cand[live]))
    shift = np.minimum(1.0, np.abs(ref_s[live] - cand_s[live]).max(-1) / score)
    return float(np.mean(1.0 - overlap) + np.mean(shift))


def map_iou(dense: Outputs, candidate: Outputs, threshold: float = 0.5, output: str | None = None) -> float:
    """Mean over samples of IoU(dense > threshold, candidate > threshold); 1.0 for a sample where both are
    empty."""
    a, b = _pick(dense, output) > threshold, _pick(candidate, output) > threshold
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    union = np.sum(a | b, axis=1)
    return float(np.mean(np.where(union > 0, np.sum(a & b, axis=1) / np.maximum(union, 1), 1.0)))


def map_pearson(dense: Outputs, candidate: Outputs, output: str | None = None) -> float:
    """Mean over samples of the Pearson correlation of the two maps (1.0 for a constant sample both agree
    on)."""
    a = _pick(dense, output).astype(np.float64)
    b = _pick(candidate, output).astype(np.float64)
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    norm = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    same = np.all(np.isclose(a, b), axis=1)
    return float(np.mean(np.where(norm > 0, np.sum(a * b, axis=1) / np.maximum(norm, 1e-300), same)))


SHIPPED: dict[str, Callable[..., float]] = {
    "detection-f1": detection_f1,
    "map-iou": map_iou,
    "map-pearson": map_pearson,
}
# per-part fidelity shown beside a shipped metric's value (same options)
DETAILS: dict[str, Callable[..., dict]] = {"detection-f1": detection_parts}
# the smooth damage the sensitivity trials price for a shipped metric (same options)
DAMAGE: dict[str, Callable[..., float]] = {"detection-f1": detection_damage}


@dataclass
class Metric:
    """A loaded ``--metric-fn`` with its options; calling it checks that it returns a finite number."""

    name: str
    fn: Callable[..., float]
    options: dict = field(default_factory=dict)
    details: Callable[..., dict] | None = None
    damage: Callable[..., float] | None = None

    def __call__(self, dense: Outputs, candidate: Outputs) -> float:
        try:
            value = self.fn(dense, candidate, **self.options)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's code: any failure is their input's
            raise InputError(f"--metric-fn {self.name} raised {type(exc).__name__}: {exc}") from None
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float, np.floating, np.integer))
            or not math.isfinite(float(value))
        ):
            raise InputError(f"--metric-fn {self.name} returned {value!r}, expected a finite number")
        return float(value)

    def parts(self, dense: Outputs, candidate: Outputs) -> dict | None:
        """The per-part fidelity of a shipped metric (``DETAILS``), None for others."""
        return self.details(dense, candidate, **self.options) if self.details else None


def parse_options(text: str | None) -> dict:
    """``"layout=yolov8,score=0.3"`` → {"layout": "yolov8", "score": 0.3}."""
    out: dict = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip().isidentifier():
            raise InputError(f"bad --metric-options '{text}': expected key=value pairs separated by commas")
        value = value.strip()
        try:
            out[key.strip()] = int(value) if value.lstrip("-").isdigit() else float(value)
        except ValueError:
            out[key.strip()] = value
    return out


def load_metric(spec: str, options: str | None = None) -> Metric:
    """A shipped metric by name, or ``file.py:function`` (imports and runs that file: only code you trust)."""
    kwargs = parse_options(options)
    if spec in SHIPPED:
        return Metric(spec, SHIPPED[spec], kwargs, DETAILS.get(spec), DAMAGE.get(spec))
    path, sep, func = spec.rpartition(":")
    if not sep or not path.endswith(".py") or not func:
        raise InputError(
            f"bad --metric-fn '{spec}': expected {', '.join(SHIPPED)} or path/to/file.py:function"
        )
    if not os.path.isfile(path):
        raise InputError(f"--metric-fn script not found: {path}")
    with user_function(path, func, "--metric-fn script") as fn:
        return Metric(spec, fn, kwargs)
