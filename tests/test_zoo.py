"""The real zoo (built by models/build_zoo.py into models/cache/) analyzes and normalizes faithfully.

Skipped where the zoo has not been built (CI builds only the shipped model); BENCHMARKS.md records the
numbers measured on the full zoo.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnxprune.passes.normalize import normalize
from onnxprune.passes.prune_channels import mask_channels, prune_channels

from benchmarks.common import ZOO
from onnxprune.analyze import analyze_model
from onnxprune.costs import model_cost
from onnxprune.modelio import load_model
from onnxprune.tracer import trace_channels
from tests.helpers import rel_error, run_ort

# model file, eval npz, expected MACs at batch 1 (published: MobileNetV2 300M, EfficientNet-Lite0 ~385M)
ZOO_MODELS = {
    "efficientnet_lite0": ("effnet_eval.npz", (3.7e8, 4.0e8)),
    "mobilenet_v2": ("imagenet_eval.npz", (2.95e8, 3.05e8)),
    "minilm_l6": ("minilm_eval.npz", (6.5e8, 7.5e8)),  # at sequence length 64
}


@pytest.mark.parametrize("name", sorted(ZOO_MODELS))
def test_real_zoo_model(name):
    path = ZOO / f"{name}.onnx"
    npz, (lo, hi) = ZOO_MODELS[name]
    if not path.exists():
        pytest.skip(f"{path} not built (python models/build_zoo.py)")
    data = np.load(ZOO / npz)
    feeds = {
        k: data[k][:8] for k in data.files if k in {"input", "input_ids", "attention_mask", "token_type_ids"}
    }
    shapes = {k: (1, *v.shape[1:]) for k, v in feeds.items()}
    analysis = analyze_model(path, shapes)
    assert lo <= analysis["totals"]["macs"] <= hi and not analysis["totals"]["unmeasured"]
    original = load_model(path)
    normalized, report = normalize(original)
    assert "BatchNormalization" not in {n.op_type for n in normalized.graph.node}
    for a, b in zip(run_ort(normalized, feeds), run_ort(original, feeds), strict=True):
        assert rel_error(a, b) < 1e-5


@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenet_v2"])
def test_real_cnn_every_conv_prunable_and_half_prune_valid(name):
    path = ZOO / f"{name}.onnx"
    if not path.exists():
        pytest.skip(f"{path} not built (python models/build_zoo.py)")
    model, _ = normalize(load_model(path))
    trace = trace_channels(model)
    for node in model.graph.node:
        if node.op_type == "Conv":
            assert trace.group_of(trace.space_of(node.output[0]), 0).prunable, node.name
    plan = {g.id: np.arange(0, g.size, 2) for g in trace.prunable_groups()}
    pruned = prune_channels(model, trace, plan)
    onnx.checker.check_model(pruned, full_check=True)
    feeds = {"input": np.load(ZOO / ZOO_MODELS[name][0])["input"][:2]}
    assert rel_error(run_ort(pruned, feeds)[0], run_ort(mask_channels(model, trace, plan), feeds)[0]) <= 1e-5
    node_macs = {n.name: n.macs or 0 for n in model_cost(model).nodes}
    assert model_cost(pruned).macs == round(trace.predict_macs(node_macs, plan))
