"""A real segmentation-style model: PP-OCRv4's DB text detector (``models.text_zoo``) compressed per target.

    python -m benchmarks.text_detector [--targets 1.5 2] [--extra "--round-to 8"]

`onnxprune compress models/cache/text_det.onnx --calib models/cache/text_calib.npz --calib-samples 96
--input-shape x:1x3x320x320 --target Xx --metric-fn map-iou --metric-options threshold=0.3 --no-int8`, then
on the 64 evaluation crops (pages in other texts and fonts, other scene-text photos): the IoU of the pruned
model's text mask with the dense model's (probability > 0.3, rapidocr's threshold) and the Pearson correlation
of the maps, each the mean over crops; wall time of the compress run.
"""

from __future__ import annotations

import argparse
import shlex
import sys

import numpy as np
import onnx

from benchmarks.common import ZOO, compressed, machine, run_batched
from onnxprune.metrics import map_iou, map_pearson

MODEL, CALIB, EVAL = ZOO / "text_det.onnx", ZOO / "text_calib.npz", ZOO / "text_eval.npz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--targets", nargs="+", type=float, default=[1.5, 2.0])
    ap.add_argument("--extra", default="", help="more compress options")
    args = ap.parse_args()
    if not MODEL.exists():
        sys.exit("not built: python -m models.text_zoo")
    feeds = {"x": np.load(EVAL)["x"]}
    dense = {"map": run_batched(onnx.load(str(MODEL)), feeds, 16)[0]}
    print(f"Machine: {machine()}\n")
    print("| target | achieved MACs | held-out map IoU (report) | eval mask IoU | eval Pearson | wall |")
    print("|---|---|---|---|---|---|")
    for target in args.targets:
        cmd = [
            str(MODEL),
            "--calib",
            str(CALIB),
            "--calib-samples",
            "96",
            "--input-shape",
            "x:1x3x320x320",
            "--target",
            f"{target}x",
            "--metric-fn",
            "map-iou",
            "--metric-options",
            "threshold=0.3",
            "--no-int8",
            *shlex.split(args.extra),
        ]
        with compressed(cmd) as (code, report, err, wall):
            if code:
                print(f"| {target}x | failed: {err.strip()[-200:]} | | | | |")
                continue
            pruned = {"map": run_batched(onnx.load(report["output"]), feeds, 16)[0]}
            print(
                f"| {target}x | {report['achieved']['macs']:.3f}x | "
                f"{report['fidelity']['metric_fn']['value']:.4f} | "
                f"{map_iou(dense, pruned, threshold=0.3):.4f} | {map_pearson(dense, pruned):.4f} | "
                f"{wall:.0f} s |",
                flush=True,
            )


if __name__ == "__main__":
    main()
