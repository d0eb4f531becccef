"""2:4 and unstructured 50 % sparsity on the zoo: SparseGPT vs magnitude, every eligible layer.

    python -m benchmarks.sparsity_zoo [--models fmnist effnet mnv2] [--patterns 2:4 0.5]
                                      [--criteria sparsegpt magnitude] [--calib-rows 256] [--percdamp 0.01]
                                      [--correct fixed] [--bias] [--shrink 0.25] [--ridge 1e-3] [--mosaics N]
                                      [--no-support-refit]

Each model is loaded and normalized (BatchNorm folded) as `compress` does, then sparsified with
calibration on the first 256 rows (--calib-rows) of its *_calib.npz. Fashion-MNIST ResNet: true accuracy on
the 10k
test images. ImageNet models: top-1 agreement, top-5 overlap and KL(dense ‖ sparse) against the dense
model on the 456 held-out photo crops. SparseGPT also reads ``--mosaics`` 2x2 mosaics of the calibration
images after them, as `compress` does (default: one per row for image inputs of 64 px or more, i.e. not
Fashion-MNIST; 0: none).

--correct runs SparseGPT once per listed error correction (``sparsify(correct=...)``: "off" prunes toward
each layer's output on the sparsified model's inputs, "fixed" toward the dense model's, "validated"
chooses per layer); --bias refits the biases too. Magnitude rows ignore both.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np
from onnxprune.calibration.augment import DEFAULT_MIN_SIDE, image_input, mosaics
from onnxprune.passes.normalize import normalize
from onnxprune.passes.sparsify import SparsifyOptions, sparsify

from benchmarks.common import MODELS, machine, quality_text, run_batched
from onnxprune.modelio import load_model

CALIB_ROWS = 256
BATCH = 32


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--patterns", nargs="+", default=["2:4", "0.5"])
    ap.add_argument("--criteria", nargs="+", default=["sparsegpt", "magnitude"])
    ap.add_argument("--calib-rows", type=int, default=CALIB_ROWS)
    ap.add_argument("--percdamp", type=float, default=0.01)
    ap.add_argument("--correct", nargs="+", default=["fixed"], choices=["off", "fixed", "validated"])
    ap.add_argument("--bias", action="store_true", help="refit biases to the dense model's mean outputs")
    ap.add_argument("--shrink", type=float, default=0.25, help="pull of the corrected target toward W")
    ap.add_argument("--ridge", type=float, default=1e-3)
    ap.add_argument("--mosaics", type=int, help="SparseGPT mosaics (default: compress's)")
    ap.add_argument(
        "--no-support-refit",
        action="store_true",
        help="keep SparseGPT's lazy-update weights (no least-squares re-solve of each row's kept weights)",
    )
    args = ap.parse_args()
    print(f"Machine: {machine()}\n")
    print(
        "| model | pattern | criterion | quality | zeros in eligible / all linear weights | eligible layers "
        "| wall |\n|---|---|---|---|---|---|---|"
    )
    for key in args.models:
        path, calib_npz, eval_npz = MODELS[key]
        if not path.exists():
            print(f"| {key} | — | — | not built (python models/build_zoo.py) | | | |")
            continue
        dense, _ = normalize(load_model(path))
        calib = np.load(calib_npz)["input"][: args.calib_rows]
        count = (
            args.mosaics
            if args.mosaics is not None
            else len(calib)
            if image_input({"input": calib}, DEFAULT_MIN_SIDE)
            else 0
        )
        with_mosaics = (
            np.concatenate([calib, mosaics(calib, count, np.random.default_rng(0))]) if count else calib
        )
        evaluation = np.load(eval_npz)
        feeds = {"input": evaluation["input"]}
        labels = evaluation["labels"] if "labels" in evaluation else None
        dense_logits = run_batched(dense, feeds, 64)[0]
        if key == "fmnist":
            print(f"| {key} | dense | — | {quality_text(key, dense_logits, dense_logits, labels)} | | | |")

        def batches(rows=with_mosaics):
            return ({"input": rows[i : i + BATCH]} for i in range(0, len(rows), BATCH))

        def real_batches(rows=calib):  # magnitude reads calibration only for its report's output errors
            return batches(rows)

        for pattern in args.patterns:
            runs = [
                (c, corr) for c in args.criteria for corr in (args.correct if c == "sparsegpt" else ["off"])
            ]
            for criterion, correct in runs:
                t0 = time.perf_counter()
                extra = (
                    dict(
                        correct=correct,
                        bias=args.bias,
                        shrink=args.shrink,
                        ridge=args.ridge,
                        support_refit=not args.no_support_refit,
                    )
                    if criterion == "sparsegpt"
                    else {}
                )
                opts = SparsifyOptions(pattern=pattern, criterion=criterion, percdamp=args.percdamp, **extra)
                sparse, report = sparsify(dense, batches if criterion == "sparsegpt" else real_batches, opts)
                wall = time.perf_counter() - t0
                q = quality_text(key, run_batched(sparse, feeds, 64)[0], dense_logits, labels)
                total = report["eligible_layers"] + report["skipped_layers"]
                label = criterion
                if extra and (correct != "off" or args.bias):
                    label += f", correct {correct}" + (", bias" if args.bias else "")
                    if correct != "off" and args.shrink != 0.25:
                        label += f", shrink {args.shrink:g}"
                    if args.no_support_refit:
                        label += ", no support refit"
                    if correct == "validated":
                        chosen = Counter(e.get("correction") for e in report["layers"] if e["eligible"])
                        label += f" ({chosen['corrected']} corrected / {chosen['plain']} plain)"
                print(
                    f"| {key} | {pattern} | {label} | {q} | {100 * report['sparsity_eligible']:.1f}% / "
                    f"{100 * report['sparsity_linear']:.1f}% | {report['eligible_layers']}/{total} | "
                    f"{wall:.0f} s |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
