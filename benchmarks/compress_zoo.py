"""Compression quality on the zoo: {magnitude+uniform, magnitude+global, obs+dp, obs+dp+reconstruction} ×
targets.

    python -m benchmarks.compress_zoo [--models fmnist effnet mnv2] [--targets 1.5 2]

Fashion-MNIST ResNet: true accuracy on the 10k test images. ImageNet models: top-1 agreement, top-5
overlap and KL against the dense model on the 456 held-out photo crops (models/cache/*_eval.npz).
Every run goes through the CLI (`onnxprune compress --no-int8`) as a user would, timed with peak RSS
(INT8 is benchmarked on its own by benchmarks/quantize_zoo.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from benchmarks.common import MODELS, compress_cmd, machine, quality_text, run_batched

CONFIGS = {
    "magnitude+uniform": ["--criterion", "magnitude", "--allocation", "uniform", "--no-reconstruct"],
    "magnitude+global": ["--criterion", "magnitude", "--allocation", "global", "--no-reconstruct"],
    "obs+dp": ["--no-reconstruct"],
    "obs+dp+reconstruct": [],
    "obs+dp+search+reconstruct": ["--search-evals", "32"],
}


def evaluate(key: str, dense: Path, pruned: Path, eval_npz: Path) -> str:
    data = np.load(eval_npz)
    feeds = {"input": data["input"]}
    got = run_batched(onnx.load(str(pruned)), feeds, 64)[0]
    ref = got if key == "fmnist" else run_batched(onnx.load(str(dense)), feeds, 64)[0]
    return quality_text(key, got, ref, data["labels"] if "labels" in data.files else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--targets", nargs="+", type=float, default=[1.5, 2.0])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = ap.parse_args()
    print(f"Machine: {machine()}\n")
    print("| model | target | config | quality | MACs | wall | peak RSS |\n|---|---|---|---|---|---|---|")
    for key in args.models:
        model, calib, eval_npz = MODELS[key]
        if not model.exists():
            print(f"| {key} | — | — | not built (python models/build_zoo.py) | | | |")
            continue
        if key == "fmnist":
            dense_q = evaluate(key, model, model, eval_npz)
            print(f"| {key} | 1x | dense | {dense_q} | | | |")
        for target in args.targets:
            for name in args.configs:
                with tempfile.TemporaryDirectory() as out:
                    t0 = time.perf_counter()
                    cmd = compress_cmd(
                        str(model),
                        "--calib",
                        str(calib),
                        "--target",
                        f"{target}x",
                        "-o",
                        out,
                        "--json",
                        "--no-int8",
                        *CONFIGS[name],
                    )
                    with tempfile.TemporaryFile("w+") as so, tempfile.TemporaryFile("w+") as se:
                        proc = subprocess.Popen(cmd, stdout=so, stderr=se, text=True)
                        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
                        wall = time.perf_counter() - t0
                        rss = usage.ru_maxrss / 1024
                        so.seek(0)
                        se.seek(0)
                        stdout, stderr = so.read(), se.read()
                    if os.waitstatus_to_exitcode(status) != 0:
                        print(f"| {key} | {target}x | {name} | failed: {stderr.strip()[-200:]} | | | |")
                        continue
                    report = json.loads(stdout)
                    q = evaluate(key, model, Path(report["output"]), eval_npz)
                    print(
                        f"| {key} | {target}x | {name} | {q} | {report['achieved']['macs']:.2f}x | "
                        f"{wall:.0f} s | "
                        f"{rss:.0f} MB |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
