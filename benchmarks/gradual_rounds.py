"""Gradual pruning probe: reach a MACs target in rounds instead of at once.

    python -m benchmarks.gradual_rounds [--models effnet] [--fold 0] [--rounds 1.145 1.145 1.145]

Calibrates as ``benchmarks.unseen_photos`` does (the fold's 256 calibration rows) and runs ``compress``
(defaults) once per round, each round on the previous round's output and to the given factor of *its* MACs
(so 1.145³ ≈ 1.5x of the dense model). A later round's statistics, OBS ranking, measured sensitivity and DP
see the model the earlier rounds left, but its refit targets that model, not the dense one. After every
round the model is scored against the dense one on the fold's held-back gcompris photos. Not a feature of
``compress``: it measures whether the plan (which channels, which groups) or the per-layer repair limits
1.5x, at one full compress per round.
"""

from __future__ import annotations

import argparse
import tempfile

import onnx
from onnxprune.passes.normalize import normalize

from benchmarks.common import MODELS, run_batched
from benchmarks.group_sensitivity import fold_data, quality
from benchmarks.unseen_photos import CALIB_ROWS
from onnxprune.modelio import load_model
from onnxprune.pipeline import CompressOptions, compress


def rounds(key: str, fold: int, factors: list[float]) -> list[str]:
    model_path, calib, _ = MODELS[key]
    dense, _ = normalize(load_model(model_path))
    lines = []
    with tempfile.TemporaryDirectory() as out:
        calib, held = fold_data(calib, fold, out)
        ref = run_batched(dense, {"input": held})[0]
        src, total = str(model_path), 1.0
        for i, factor in enumerate(factors):
            report = compress(
                src,
                f"{out}/round{i}",
                CompressOptions(target=factor, calib=str(calib), int8=False, calib_samples=CALIB_ROWS),
            )
            src = report["output"]
            total *= report["achieved"]["macs"]
            agr, kl = quality(ref, run_batched(onnx.load(src), {"input": held})[0])
            lines.append(
                f"| {key} | {fold} | {i + 1} / {len(factors)} | {total:.3f}x | {agr:.1f}% | {kl:.3f} |"
            )
            print(lines[-1], flush=True)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["effnet"], choices=["effnet", "mnv2"])
    ap.add_argument("--fold", type=int, default=0, choices=[0, 1, 2, 3])
    ap.add_argument(
        "--rounds",
        nargs="+",
        type=float,
        default=[1.145, 1.145, 1.145],
        help="MACs factor of each round, relative to the previous round's model",
    )
    args = ap.parse_args()
    print("| model | fold | round | MACs vs dense | top-1 agr. (held-back gcompris) | KL |")
    print("|---|---|---|---|---|---|")
    for key in args.models:
        rounds(key, args.fold, args.rounds)


if __name__ == "__main__":
    main()
