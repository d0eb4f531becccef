"""Quality levers on top of onnxruntime's quantizer: bias correction and sensitivity-ordered float fallback.

Bias correction (empirical, as in Nagel et al., "Data-Free Quantization", §4.2, measured instead of
derived): quantization shifts the mean of every layer's output — E[Q(W)·x̃] ≠ E[W·x] — and the shift
accumulates through the network. After quantizing, each Conv/Gemm's per-channel output mean is
measured on calibration data in the FP32 model and in the QDQ model; the float bias is moved by the
difference and the model is quantized again (onnxruntime re-derives the int32 bias), a few rounds,
since fixing early layers changes what later layers see. Only float biases are edited; every
quantization step stays onnxruntime's.

Fallback: each weight layer is excluded from quantization alone (a real ``quantize_static`` run each)
and the damage to the outputs on held-out samples is measured; layers are then kept in float in that
order, as few as the ``max_drop`` gate allows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import onnx

from .calibration.collect import stream
from .calibration.readers import CalibrationSet
from .fidelity import HeldOut, headline, run_all
from .graph import initializers, producers
from .sensitivity import metric_measure, output_damage

CORRECTED_OPS = ("Conv", "ConvTranspose", "Gemm")


def channel_means(
    model: onnx.ModelProto, taps: dict[str, str], batches: Iterable[dict]
) -> dict[str, np.ndarray]:
    """Per-channel (axis 1) mean of tapped tensors over all batches; ``taps`` maps a key to a tensor name."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = dict.fromkeys(taps, 0)

    def sink(outs: dict[str, np.ndarray]) -> None:
        for key, tensor in taps.items():
            a = outs[tensor]
            axes = tuple(i for i in range(a.ndim) if i != 1)
            sums[key] = sums.get(key, 0.0) + a.sum(axis=axes, dtype=np.float64)
            counts[key] += a.size // a.shape[1]

    stream(model, batches, sorted(set(taps.values())), sink)
    return {k: sums[k] / max(counts[k], 1) for k in taps}


def bias_slots(model: onnx.ModelProto) -> dict[str, str]:
    """Conv/ConvTranspose/Gemm node -> its float bias initializer, for biases no other node reads."""
    inits = initializers(model.graph)
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for t in node.input:
            readers[t] = readers.get(t, 0) + 1
    return {
        n.name: n.input[2]
        for n in model.graph.node
        if n.op_type in CORRECTED_OPS
        and len(n.input) > 2
        and n.input[2] in inits
        and inits[n.input[2]].data_type == onnx.TensorProto.FLOAT
        and readers[n.input[2]] == 1
    }


def float_weight_probes(
    qdq: onnx.ModelProto, nodes: Iterable[str]
) -> tuple[onnx.ModelProto, dict[str, tuple[str, str]]]:
    """``qdq`` plus, for each listed layer whose weight is Q/DQ'd, a clone reading the float weight.

    The clone sees the very same (quantized) input and bias, so the difference of the two outputs is
    the error the weight quantization alone adds to that layer. Returns the probe model and
    node -> (quantized output, float-weight output).
    """
    producer = producers(qdq.graph)
    wanted = set(nodes)
    probe = onnx.ModelProto()
    probe.CopyFrom(qdq)
    pairs = {}
    for node in qdq.graph.node:
        if node.name not in wanted or len(node.input) < 2:
            continue
        dq = producer.get(node.input[1])
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear":
            continue
        clone = onnx.NodeProto()
        clone.CopyFrom(node)
        clone.name = f"{node.name}/float_weight_probe"
        clone.input[1] = q.input[0]
        del clone.output[:]
        clone.output.append(clone.name)
        probe.graph.node.append(clone)
        pairs[node.name] = (node.output[0], clone.name)
    return probe, pairs


class BiasCorrector:
    """Builds QDQ models whose weight layers are bias-corrected (see the module doc).

    ``builder.build(exclude, float_model=...)`` must quantize a float model that has the prepared
    model's tensor names; the correction is measured on the first ``samples`` calibration samples.
    """

    def __init__(self, prepared: onnx.ModelProto, builder, calib: CalibrationSet, samples: int = 128):
        self.prepared = prepared
        self.builder = builder
        self.slots = bias_slots(prepared)
        batch = 8  # every quantized layer's float and INT8 outputs of a batch are held at once (1.6 GB at 32)
        self.batches = calib.first("calib", samples, batch)
        self.last: dict = {}

    def build(self, exclude: Sequence[str] = ()) -> onnx.ModelProto:
        """Quantize with ``exclude`` kept in float, measure each quantized layer's mean output error,
        requantize."""
        int8 = self.builder.build(exclude)
        probe, pairs = float_weight_probes(int8, self.slots)
        if not pairs:
            return int8
        taps = {f"{node}\0q": q for node, (q, _) in pairs.items()} | {
            f"{node}\0f": f for node, (_, f) in pairs.items()
        }
        means = channel_means(probe, taps, self.batches)
        shift = {node: means[f"{node}\0f"] - means[f"{node}\0q"] for node in pairs}
        inits = initializers(self.prepared.graph)
        model = onnx.ModelProto()
        model.CopyFrom(self.prepared)
        index = {t.name: i for i, t in enumerate(model.graph.initializer)}
        for node, d in shift.items():
            name = self.slots[node]
            bias = onnx.numpy_helper.to_array(inits[name]).astype(np.float64) + d
            model.graph.initializer[index[name]].CopyFrom(
                onnx.numpy_helper.from_array(bias.astype(np.float32), name)
            )
        level = np.mean([np.mean(np.abs(means[f"{node}\0f"])) for node in pairs])
        self.last = {
            "layers": len(shift),
            "relative_shift": round(
                float(np.mean([np.mean(np.abs(d)) for d in shift.values()]) / max(level, 1e-12)), 6
            ),
        }
        return self.builder.build(exclude, float_model=model)

    def summary(self) -> dict:
        return {
            "candidates": len(self.slots),
            "corrected": self.last.get("layers", 0),
            "samples": sum(len(next(iter(b.values()))) for b in self.batches),
            "mean_relative_shift": self.last.get("relative_shift", 0.0),
        }


def layer_sensitivity(
    build: Callable[[Sequence[str]], onnx.ModelProto],
    layers: Sequence[str],
    forced: Sequence[str],
    feeds: list[dict],
    reference: list[np.ndarray],
    classifier: Sequence[bool] | None = None,
    measure=None,
) -> list[tuple[str, float]]:
    """(layer, output damage with that layer alone kept in float), most damaging-when-quantized first.

    Damage is ``sensitivity.output_damage`` against the FP32 outputs (KL for classifiers, 1 − R² per output
    component otherwise; ``measure``, where given, in their place: ``sensitivity.metric_measure``), so a low
    value means keeping that layer in float helps most.
    """
    rows = []
    for layer in layers:
        if layer in forced:
            continue
        model = build([*forced, layer])
        out = run_all(model, feeds)
        damage = measure(reference, out) if measure else output_damage(reference, out, classifier)
        rows.append((layer, damage))
    return sorted(rows, key=lambda r: r[1])


def _fallback_counts(n: int) -> list[int]:
    """How many layers to keep in float, tried in order: 1, 2, 3, 4, 6, 8, 11, ... (x~1.4) up to n."""
    counts, k = [], 1
    while k < n:
        counts.append(k)
        k = max(k + 1, int(round(k * 1.4)))
    return [*counts, n] if n else []


def fallback_search(
    build: Callable[[Sequence[str]], onnx.ModelProto],
    rank_build: Callable[[Sequence[str]], onnx.ModelProto],
    forced: Sequence[str],
    layers: Sequence[str],
    held: HeldOut,
    max_drop: float,
    sensitivity_samples: int = 64,
) -> tuple[onnx.ModelProto | None, dict, dict]:
    """Keep the most sensitive layers in float until the headline drop against ``held`` is <= ``max_drop``.

    ``build(exclude)`` makes the final candidates (bias-corrected); ``rank_build`` the cheaper models
    the ranking measures (``layer_sensitivity`` on the first ``sensitivity_samples`` held-out samples).
    Counts grow geometrically, then a bisection finds the smallest passing count. Returns the passing
    model with the fewest float layers (else the best-scoring one; None if there was nothing to try),
    its held-out fidelity, and a JSON-able account of the search.
    """
    calib, fp32_out, names, classifier = held.calib, held.outputs, held.names, held.classifier
    n_hold = calib.n_holdout()
    feeds = calib.first("holdout", min(sensitivity_samples, n_hold))
    n_feed = sum(len(next(iter(f.values()))) for f in feeds)
    measure = metric_measure(held.metric, names, classifier or [True] * len(names))
    ranking = layer_sensitivity(
        rank_build, layers, forced, feeds, [o[:n_feed] for o in fp32_out], classifier, measure
    )
    order = [layer for layer, _ in ranking]
    tried: dict[int, tuple[float, onnx.ModelProto, dict]] = {}

    def passes(k: int) -> bool:
        model = build([*forced, *order[:k]])
        fid = held.fidelity(model)
        tried[k] = (headline(fid)[1], model, fid)
        return 1.0 - tried[k][0] <= max_drop

    passed_at, failed_below = None, 0
    for k in _fallback_counts(len(order)):
        if passes(k):
            passed_at = k
            break
        failed_below = k
    if passed_at is not None:  # bisect between the last failing and the first passing count
        lo, hi = failed_below, passed_at
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if passes(mid) else (mid, hi)
        passed_at = hi
    account = {
        "passed": passed_at is not None,
        "sensitivity_samples": n_feed,
        "sensitivity": [{"node": layer, "damage_if_only_this_float": round(d, 6)} for layer, d in ranking],
        "tried": {str(k): round(v[0], 5) for k, v in sorted(tried.items())},
    }
    if not tried:
        return None, {}, {**account, "excluded": [], "count": 0}
    best = passed_at if passed_at is not None else max(tried, key=lambda k: tried[k][0])
    return tried[best][1], tried[best][2], {**account, "excluded": order[:best], "count": best}
