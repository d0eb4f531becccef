"""Delivered cost against the target, and what it keeps: the default `compress` on the zoo at each target.

    python -m benchmarks.exact_targets [--models fmnist effnet mnv2 minilm] [--targets 1.5 2 3]
                                       [--python PY --cwd DIR] [--plans plans.json]

Runs `onnxprune compress MODEL --calib CALIB --target Xx --no-int8 --json` as a user would (INT8 does not
change the plan). Per run: the MACs reduction achieved and whether it lies in [X, 1.05 X], the held-out
fidelity from the report (top-1 agreement, or embedding cosine for MiniLM), the quality on the evaluation
set (Fashion-MNIST accuracy; ImageNet models: agreement on the 456 held-out photo crops), wall time, and
how many prunable groups keep another width than in ``--plans`` (a JSON written by an earlier run, e.g. with
``--python``/``--cwd`` pointing at an older checkout of onnxprune: same command, other code).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from benchmarks.common import MODELS, ZOO, compressed, group_key, machine
from benchmarks.compress_zoo import evaluate
from onnxprune.fidelity import headline

ALL = {**MODELS, "minilm": (ZOO / "minilm_l6.onnx", ZOO / "minilm_calib.npz", None)}
WINDOW = 1.05


def run(python: str, cwd: str, model: Path, calib: Path, target: float) -> tuple[dict, float]:
    with compressed(
        [str(model), "--calib", str(calib), "--target", f"{target}x", "--no-int8"], python, cwd
    ) as (code, report, err, wall):
        if code == 3:  # target unreachable: the report is the message
            return {"unreachable": err.strip()}, wall
        if code:
            raise RuntimeError(err.strip()[-300:])
        report["_pruned_bytes"] = Path(report["output"]).read_bytes()
        return report, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=list(ALL), choices=list(ALL))
    ap.add_argument("--targets", nargs="+", type=float, default=[2.0])
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--cwd", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument(
        "--plans", help="JSON of earlier plans to compare with (written there if it does not exist)"
    )
    args = ap.parse_args()
    earlier = json.loads(Path(args.plans).read_text()) if args.plans and Path(args.plans).exists() else None
    plans = {}
    print(f"Machine: {machine()}; code: {args.cwd}\n")
    print("| model | target | achieved MACs | in window | held-out | eval set | groups changed | wall |")
    print("|---|---|---|---|---|---|---|---|")
    for key in args.models:
        model, calib, eval_npz = ALL[key]
        if not model.exists():
            print(f"| {key} | | not built (python models/build_zoo.py) | | | | | |")
            continue
        for target in args.targets:
            report, wall = run(args.python, args.cwd, model, calib, target)
            if "unreachable" in report:
                reason = report["unreachable"].removeprefix("error: ")
                print(f"| {key} | {target}x | exit 3: {reason} | | | | | |")
                continue
            achieved = report["achieved"]["macs"]
            # a group is known by its members (ids shift when the tracer finds more groups)
            widths = {group_key(g): g["kept"] for g in report["groups"] if g["prunable"]}
            plans[f"{key}@{target}"] = widths
            name, value = headline(report["fidelity"])
            quality = "—"
            if eval_npz is not None:
                with tempfile.NamedTemporaryFile(suffix=".onnx") as f:
                    f.write(report["_pruned_bytes"])
                    f.flush()
                    quality = evaluate(key, model, Path(f.name), eval_npz)
            changed = "—"
            if earlier is not None and f"{key}@{target}" in earlier:
                before = earlier[f"{key}@{target}"]
                changed = f"{sum(before.get(g) != w for g, w in widths.items())} of {len(widths)}"
                if set(before) != set(widths):
                    changed += (
                        f" ({len(set(widths) - set(before))} new, {len(set(before) - set(widths))} gone)"
                    )
            inside = "yes" if target * (1 - 1e-9) <= achieved <= WINDOW * target else "**no**"
            row = [
                key,
                f"{target}x",
                f"{achieved:.3f}x",
                inside,
                f"{name} {value:.4f}",
                quality,
                changed,
                f"{wall:.0f} s",
            ]
            print("| " + " | ".join(row) + " |", flush=True)
    if args.plans and earlier is None:
        Path(args.plans).write_text(json.dumps(plans, indent=1))


if __name__ == "__main__":
    main()
