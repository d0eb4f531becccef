"""Where the error of a compressed model comes from: every pruned group, pruned *alone* to its width.

    python -m benchmarks.group_sensitivity [--models effnet mnv2] [--target 1.5]

Runs `compress` (defaults: obs + dp + reconstruction), then for each group it shrank prunes only that
group of the dense (normalized) model to the same kept channels, without reconstruction, and measures
top-1 agreement and KL against the dense model on the held-out eval crops, next to the MACs the group's
pruning saves; then the same after OBS compensation of the group's consumers from the dense Hessians of
the first 256 calibration rows and their 256 mosaics (``compensate_locally``, what the allocator's sensitivity measures). A
markdown table per model goes to stdout.
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import onnx
from onnxprune.calibration.augment import mosaics
from onnxprune.calibration.collect import collect_statistics
from onnxprune.passes.normalize import normalize
from onnxprune.passes.prune_channels import prune_channels
from onnxprune.passes.reconstruct import compensate_locally

from benchmarks.common import MODELS, run_batched
from onnxprune.costs import model_cost
from onnxprune.fidelity import compare
from onnxprune.layers import linear_layers
from onnxprune.modelio import load_model
from onnxprune.pipeline import CompressOptions, compress
from onnxprune.tracer import trace_channels


def _quality(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    m = compare([ref], [got], ["logits"])["logits"]
    return 100 * m["top1_agreement"], m["kl_dense_to_pruned"]


def table(key: str, target: float) -> str:
    model_path, calib, eval_npz = MODELS[key]
    feeds = {"input": np.load(eval_npz)["input"]}
    with tempfile.TemporaryDirectory() as out:
        report = compress(str(model_path), out, CompressOptions(target=target, calib=str(calib)))
        pruned = onnx.load(report["output"])
    dense, _ = normalize(load_model(model_path))
    shape = {"input": (1, *feeds["input"].shape[1:])}
    trace = trace_channels(dense, shape)
    base = model_cost(dense, shape)
    node_macs = {n.name: n.macs or 0 for n in base.nodes}
    ref = run_batched(dense, feeds)[0]
    layers = linear_layers(dense)
    rows = np.load(calib)["input"][:256]
    rows = np.concatenate([rows, mosaics(rows, len(rows), np.random.default_rng(0))])  # as compress's statistics
    stats = collect_statistics(dense, ({"input": rows[i:i + 16]} for i in range(0, len(rows), 16)), layers, {})
    hessians = {n: h.hessian() for n, h in stats.hessians.items()}
    counts = {n: h.n for n, h in stats.hessians.items()}

    def compensated(plan):
        pruned_alone = prune_channels(dense, trace, plan)
        compensate_locally(dense, pruned_alone, hessians, counts, *trace.layer_kept(layers, plan))
        return _quality(ref, run_batched(pruned_alone, feeds)[0])

    agr, kl = _quality(ref, run_batched(pruned, feeds)[0])
    lines = [f"### {key} at {target}x MACs: all groups with reconstruction: top-1 agr. {agr:.1f}%, KL {kl:.3f}", "",
             "| group | first member | kept / channels | MACs saved | alone, sliced: agr. / KL "
             "| alone, OBS-compensated: agr. / KL |",
             "|---|---|---|---|---|---|"]
    plan_all = {}
    for row in report["groups"]:
        if row["kept"] == row["channels"]:
            continue
        kept = np.setdiff1d(np.arange(row["channels"]), row["pruned_indices"])
        plan_all[row["id"]] = kept
        plan = {row["id"]: kept}
        saved = 100 * (1 - trace.predict_macs(node_macs, plan) / base.macs)
        a, k = _quality(ref, run_batched(prune_channels(dense, trace, plan), feeds)[0])
        ca, ck = compensated(plan)
        lines.append(f"| {row['id']} | {row['members'][0]['node']} | {row['kept']} / {row['channels']} | "
                     f"{saved:.1f}% | {a:.1f}% / {k:.3f} | {ca:.1f}% / {ck:.3f} |")
    a, k = _quality(ref, run_batched(prune_channels(dense, trace, plan_all), feeds)[0])
    ca, ck = compensated(plan_all)
    lines.append(f"| all | | | {100 * (1 - 1 / report['achieved']['macs']):.1f}% | {a:.1f}% / {k:.3f} | "
                 f"{ca:.1f}% / {ck:.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["effnet", "mnv2"], choices=["effnet", "mnv2"])
    ap.add_argument("--target", type=float, default=1.5)
    args = ap.parse_args()
    for key in args.models:
        print(table(key, args.target), flush=True)
        print()


if __name__ == "__main__":
    main()
