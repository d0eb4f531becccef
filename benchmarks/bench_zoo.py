"""Latency of dense / pruned / INT8 / pruned+INT8 side by side, per model, as `onnxprune bench` measures it.

    python -m benchmarks.bench_zoo --model effnet DENSE PRUNED INT8 PRUNED_INT8 [--model mnv2 ...]
                                   [--batch 1,32] [--threads N] [--repeats 5] [--rounds 30] [--warmup 5]
                                   [--backend ort|tensorrt] [--input-shape NAME:DxDx..]

The four files of one model are measured in one process with interleaved rotating rounds
(`onnxprune.backends.run_bench`, the code behind `onnxprune bench`), `--repeats` times; the table shows the
median and the min of the per-repeat p50s, the speed-up of each variant over the dense model (ratio of
median p50s, same batch) and the throughput at the median. Produce the files with
`onnxprune compress MODEL --calib ... -o OUT` (pruned, pruned INT8) and `onnxprune quantize MODEL --calib
... -o OUT` (INT8 of the dense model). Models are measured one after the other, each in its own run.
"""

from __future__ import annotations

import argparse

from benchmarks.common import machine
from onnxprune.backends import run_bench
from onnxprune.bench import BenchOptions, parse_batches
from onnxprune.errors import OnnxPruneError
from onnxprune.shapes import parse_input_shapes

VARIANTS = ("dense", "pruned", "INT8", "pruned+INT8")


def table_rows(key: str, report: dict) -> list[str]:
    """Markdown rows of one model's report, variants in VARIANTS order, batch by batch."""
    out = []
    for i, r in enumerate(report["results"]):  # batch by batch, the models in the order given
        head = f"| {key} | {VARIANTS[i % len(VARIANTS)]} | {r['batch']} |"
        if r["skipped"]:
            out.append(f"{head} skipped: {r['skipped']} | | | | | |")
            continue
        speedup = "—" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        out.append(
            f"{head} {r['p50_median_ms']:.3f} | {r['p50_min_ms']:.3f} | {r['stats']['p99_ms']:.3f} | "
            f"{speedup} | {r['throughput']:.0f} | {r['size_mb']:.2f} |"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model",
        nargs=5,
        action="append",
        required=True,
        metavar=("NAME", *VARIANTS),
        help="A model's name and its four ONNX files (repeatable).",
    )
    ap.add_argument("--batch", default="1", help="Batch sizes, comma-separated (default 1).")
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: one per core).")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--backend", choices=("ort", "tensorrt"), default="ort")
    ap.add_argument("--input-shape", action="append", default=[], metavar="NAME:DxDx..")
    args = ap.parse_args()
    batches = parse_batches(args.batch)
    print(
        f"Machine: {machine()}; backend {args.backend}, threads {args.threads or 'default'}, "
        f"{args.rounds} interleaved rounds × {args.repeats} repeats after {args.warmup} warm-up rounds\n"
    )
    print(
        "| model | variant | batch | p50 ms (median of repeats) | p50 ms (min) | p99 ms | speed-up vs dense "
        "| "
        "samples/s | size MB |\n|---|---|---|---|---|---|---|---|---|"
    )
    for key, *paths in args.model:
        try:
            opts = BenchOptions(
                batches,
                args.threads,
                args.rounds,
                args.warmup,
                args.repeats,
                parse_input_shapes(args.input_shape),
                args.backend,
            )
            report = run_bench(paths, opts)
        except OnnxPruneError as exc:
            print(f"| {key} | not measured: {exc} | | | | | | | |", flush=True)
            continue
        print("\n".join(table_rows(key, report)), flush=True)


if __name__ == "__main__":
    main()
