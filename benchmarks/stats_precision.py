"""Does float32 statistics accumulation keep the OBS channel ranking? (issue 4, `--stats-dtype float32`)

    python -m benchmarks.stats_precision [--models fmnist effnet mnv2]

Collects consumer Hessians over the same calibration samples in float64 and float32, ranks every
prunable group's channels by structured OBS with each, and reports the Spearman rank correlation of
the two removal orders per group (mean and minimum over groups).
"""

from __future__ import annotations

import argparse

import numpy as np
from onnxprune.calibration.collect import Wanted, collect_statistics
from onnxprune.calibration.readers import load_calibration
from onnxprune.passes.normalize import normalize
from scipy.stats import spearmanr

from benchmarks.common import SHIPPED, ZOO
from onnxprune.criteria import RankData, rank_groups
from onnxprune.layers import linear_layers
from onnxprune.modelio import load_model
from onnxprune.tracer import trace_channels

MODELS = {
    "fmnist": (SHIPPED / "fmnist_resnet.onnx", SHIPPED / "fmnist_calib.npz"),
    "effnet": (ZOO / "efficientnet_lite0.onnx", ZOO / "effnet_calib.npz"),
    "mnv2": (ZOO / "mobilenet_v2.onnx", ZOO / "imagenet_calib.npz"),
}


def orders(model, trace, groups, calib, dtype):
    layers = linear_layers(model)
    wanted = {
        m.node for g in groups for m in trace.members_of(g.id) if m.role == "consumer" and m.node in layers
    }
    stats = collect_statistics(
        model, calib.batches("calib", 16), Wanted({n: layers[n] for n in wanted}, dtype=dtype)
    )
    data = RankData.of(
        model,
        trace,
        hessians={n: h.hessian() for n, h in stats.hessians.items()},
        rows={n: h.n for n, h in stats.hessians.items()},
    )
    rankings, _ = rank_groups("obs", groups, data)
    return {gid: np.argsort(r.order) for gid, r in rankings.items()}  # channel → removal position


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = ap.parse_args()
    print("| model | groups | Spearman ρ float32 vs float64 (mean) | min | groups with identical order |")
    print("|---|---|---|---|---|")
    for key in args.models:
        path, calib_path = MODELS[key]
        if not path.exists():
            print(f"| {key} | not built | | | |")
            continue
        model, _ = normalize(load_model(path))
        trace = trace_channels(model)
        groups = trace.prunable_groups()
        calib = load_calibration(str(calib_path), model, samples=256, holdout=0)
        o64, o32 = (
            orders(model, trace, groups, calib, np.float64),
            orders(model, trace, groups, calib, np.float32),
        )
        rho = [spearmanr(o64[g.id], o32[g.id]).statistic for g in groups]
        same = sum(np.array_equal(o64[g.id], o32[g.id]) for g in groups)
        print(f"| {key} | {len(groups)} | {np.mean(rho):.4f} | {np.min(rho):.4f} | {same} |")


if __name__ == "__main__":
    main()
