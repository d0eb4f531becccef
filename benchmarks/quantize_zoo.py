"""INT8 QDQ quality and speed on the zoo: plain onnxruntime `quantize_static` beside `onnxprune quantize`.

    python -m benchmarks.quantize_zoo [--models fmnist effnet mnv2] [--configs minmax percentile entropy ...]

Plain PTQ = `quantize_static(per_channel=True, MinMax, QDQ)` with onnxruntime's defaults otherwise, on the
normalized model (opset >= 13: per-channel QDQ needs it), calibrated on the same first 256 calibration
samples. Ours = `onnxprune.quantize.quantize_model` (preset `ort`, bias correction) per calibration
method, plus a `--max-drop` fallback row. Quality on the evaluation sets (never seen by calibration, bias
correction or the fallback search): Fashion-MNIST true accuracy on the 10k test images; ImageNet models
top-1 agreement / top-5 overlap / KL against FP32 on the 456 held-out photo crops. Latency: ORT CPU,
batch 1, median of 50 runs, FP32 and every INT8 model measured in this one process.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnx
from onnxprune.calibration.readers import CalibrationSet, load_calibration
from onnxprune.passes.normalize import normalize
from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

from benchmarks.common import MODELS, machine, run_batched
from onnxprune.fidelity import compare
from onnxprune.latency import measure_latency
from onnxprune.quantize import FeedReader, QuantizeOptions, ort_quantizer_sandbox, quantize_model

# name -> quantize_model options; "fallback" rows use each model's best method from FALLBACK_METHOD
CONFIGS = {
    "minmax": {"calib_method": "minmax"},
    "percentile": {"calib_method": "percentile"},
    "entropy": {"calib_method": "entropy"},
    "fallback": {"max_drop": 0.05},
}
FALLBACK_METHOD = {"fmnist": "minmax", "effnet": "percentile", "mnv2": "percentile"}


def plain_ptq(model: onnx.ModelProto, calib: CalibrationSet) -> onnx.ModelProto:
    """The peer: onnxruntime's quantize_static, per-channel MinMax QDQ, nothing else of ours but normalize."""
    normalized, _ = normalize(model)
    with ort_quantizer_sandbox([]) as scratch:
        names = {i.name for i in normalized.graph.input}
        quantize_static(
            normalized,
            str(scratch / "plain.onnx"),
            FeedReader(calib.batches("calib", 32), names),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
        )
        return onnx.load(str(scratch / "plain.onnx"))


def quality(key: str, logits: np.ndarray, reference: np.ndarray, labels: np.ndarray | None) -> str:
    m = compare([reference], [logits], ["logits"])["logits"]
    text = (
        f"{100 * m['top1_agreement']:.1f}% | {100 * m['top5_overlap']:.1f}% | {m['kl_dense_to_pruned']:.4f}"
    )
    if labels is not None:
        text += f" | {100 * np.mean(logits.argmax(1) == labels):.2f}%"
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--calib-samples", type=int, default=256)
    args = ap.parse_args()
    print(f"Machine: {machine()}\n")
    print(
        "| model | method | float layers | top-1 agr. | top-5 overlap | KL | accuracy | FP32 ms | INT8 ms | "
        "speed-up | time |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    for key in args.models:
        path, calib_path, eval_path = MODELS[key]
        if not path.exists():
            print(f"| {key} | not built (python models/build_zoo.py) |")
            continue
        model = onnx.load(str(path))
        calib = load_calibration(str(calib_path), model, samples=args.calib_samples)
        data = np.load(eval_path)
        feeds = {"input": data["input"]}
        labels = data["labels"] if "labels" in data.files else None
        reference = run_batched(model, feeds, 32)[0]
        one = {"input": data["input"][:1]}
        fp32_ms = measure_latency(model, one).median_ms
        if labels is not None:
            print(
                f"| {key} | FP32 | all | | | | {100 * np.mean(reference.argmax(1) == labels):.2f}% | "
                f"{fp32_ms:.3f} | | | |"
            )
        t0 = time.perf_counter()
        plain = plain_ptq(model, calib)
        rows = [("plain quantize_static (MinMax)", plain, "0", time.perf_counter() - t0)]
        for name in args.configs:
            options = dict(CONFIGS[name])
            options.setdefault("calib_method", FALLBACK_METHOD[key])
            t0 = time.perf_counter()
            int8, report = quantize_model(model, calib, QuantizeOptions(latency_runs=0, **options))
            label = f"ours: {options['calib_method']} + bias corr."
            if "max_drop" in options:
                gate = report["quality_gate"]
                label += f" + fallback (max-drop {options['max_drop']}, held-out {100 * gate['value']:.1f}%)"
            rows.append((label, int8, str(len(report["layers"]["float"])), time.perf_counter() - t0))
        for label, int8, n_float, wall in rows:
            logits = run_batched(int8, feeds, 32)[0]
            int8_ms = measure_latency(int8, one).median_ms
            print(
                f"| {key} | {label} | {n_float} | {quality(key, logits, reference, labels)}"
                f"{'' if labels is not None else ' | '} | {fp32_ms:.3f} | {int8_ms:.3f} | "
                f"{fp32_ms / int8_ms:.2f}x | "
                f"{wall:.0f} s |",
                flush=True,
            )


if __name__ == "__main__":
    main()
