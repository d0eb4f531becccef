"""Plan identity: the same command on two versions of the code keeps the same channels and the same fidelity.

    python -m benchmarks.plan_identity --save before.json [--models fmnist effnet mnv2] [--targets 1.5 2]
    python -m benchmarks.plan_identity --against before.json          # after a change, same machine
    python -m benchmarks.plan_identity --save before.json --python OLD/.venv/bin/python --cwd OLD  # other
    code

Runs the default `onnxprune compress MODEL --calib CALIB --target Xx --json` (INT8 included) as a user would
and records, per model and target, the kept channel indices of every group (a group is known by its members,
so ids may shift) and every number of the report's `fidelity` and `int8.fidelity`. ``--against`` prints, per
run, the groups whose kept indices differ and the largest absolute difference of any fidelity number; it
exits 1 when a plan differs or a number moved by more than ``--tolerance`` (default 1e-6).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.common import MODELS, compressed, group_key, machine


def numbers(tree, prefix: str = "") -> dict[str, float]:
    """Every number of a nested report section, keyed by its path (``logits/top1_agreement``)."""
    if isinstance(tree, bool):
        return {}
    if isinstance(tree, int | float):
        return {prefix: float(tree)}
    if isinstance(tree, dict):
        return {
            k: v for key, sub in tree.items() for k, v in numbers(sub, f"{prefix}/{key}".lstrip("/")).items()
        }
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in numbers(sub, f"{prefix}/{i}").items()}
    return {}


def record(report: dict) -> dict:
    """What must not move: kept indices per group (keyed by members) and the fidelity numbers."""
    kept = {}
    for g in report["groups"]:
        if g["prunable"]:
            key = group_key(g)
            pruned = set(g["pruned_indices"])
            kept[key] = [i for i in range(g["channels"]) if i not in pruned]
    int8 = (report.get("int8") or {}).get("fidelity") or {}
    return {
        "kept": kept,
        "fidelity": numbers(report["fidelity"]),
        "int8": numbers(int8),
        "achieved": report["achieved"]["macs"],
    }


def differences(before: dict, after: dict) -> tuple[int, float, str]:
    """(groups whose kept indices differ or that appear on one side only, largest number difference, the
    number it was)."""
    groups = set(before["kept"]) | set(after["kept"])
    changed = sum(before["kept"].get(g) != after["kept"].get(g) for g in groups)
    worst, where = abs(before["achieved"] - after["achieved"]), "achieved"
    for section in ("fidelity", "int8"):
        a, b = before[section], after[section]
        if set(a) != set(b):
            return changed, float("inf"), f"{section}: other numbers"
        for k in a:
            if abs(a[k] - b[k]) > worst:
                worst, where = abs(a[k] - b[k]), f"{section}/{k}"
    return changed, worst, where


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--targets", nargs="+", type=float, default=[1.5, 2.0])
    ap.add_argument("--save", type=Path, help="write the plans and numbers of this code here")
    ap.add_argument("--against", type=Path, help="compare this code with plans saved earlier")
    ap.add_argument("--tolerance", type=float, default=1e-6)
    ap.add_argument("--python", default=sys.executable, help="the Python whose onnxprune runs compress")
    ap.add_argument("--cwd", default=str(Path(__file__).resolve().parents[1]), help="its working directory")
    args = ap.parse_args()
    if not (args.save or args.against):
        ap.error("give --save, --against or both")
    earlier = json.loads(args.against.read_text()) if args.against else {}
    runs, failed = {}, False
    print(f"Machine: {machine()}\n")
    print("| model | target | groups | groups with other kept indices | largest fidelity difference | wall |")
    print("|---|---|---|---|---|---|")
    for key in args.models:
        model, calib, _ = MODELS[key]
        if not model.exists():
            print(f"| {key} | | not built (python models/build_zoo.py) | | | |")
            continue
        for target in args.targets:
            name = f"{key}@{target}"
            cmd = [str(model), "--calib", str(calib), "--target", f"{target}x"]
            with compressed(cmd, args.python, args.cwd) as (code, rep, err, wall):
                if code:
                    sys.exit(f"{name}: compress exited {code}: {err.strip()[-300:]}")
                runs[name] = record(rep)
            cells = ["—", "—"]
            if name in earlier:
                changed, worst, where = differences(earlier[name], runs[name])
                failed |= changed > 0 or worst > args.tolerance
                cells = [str(changed), f"{worst:.1e}" + (f" ({where})" if worst else "")]
            print(
                f"| {key} | {target}x | {len(runs[name]['kept'])} | {' | '.join(cells)} | {wall:.0f} s |",
                flush=True,
            )
    if args.save:
        args.save.write_text(json.dumps(runs, indent=0))
    missing = set(earlier) - set(runs)
    if missing:
        print(f"\nnot run here: {', '.join(sorted(missing))}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
