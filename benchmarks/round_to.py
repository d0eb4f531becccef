"""Evidence for the `--round-to` default of `--metric latency`: ORT CPU time of layers at every width.

For a few pointwise (1x1) convs of each model, the single-layer probe of `onnxprune.latency_table`
is timed at every output width from `full − 2·16` to `full`, with the input width fixed. A step
pattern (widths between multiples of 8 or 16 cost as much as the next multiple) means rounding
widths to that multiple loses no speed while keeping more channels; the printed table gives, per
residue class of the width, the median time relative to the next multiple of 16 above it.

    .venv/bin/python -m benchmarks.round_to --models effnet mnv2 --threads 2
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import onnx
from onnxprune.passes.normalize import normalize

from benchmarks.common import MODELS
from onnxprune.latency_table import probe_model, time_probe
from onnxprune.shapes import static_shapes
from onnxprune.tracer import trace_channels


def pointwise_convs(model, trace, count: int) -> list:
    """The ``count`` pointwise convs with the most output channels whose output space is prunable."""
    prunable = {s.space for g in trace.groups if g.prunable for s in g.segments}
    found = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        w = next(t for t in model.graph.initializer if t.name == node.input[1])
        out = trace.space_of(node.output[0])
        if list(w.dims[2:]) == [1, 1] and out in prunable and w.dims[0] >= 48:
            found.append((w.dims[0], node, out))
    found.sort(key=lambda f: -f[0])
    return found[:count]


def sweep(name: str, threads: int, layers: int, span: int = 32) -> dict[int, list[float]]:
    """Per residue (width mod 16): time at that width / time at the next multiple of 16 (≥ it)."""
    model, _ = normalize(onnx.load(str(MODELS[name][0])))
    shapes = {"input": (1, 3, 224, 224)}
    trace = trace_channels(model, shapes)
    tensors = static_shapes(model, shapes)
    ratios: dict[int, list[float]] = {r: [] for r in range(16)}
    for full, node, space in pointwise_convs(model, trace, layers):
        top = full - full % 16
        widths = range(top - span, top + 1)
        ms = {}
        for w in widths:
            probe, feeds = probe_model(model, trace, node, tensors, {space: w})
            ms[w] = min(time_probe(probe, feeds, threads, runs=30) for _ in range(3))
        for w in widths:
            up = w + (-w) % 16
            if up in ms:
                ratios[w % 16].append(ms[w] / ms[up])
        print(f"{name} {node.name} (full {full}): " + " ".join(f"{w}:{ms[w]:.3f}" for w in widths), flush=True)
    return ratios


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["effnet", "mnv2"], choices=[k for k in MODELS if k != "fmnist"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=4)
    args = ap.parse_args(argv)
    rows = {}
    for name in args.models:
        rows[name] = sweep(name, args.threads, args.layers)
    print("\n| width mod 16 | " + " | ".join(args.models) + " |")
    print("|---|" + "---|" * len(args.models))
    for r in range(16):
        cells = [f"{statistics.median(rows[m][r]):.2f}" if rows[m][r] else "" for m in args.models]
        print(f"| {r} | " + " | ".join(cells) + " |")
    allr = {k: np.median([x for m in args.models for x in rows[m][k]]) for k in range(16)}
    print("\nmedian time of a width relative to the next multiple of 16: "
          f"multiples of 8 {allr[8]:.2f}, others {np.median([allr[k] for k in range(16) if k % 8]):.2f}")


if __name__ == "__main__":
    main()
