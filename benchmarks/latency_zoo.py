"""Latency-targeted pruning on the zoo: `--metric latency` beside MACs-targeted models, by measured speed.

    python -m benchmarks.latency_zoo [--models effnet mnv2] [--target 2] [--macs-targets 2 2.5]
    [--macs-round-to 16] [--out DIR]

For each model: `onnxprune compress --metric latency --target T` (its report carries the side-by-side
measured speedups at batch 1 and 32), then `--metric macs` at each of ``--macs-targets``, whose
speedups are measured here the same way (`onnxprune.bench.compare_latency`, dense vs pruned
interleaved, median of the rounds). Quality is measured on the held-out evaluation set, as in
benchmarks/compress_zoo.py, so a MACs-targeted model of the same measured speed can be read off
beside the latency-targeted one. All runs through the CLI, reconstruction on, no INT8.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import onnx

from benchmarks.common import MODELS, compress_cmd, machine
from benchmarks.compress_zoo import evaluate
from onnxprune.bench import compare_latency


def compress(model: Path, calib: Path, out: str, *args: str) -> tuple[dict | None, float, str]:
    t0 = time.perf_counter()
    cmd = compress_cmd(
        str(model),
        "--calib",
        str(calib),
        "-o",
        out,
        "--json",
        "--no-int8",
        *args,
    )
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return (
            None,
            wall,
            proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}",
        )
    return json.loads(proc.stdout), wall, ""


def speedups(dense: Path, pruned: Path, batches: tuple[int, ...], threads: int) -> dict[int, float]:
    a, b = onnx.load(str(dense)), onnx.load(str(pruned))
    out = {}
    for batch in batches:
        d, p = compare_latency(
            [a, b], batch=batch, threads=threads, rounds=60 if batch == 1 else 15, warmup=5
        )
        out[batch] = d.p50_ms / p.p50_ms
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=["effnet", "mnv2"], choices=list(MODELS))
    ap.add_argument("--target", type=float, default=2.0)
    ap.add_argument("--macs-targets", nargs="*", type=float, default=[2.0, 2.5])
    ap.add_argument("--macs-round-to", type=int, default=16, help="--round-to of the MACs-targeted runs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="keep the latency-targeted models in OUT/<model>/ (default: discarded)")
    args = ap.parse_args()
    print(f"Machine: {machine()}, {args.threads} onnxruntime threads\n")
    print(
        "| model | run | MACs | measured speedup b1 / b32 (side by side) | quality | wall "
        "|\n|---|---|---|---|---|---|"
    )
    for key in args.models:
        model, calib, eval_npz = MODELS[key]
        with tempfile.TemporaryDirectory() as tmp:
            out = f"{args.out}/{key}" if args.out else tmp
            report, wall, err = compress(
                model,
                calib,
                out,
                "--metric",
                "latency",
                "--target",
                f"{args.target}x",
                "--threads",
                str(args.threads),
            )
            if report is None:
                print(f"| {key} | latency {args.target}x | | failed: {err} | | {wall:.0f} s |", flush=True)
            else:
                m = report["latency"]["measured"]
                q = evaluate(key, model, Path(report["output"]), eval_npz)
                print(
                    f"| {key} | latency {args.target}x (report; {len(report['latency']['attempts'])} "
                    "allocations) | "
                    f"{report['achieved']['macs']:.2f}x | {m['batch 1']['speedup']:.2f}x / "
                    f"{m['batch 32']['speedup']:.2f}x | "
                    f"{q} | {wall:.0f} s |",
                    flush=True,
                )
                again = speedups(model, Path(report["output"]), (1, 32), args.threads)
                print(
                    f"| {key} | latency {args.target}x, re-measured here | | {again[1]:.2f}x / "
                    f"{again[32]:.2f}x | | |",
                    flush=True,
                )
        for t in args.macs_targets:
            with tempfile.TemporaryDirectory() as out:
                report, wall, err = compress(
                    model,
                    calib,
                    out,
                    "--metric",
                    "macs",
                    "--target",
                    f"{t}x",
                    "--round-to",
                    str(args.macs_round_to),
                )
                if report is None:
                    print(
                        f"| {key} | macs {t}x, round-to {args.macs_round_to} | | failed: {err} | | "
                        f"{wall:.0f} s |",
                        flush=True,
                    )
                    continue
                s = speedups(model, Path(report["output"]), (1, 32), args.threads)
                q = evaluate(key, model, Path(report["output"]), eval_npz)
                print(
                    f"| {key} | macs {t}x, round-to {args.macs_round_to} | "
                    f"{report['achieved']['macs']:.2f}x | {s[1]:.2f}x / {s[32]:.2f}x | {q} | "
                    f"{wall:.0f} s |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
