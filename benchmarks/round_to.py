"""Evidence for the `--round-to` default of `--metric latency`: same MACs, different width multiples.

Each model is pruned to the same MACs target with widths rounded to 1, 2, 4, 8, 16 and 32
(`magnitude` + `uniform`, no reconstruction: the weights do not matter for speed, only the widths),
then all variants and the dense model are timed side by side in one process
(`onnxprune.bench.compare_latency`, interleaved rounds, median). Odd widths break onnxruntime's
blocked NCHWc convolutions (a conv whose input channels are not a multiple of the block is left in
NCHW, with layout reorders around it), so equal MACs can run at very different speeds.

    .venv/bin/python -m benchmarks.round_to --models effnet mnv2 --target 2 --threads 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import onnx

from benchmarks.common import MODELS, compress_cmd, machine
from onnxprune.bench import compare_latency

MULTIPLES = (1, 2, 4, 8, 16, 32)


def prune(model: Path, out: str, target: float, round_to: int) -> tuple[onnx.ModelProto, float]:
    cmd = compress_cmd(
        str(model),
        "--target",
        f"{target}x",
        "--criterion",
        "magnitude",
        "--allocation",
        "uniform",
        "--no-reconstruct",
        "--round-to",
        str(round_to),
        "-o",
        out,
        "--json",
        "--no-int8",
    )
    report = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    return onnx.load(report["output"]), report["achieved"]["macs"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["effnet", "mnv2"], choices=list(MODELS))
    ap.add_argument("--target", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    args = ap.parse_args(argv)
    print(f"Machine: {machine()}, {args.threads} onnxruntime threads, MACs target {args.target}x\n")
    print("| model | round-to | MACs | " + " | ".join(f"speedup b{b}" for b in args.batches) + " |")
    print("|---|---|---|" + "---|" * len(args.batches))
    for key in args.models:
        dense = onnx.load(str(MODELS[key][0]))
        variants, macs = [], []
        with tempfile.TemporaryDirectory() as tmp:
            for r in MULTIPLES:
                m, achieved = prune(MODELS[key][0], f"{tmp}/r{r}", args.target, r)
                variants.append(m)
                macs.append(achieved)
        speed = {}
        for b in args.batches:
            stats = compare_latency(
                [dense, *variants], batch=b, threads=args.threads, rounds=60 if b == 1 else 12, warmup=5
            )
            speed[b] = [stats[0].p50_ms / s.p50_ms for s in stats[1:]]
        for i, r in enumerate(MULTIPLES):
            print(
                f"| {key} | {r} | {macs[i]:.2f}x | "
                + " | ".join(f"{speed[b][i]:.2f}x" for b in args.batches)
                + " |",
                flush=True,
            )


if __name__ == "__main__":
    main()
