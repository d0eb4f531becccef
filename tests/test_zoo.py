"""The real zoo (built by models/build_zoo.py into models/cache/) analyzes and normalizes faithfully.

Skipped where the zoo has not been built (CI builds only the shipped model); BENCHMARKS.md records the
numbers measured on the full zoo.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnxprune.passes.normalize import normalize

from benchmarks.common import ZOO
from onnxprune.analyze import analyze_model
from onnxprune.modelio import load_model
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
    feeds = {k: data[k][:8] for k in data.files if k in {"input", "input_ids", "attention_mask", "token_type_ids"}}
    shapes = {k: (1, *v.shape[1:]) for k, v in feeds.items()}
    analysis = analyze_model(path, shapes)
    assert lo <= analysis["totals"]["macs"] <= hi and not analysis["totals"]["unmeasured"]
    original = load_model(path)
    normalized, report = normalize(original)
    assert "BatchNormalization" not in {n.op_type for n in normalized.graph.node}
    for a, b in zip(run_ort(normalized, feeds), run_ort(original, feeds), strict=True):
        assert rel_error(a, b) < 1e-5
