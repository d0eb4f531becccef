"""Lossless pruning of composed planted graphs (``models.planted_compose``) at 0.97× the planted reduction.

    python -m benchmarks.planted_graphs [--seeds 200] [--first 0]

Per seed: ``compress --round-to 1 --no-int8`` with 1024 N(0,1) calibration samples (256 more held out) at a
target of 0.97 × (dense MACs / reduced MACs); then the relative output error of the pruned model against the
dense one on 16 fresh inputs (max |Δ| / max |y|, worst output) and the MACs reduction delivered over the
target. Prints one row per failing seed and a summary per pattern.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx

from models import planted_compose
from onnxprune.costs import model_cost
from onnxprune.pipeline import CompressOptions, compress

FRACTION = 0.97
WINDOW = 1.05
TOLERANCE = 1e-4


def lossless_run(seed: int, folder: Path) -> dict:
    """Compress composed graph ``seed`` at 0.97× its lossless reduction; its patterns, target, achieved
    reduction and worst relative output error (the pruned model is also checked with the full checker)."""
    from tests.helpers import rel_error, run_ort

    g = planted_compose.build(seed)
    src = folder / f"composed_{seed}.onnx"
    onnx.save(g.model, src)
    np.savez(folder / "calib.npz", **planted_compose.random_inputs(g.model, batch=1280, seed=7))
    dense, reduced = model_cost(g.model).macs, model_cost(g.reduced).macs
    target = FRACTION * dense / reduced
    report = compress(
        src,
        folder / "out",
        CompressOptions(
            target=target, calib=str(folder / "calib.npz"), calib_samples=1024, round_to=1, int8=False
        ),
    )
    pruned = onnx.load(report["output"])
    onnx.checker.check_model(pruned, full_check=True)
    feeds = planted_compose.random_inputs(g.model, batch=16, seed=99)
    error = max(
        rel_error(got, want)
        for got, want in zip(run_ort(pruned, feeds), run_ort(g.model, feeds), strict=True)
    )
    return {
        "seed": seed,
        "patterns": g.patterns,
        "target": target,
        "achieved": dense / report["pruned"]["macs"],
        "error": error,
    }


def passes(run: dict) -> bool:
    return (
        run["error"] < TOLERANCE and run["target"] * (1 - 1e-9) <= run["achieved"] <= WINDOW * run["target"]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--first", type=int, default=0)
    args = ap.parse_args()
    runs, t0 = [], time.perf_counter()
    for seed in range(args.first, args.first + args.seeds):
        with tempfile.TemporaryDirectory() as folder:
            run = lossless_run(seed, Path(folder))
        runs.append(run)
        if not passes(run):
            print(
                f"seed {seed} {run['patterns']}: error {run['error']:.1e}, "
                f"achieved {run['achieved']:.3f}x for {run['target']:.3f}x",
                flush=True,
            )
    by_pattern = defaultdict(list)
    for run in runs:
        for p in set(run["patterns"]):
            by_pattern[p].append(run)
    print(
        f"\n{sum(map(passes, runs))} of {len(runs)} graphs lossless within the window "
        f"({time.perf_counter() - t0:.0f} s)\n"
    )
    print("| pattern | graphs | worst relative error | achieved / target, min – max |\n|---|---|---|---|")
    for p, rs in sorted([("all", runs), *by_pattern.items()], key=lambda kv: (kv[0] != "all", kv[0])):
        ratio = [r["achieved"] / r["target"] for r in rs]
        print(
            f"| {p} | {len(rs)} | {max(r['error'] for r in rs):.1e} | {min(ratio):.3f} – {max(ratio):.3f} |"
        )


if __name__ == "__main__":
    main()
