"""Channel groups of the zoo, and a 50% prune of every prunable group (issue 3 acceptance).

    python -m benchmarks.trace_zoo          # prints markdown for BENCHMARKS.md

For each model: groups found / prunable / blocked with reasons, each prunable group's width, producers
and MACs controlled, then every prunable group halved: the pruned graph must pass the full ONNX checker,
run in onnxruntime, and have exactly the MACs the tracer predicts.
"""

from __future__ import annotations

import time

import numpy as np
import onnx
from onnxprune.passes.normalize import normalize
from onnxprune.passes.prune_channels import prune_channels

from benchmarks.common import SHIPPED, ZOO, machine
from onnxprune.costs import human, model_cost
from onnxprune.latency import ort_session
from onnxprune.modelio import load_model
from onnxprune.tracer import trace_channels

MODELS = [
    ("Fashion-MNIST ResNet", SHIPPED / "fmnist_resnet.onnx", {"input": (1, 1, 28, 28)}),
    ("MobileNetV2", ZOO / "mobilenet_v2.onnx", {"input": (1, 3, 224, 224)}),
    ("EfficientNet-Lite0", ZOO / "efficientnet_lite0.onnx", {"input": (1, 3, 224, 224)}),
    (
        "all-MiniLM-L6-v2",
        ZOO / "minilm_l6.onnx",
        {k: (1, 64) for k in ("input_ids", "attention_mask", "token_type_ids")},
    ),
]


def report(name, path, shapes) -> None:
    if not path.exists():
        print(f"\n### {name}\n\nnot built (python models/build_zoo.py)")
        return
    model, _ = normalize(load_model(path))
    t0 = time.perf_counter()
    trace = trace_channels(model, shapes)
    elapsed = time.perf_counter() - t0
    cost = model_cost(model, shapes)
    node_macs = {n.name: n.macs or 0 for n in cost.nodes}
    gmacs = trace.group_macs(node_macs)
    prunable = trace.prunable_groups()
    blocked = [g for g in trace.groups if not g.prunable]
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    outputs = {o.name for o in model.graph.output}
    conv_ok = sum(
        trace.group_of(trace.space_of(c.output[0]), 0).prunable for c in convs if c.output[0] not in outputs
    )
    print(f"\n### {name}\n")
    print(
        f"{len(trace.groups)} groups, **{len(prunable)} prunable**, {len(blocked)} blocked; traced in "
        f"{elapsed:.2f} s. "
        f"Conv output channel sets in a prunable group: {conv_ok} of {len(convs)} "
        f"(not counting model outputs).\n"
    )
    print("| group | channels | producers | members | MACs controlled |\n|---|---|---|---|---|")
    for g in prunable:
        producers = [n for n, r in g.members if r == "producer"]
        shown = ", ".join(producers[:3]) + (f" … (+{len(producers) - 3})" if len(producers) > 3 else "")
        print(f"| {g.id} | {g.size} | {len(producers)}: {shown} | {len(g.members)} | {human(gmacs[g.id])} |")
    if blocked:
        print("\nBlocked groups:\n")
        for g in blocked:
            reason = "; ".join(g.reasons) or "single channel"
            print(f"- group {g.id} ({g.size} channels, {len(g.members)} members): {reason}")
    plan = {g.id: np.arange(0, g.size, 2) for g in prunable}
    pruned = prune_channels(model, trace, plan)
    onnx.checker.check_model(pruned, full_check=True)
    feeds = {}
    for vi in pruned.graph.input:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        feeds[vi.name] = np.ones(shapes[vi.name], dtype)
    ort_session(pruned).run(None, feeds)
    after = model_cost(pruned, shapes)
    predicted = trace.predict_macs(node_macs, plan)
    print(
        f"\nEvery prunable group halved: MACs {human(cost.macs)} → {human(after.macs)} ({after.macs:,}; "
        "tracer "
        f"predicted {predicted:,.0f}), params {human(cost.params)} → {human(after.params)}; full ONNX check "
        "passes, runs in onnxruntime."
    )


def main() -> None:
    print(f"Machine: {machine()}")
    for name, path, shapes in MODELS:
        report(name, path, shapes)


if __name__ == "__main__":
    main()
