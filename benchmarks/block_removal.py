"""Depth instead of width: what removing whole residual blocks costs, beside channel pruning.

    python -m benchmarks.block_removal [--models effnet mnv2] [--fold 0] [--mix 1.5 --drops 1]

A residual block ``y = x + f(x)`` can go entirely: either *dropped* (``y = x``; EfficientNet-Lite0 was
trained with stochastic depth, which asks exactly this of its blocks) or *replaced* by a 1×1 conv fitted by
least squares from x to y on the fold's 256 calibration rows (every position a row, intercept, ridge 1e-3
of the mean diagonal). Each block alone is scored against the dense model on the fold's held-back gcompris
photos (as ``benchmarks.gradual_rounds``); then blocks are removed cumulatively, each by its better way, in
the order of KL per MAC saved. ``--mix T``: the first ``--drops`` blocks of that order dropped, then
``compress`` (defaults, the fold's calibration rows) prunes channels of what is left to T times fewer MACs
than the dense model. Not a feature of ``compress``: it measures whether trading depth for width
could reach a MACs target at less damage than channel pruning does.
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnxprune.calibration.collect import stream
from onnxprune.passes.normalize import normalize

from benchmarks.common import MODELS, run_batched
from benchmarks.group_sensitivity import fold_data, quality
from benchmarks.unseen_photos import CALIB_ROWS
from onnxprune.costs import model_cost
from onnxprune.modelio import load_model
from onnxprune.pipeline import CompressOptions, compress

RIDGE = 1e-3


def residual_blocks(graph: gs.Graph) -> list[tuple[str, str, set[str]]]:
    """(Add node, skip tensor, names of the branch's nodes) of every Add whose other input leads back
    only to the skip tensor and constants."""
    producer = {t.name: n for n in graph.nodes for t in n.outputs}
    blocks = []
    for add in (n for n in graph.nodes if n.op == "Add" and len(n.inputs) == 2):
        for skip, branch in (add.inputs, add.inputs[::-1]):
            nodes, stack, closed = set(), [branch], True
            while stack and closed:
                t = stack.pop()
                if t.name == skip.name or isinstance(t, gs.Constant):
                    continue
                node = producer.get(t.name)
                closed = node is not None
                if closed and node.name not in nodes:
                    nodes.add(node.name)
                    stack.extend(node.inputs)
            if closed and nodes:
                blocks.append((add.name, skip.name, nodes))
                break
    return blocks


def fit_pointwise(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 1×1 conv (W, b) minimizing Σ‖W x_p + b − y_p‖² + λ‖[W b]‖² over every position p of NCHW maps."""
    rows = np.moveaxis(x, 1, -1).reshape(-1, x.shape[1]).astype(np.float64)
    rows = np.hstack([rows, np.ones((len(rows), 1))])
    target = np.moveaxis(y, 1, -1).reshape(-1, y.shape[1]).astype(np.float64)
    gram = rows.T @ rows
    gram += RIDGE * np.trace(gram) / len(gram) * np.eye(len(gram))
    wb = np.linalg.solve(gram, rows.T @ target)
    return wb[:-1].T.astype(np.float32)[:, :, None, None], wb[-1].astype(np.float32)


def without_blocks(model: onnx.ModelProto, removed: dict[str, tuple[str, tuple | None]]) -> onnx.ModelProto:
    """``model`` with each residual Add in ``removed`` (name → (skip tensor, fitted 1×1 or None: dropped))
    turned into its skip tensor or into the fitted conv; the branches go with the cleanup."""
    graph = gs.import_onnx(model)
    tensors, nodes = graph.tensors(), {n.name: n for n in graph.nodes}
    alias = {}  # a dropped block's output → the tensor that replaced it (the next block's skip may be it)
    for name in (n.name for n in graph.nodes if n.name in removed):
        skip, conv = removed[name]
        skip, add = alias.get(skip, skip), nodes[name]
        if conv is None:
            out = add.outputs[0]
            alias[out.name] = skip
            for consumer in list(out.outputs):
                for i, t in enumerate(list(consumer.inputs)):
                    if t is out:
                        consumer.inputs[i] = tensors[skip]
            add.outputs.clear()
        else:
            add.op, add.attrs = "Conv", {}
            add.inputs.clear()
            add.inputs.extend(
                [tensors[skip], gs.Constant(f"{name}_W", conv[0]), gs.Constant(f"{name}_B", conv[1])]
            )
    graph.cleanup().toposort()
    out = gs.export_onnx(graph)
    del out.opset_import[:]
    out.opset_import.extend(model.opset_import)
    return out


def probe(key: str, fold: int, mix: float | None = None, drops: int = 1) -> None:
    model_path, calib, _ = MODELS[key]
    dense, _ = normalize(load_model(model_path))
    tmp = tempfile.TemporaryDirectory()
    calib, held = fold_data(calib, fold, tmp.name)
    with np.load(calib) as z:
        x = z["input"][:CALIB_ROWS]
    ref = run_batched(dense, {"input": held})[0]
    blocks = residual_blocks(gs.import_onnx(dense))
    add_out = {n.name: n.output[0] for n in dense.graph.node}
    taps = sorted({skip for _, skip, _ in blocks} | {add_out[add] for add, _, _ in blocks})
    parts: dict[str, list[np.ndarray]] = {t: [] for t in taps}

    def keep(outs: dict[str, np.ndarray]) -> None:
        for t, v in outs.items():
            parts[t].append(v)

    stream(dense, ({"input": x[i : i + 32]} for i in range(0, len(x), 32)), taps, keep)
    acts = {t: np.concatenate(v) for t, v in parts.items()}
    macs = {n.name: n.macs or 0 for n in model_cost(dense).nodes}
    total = sum(macs.values())
    rows = []
    for add, skip, branch in blocks:
        saved = sum(macs.get(n, 0) for n in branch) / total
        conv = fit_pointwise(acts[skip], acts[add_out[add]])
        drop = quality(ref, run_batched(without_blocks(dense, {add: (skip, None)}), {"input": held})[0])
        fit = quality(ref, run_batched(without_blocks(dense, {add: (skip, conv)}), {"input": held})[0])
        way = (skip, None) if drop[1] <= fit[1] else (skip, conv)
        rows.append((min(drop[1], fit[1]) / saved, add, way))
        print(
            f"| {key} | {add} | {100 * saved:.1f}% | {drop[0]:.1f}% / {drop[1]:.3f} | {fit[0]:.1f}% / "
            f"{fit[1]:.3f} |",
            flush=True,
        )
    print(f"\n| {key} | blocks removed | MACs vs dense | top-1 agr. | KL |\n|---|---|---|---|---|")
    order = sorted(rows, key=lambda r: r[0])
    removed = {}
    for _, add, way in order:
        removed[add] = way
        pruned = without_blocks(dense, removed)
        agr, kl = quality(ref, run_batched(pruned, {"input": held})[0])
        print(
            f"| {key} | {len(removed)} | {total / model_cost(pruned).macs:.3f}x | {agr:.1f}% | {kl:.3f} |",
            flush=True,
        )
    if mix:
        dropped = without_blocks(dense, {add: (skip, None) for _, add, (skip, _) in order[:drops]})
        onnx.save(dropped, f"{tmp.name}/dropped.onnx")
        factor = total / model_cost(dropped).macs
        report = compress(
            f"{tmp.name}/dropped.onnx",
            f"{tmp.name}/out",
            CompressOptions(target=mix / factor, calib=str(calib), int8=False, calib_samples=CALIB_ROWS),
        )
        pruned = onnx.load(report["output"])
        agr, kl = quality(ref, run_batched(pruned, {"input": held})[0])
        print(
            f"\n{key} fold {fold}: {drops} block(s) dropped ({factor:.3f}x), then channels: "
            f"{total / model_cost(pruned).macs:.3f}x MACs, top-1 agr. {agr:.1f}%, KL {kl:.3f}",
            flush=True,
        )
    tmp.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["effnet", "mnv2"], choices=["effnet", "mnv2"])
    ap.add_argument("--fold", type=int, default=0, choices=[0, 1, 2, 3])
    ap.add_argument("--mix", type=float, help="MACs target reached by dropping --drops blocks, then channels")
    ap.add_argument("--drops", type=int, default=1)
    args = ap.parse_args()
    for key in args.models:
        print(
            "| model | residual Add | MACs of its branch | dropped: top-1 agr. / KL | fitted 1×1: top-1 "
            "agr. / KL |"
        )
        print("|---|---|---|---|---|")
        probe(key, args.fold, args.mix, args.drops)
        print()


if __name__ == "__main__":
    main()
