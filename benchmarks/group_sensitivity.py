"""Where the error of a compressed model comes from: every pruned group, pruned *alone* to its width.

    python -m benchmarks.group_sensitivity [--models effnet mnv2] [--target 1.5] [--fold 0]

Runs `compress` (defaults: obs + dp + reconstruction), then for each group it shrank prunes only that
group of the dense (normalized) model to the same kept channels, without reconstruction, and measures
top-1 agreement and KL against the dense model on the held-out eval crops, next to the MACs the group's
pruning saves; then the same after OBS compensation of the group's consumers from the dense Hessians of
the first 256 calibration rows and their 256 mosaics (``compensate_locally``, what the allocator's
sensitivity measures). A
markdown table per model goes to stdout.

``--fold F``: calibrate as ``benchmarks.unseen_photos`` does (the 256 calibration rows of that fold) and
measure on the fold's held-back gcompris photos instead of the eval crops; the heading also gives the
whole compressed model on its own 256 calibration rows (what the least-squares refit fitted: the most
the same compressor could score on new photos if it generalized perfectly).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxprune.calibration.augment import mosaics
from onnxprune.calibration.collect import Wanted, collect_statistics
from onnxprune.passes.normalize import normalize
from onnxprune.passes.prune_channels import prune_channels
from onnxprune.passes.reconstruct import compensate_locally

from benchmarks.common import MODELS, run_batched
from benchmarks.unseen_photos import CALIB_ROWS, EARLIER_PHOTOS, HOLD_EVERY, group_anchors, split_rows
from onnxprune.costs import model_cost
from onnxprune.fidelity import compare
from onnxprune.layers import linear_layers
from onnxprune.modelio import load_model
from onnxprune.pipeline import CompressOptions, compress
from onnxprune.tracer import trace_channels


def quality(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    m = compare([ref], [got], ["logits"])["logits"]
    return 100 * m["top1_agreement"], m["kl_dense_to_pruned"]


def fold_data(calib: Path, fold: int, tmp: str) -> tuple[Path, np.ndarray]:
    """(calibration file of the fold as ``unseen_photos`` writes it, the fold's held-back gcompris rows)."""
    with np.load(calib) as z:
        x, groups = z["input"], z["groups"]
    cal, seen, unseen = split_rows(groups, 0, fold, CALIB_ROWS, group_anchors(calib, int(groups.max()) + 1))
    path = Path(tmp) / "calib.npz"
    both = np.concatenate([cal, seen])
    np.savez(path, input=x[both], groups=groups[both])
    return path, x[unseen[groups[unseen] >= EARLIER_PHOTOS]]


def table(key: str, target: float, fold: int | None = None) -> str:
    model_path, calib, eval_npz = MODELS[key]
    with tempfile.TemporaryDirectory() as out:
        if fold is None:
            feeds = {"input": np.load(eval_npz)["input"]}
        else:
            calib, held = fold_data(calib, fold, out)
            feeds = {"input": held}
        report = compress(
            str(model_path),
            out,
            CompressOptions(target=target, calib=str(calib), int8=False, calib_samples=CALIB_ROWS),
        )
        pruned = onnx.load(report["output"])
        own = np.load(calib)["input"][:CALIB_ROWS]  # the rows compress calibrated on
    dense, _ = normalize(load_model(model_path))
    shape = {"input": (1, *feeds["input"].shape[1:])}
    trace = trace_channels(dense, shape)
    base = model_cost(dense, shape)
    node_macs = {n.name: n.macs or 0 for n in base.nodes}
    ref = run_batched(dense, feeds)[0]
    layers = linear_layers(dense)
    rows = np.concatenate([own, mosaics(own, len(own), np.random.default_rng(0))])  # as compress's statistics
    stats = collect_statistics(
        dense, ({"input": rows[i : i + 16]} for i in range(0, len(rows), 16)), Wanted(layers)
    )
    hessians = {n: h.hessian() for n, h in stats.hessians.items()}
    counts = {n: h.n for n, h in stats.hessians.items()}

    def compensated(plan):
        pruned_alone = prune_channels(dense, trace, plan)
        compensate_locally(dense, pruned_alone, hessians, counts, *trace.layer_kept(layers, plan))
        return quality(ref, run_batched(pruned_alone, feeds)[0])

    agr, kl = quality(ref, run_batched(pruned, feeds)[0])
    where = (
        "eval crops"
        if fold is None
        else f"fold {fold}'s held-back gcompris photos ({len(feeds['input'])} crops)"
    )
    head = (
        f"### {key} at {target}x MACs, {where}: all groups with reconstruction: "
        f"top-1 agr. {agr:.1f}%, KL {kl:.3f}"
    )
    if fold is not None:
        a, k = quality(run_batched(dense, {"input": own})[0], run_batched(pruned, {"input": own})[0])
        head += f" (on its own 256 calibration rows: {a:.1f}%, KL {k:.3f})"
    lines = [
        head,
        "",
        "| group | first member | kept / channels | MACs saved | alone, sliced: agr. / KL "
        "| alone, OBS-compensated: agr. / KL |",
        "|---|---|---|---|---|---|",
    ]
    plan_all = {}
    for row in report["groups"]:
        if row["kept"] == row["channels"]:
            continue
        kept = np.setdiff1d(np.arange(row["channels"]), row["pruned_indices"])
        plan_all[row["id"]] = kept
        plan = {row["id"]: kept}
        saved = 100 * (1 - trace.predict_macs(node_macs, plan) / base.macs)
        a, k = quality(ref, run_batched(prune_channels(dense, trace, plan), feeds)[0])
        ca, ck = compensated(plan)
        lines.append(
            f"| {row['id']} | {row['members'][0]['node']} | {row['kept']} / {row['channels']} | "
            f"{saved:.1f}% | {a:.1f}% / {k:.3f} | {ca:.1f}% / {ck:.3f} |"
        )
    a, k = quality(ref, run_batched(prune_channels(dense, trace, plan_all), feeds)[0])
    ca, ck = compensated(plan_all)
    lines.append(
        f"| all | | | {100 * (1 - 1 / report['achieved']['macs']):.1f}% | {a:.1f}% / {k:.3f} | "
        f"{ca:.1f}% / {ck:.3f} |"
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["effnet", "mnv2"], choices=["effnet", "mnv2"])
    ap.add_argument("--target", type=float, default=1.5)
    ap.add_argument(
        "--fold",
        type=int,
        choices=range(HOLD_EVERY),
        default=None,
        help="calibrate on this unseen_photos fold, measure on its held-back gcompris photos",
    )
    args = ap.parse_args()
    for key in args.models:
        print(table(key, args.target, args.fold), flush=True)
        print()


if __name__ == "__main__":
    main()
