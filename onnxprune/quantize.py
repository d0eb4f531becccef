"""INT8 QDQ output built on ``onnxruntime.quantization`` (never a home-made quantizer).

``quantize_model(model, calib)`` returns a QAT-ready QDQ model and a JSON-able report:

* the model is normalized (opset >= 13 — per-channel QDQ on opset 12 is invalid —, Constant-node
  weights lowered to initializers, BatchNorm folded), then run through onnxruntime's
  ``quant_pre_process`` (shape inference; on failure, e.g. "Incomplete symbolic shape inference" on
  some Paddle exports, onnx shape inference is used instead and the report says so);
* activation ranges are calibrated once with onnxruntime's calibrator (``minmax``, ``percentile`` or
  ``entropy``), batch by batch, and cached; every later ``quantize_static`` call reads that cache;
* weights are symmetric per-channel INT8 (zero point 0, so pruned and 2:4 zeros stay exactly zero) and
  kept in float with a QuantizeLinear -> DequantizeLinear pair each (``AddQDQPairToWeight``);
* the quality levers (bias correction, sensitivity-ordered float fallback to meet ``max_drop``) live in
  :mod:`onnxprune.quantize_tuning`.

onnxruntime's quantizer writes temporary files (``<uuid>.data``, ``sym_shape_infer_temp.onnx``) into
the current directory and logs through the root logger, and its calibrators print to stdout; all of
that is contained here: it runs in a scratch folder that is the cwd only while it runs, its log
records become report warnings, and its prints are swallowed (``--json`` output stays parseable).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    create_calibrator,
    load_tensors_data,
    quant_pre_process,
    quantize_static,
    save_tensors_data,
)
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

from ._version import versions
from .calibration.readers import CalibrationSet, load_calibration
from .errors import InputError, QualityGateError
from .fidelity import HeldOut, compare, headline
from .graph import initializers, producers
from .latency import measure_latency, ort_session
from .modelio import load_model, output_folder, require_runnable, write_outputs
from .ops import WEIGHT_LAYER_OPS
from .passes.normalize import normalize
from .quantize_tuning import BiasCorrector, fallback_search
from .shapes import infer_shapes
from .timing import Timer

# What quantize_static quantizes when op_types_to_quantize is not given; the calibrator must see the same.
QUANTIZABLE_OP_TYPES = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))
CALIB_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "percentile": CalibrationMethod.Percentile,
    "entropy": CalibrationMethod.Entropy,
}
PERCENTILE = 99.99  # `percentile` calibration: the clipping percentile of each activation histogram
CALIB_BATCH = 16  # the calibrator keeps every tapped tensor of a batch in memory: keep batches small


@dataclass(frozen=True)
class Preset:
    """Everything that differs between deployment targets: activation type and quantizer options."""

    name: str
    activation_type: QuantType
    activation_symmetric: bool
    extra_options: dict = field(default_factory=dict)

    def describe(self) -> dict:
        return {
            "activation_type": self.activation_type.name,
            "weight_type": "QInt8",
            "activation_symmetric": self.activation_symmetric,
            "extra_options": self.extra_options,
        }


PRESETS = {
    # ORT CPU: asymmetric uint8 activations x symmetric int8 weights is the U8S8 path the x86 kernels
    # (VNNI included) are built for; Relu/Clip fold into the activation range.
    "ort": Preset(
        "ort",
        QuantType.QUInt8,
        False,
        {
            "ActivationSymmetric": False,
            "WeightSymmetric": True,
            "AddQDQPairToWeight": True,
        },
    ),
    # TensorRT explicit quantization: symmetric int8 everywhere (all zero points 0), one dedicated Q/DQ
    # pair per consumer (TensorRT cannot share a pair between nodes), activations kept as ops, no
    # output Q/DQ on Concat/Reshape (data movement), float bias (TensorRT fuses it itself).
    "tensorrt": Preset(
        "tensorrt",
        QuantType.QInt8,
        True,
        {
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "AddQDQPairToWeight": True,
            "DedicatedQDQPair": True,
            "QDQKeepRemovableActivations": True,
            "QuantizeBias": False,
            "OpTypesToExcludeOutputQuantization": ["Concat", "Reshape"],
        },
    ),
}


class FeedReader(CalibrationDataReader):
    """onnxruntime's calibration reader over feed dicts (e.g. ``CalibrationSet.batches``)."""

    def __init__(self, feeds: Iterable[Mapping[str, np.ndarray]], input_names: set[str]):
        self._feeds = iter(feeds)
        self._names = input_names

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed = next(self._feeds, None)
        return None if feed is None else {k: v for k, v in feed.items() if k in self._names}


@contextlib.contextmanager
def ort_quantizer_sandbox(records: list[str]) -> Iterator[Path]:
    """A scratch folder that is the cwd while onnxruntime's quantizer runs (it drops temp files there).

    Root-logger records of level WARNING and above are collected into ``records`` instead of being
    printed; the previous cwd, log level and handlers are restored on exit, even on errors.
    """
    old_cwd = os.getcwd()
    root = logging.getLogger()
    old_level = root.level

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(" ".join(record.getMessage().split()))

    handler = Collect(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="onnxprune-quant-") as scratch:
        os.chdir(scratch)
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
        try:
            yield Path(scratch)
        finally:
            root.removeHandler(handler)
            root.setLevel(old_level)
            os.chdir(old_cwd)


def prepare_float_model(
    model: onnx.ModelProto, path: Path, warnings: list[str]
) -> tuple[onnx.ModelProto, dict]:
    """Normalize ``model``, give every Conv/Gemm a bias, run ORT's pre-processing; save to ``path``.

    Zero biases change nothing numerically; they give bias correction a place to write. ORT's graph
    optimizer is skipped (normalize already folded BatchNorm and constants) so node names stay the
    ones the report and ``nodes_to_exclude`` use.
    """
    normalized, norm_report = normalize(model)
    add_zero_biases(normalized)
    flatten_gemm_biases(normalized)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quant_pre_process(normalized, str(path), skip_optimization=True)
        prepared = onnx.load(str(path))
        pre = "quant_pre_process"
    except Exception as exc:  # noqa: BLE001 - any failure of ORT's pre-processing has the same fallback
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        warnings.append(f"onnxruntime quant_pre_process failed ({reason}); used onnx shape inference instead")
        prepared = infer_shapes(normalized)
        onnx.save(prepared, str(path))
        pre = "onnx shape inference (quant_pre_process failed)"
    return prepared, {"normalization": norm_report.summary(), "shape_inference": pre}


def upcast_float16(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """A float32 copy of a model that holds float16 tensors, or None if it has none.

    onnxruntime's quantizer builds its QDQ pairs around float32 tensors (float16 scales make an invalid
    graph). Widening float16 to float32 is exact: initializers, tensor attributes (Constant,
    ConstantOfShape), graph inputs / outputs / value_info and Cast-to-float16 become float32, so the INT8
    copy takes and returns float32.
    """
    f16, f32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    changed = 0
    for i, t in enumerate(graph.initializer):
        if t.data_type == f16:
            graph.initializer[i].CopyFrom(
                numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name)
            )
            changed += 1
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == f16:
                attr.t.CopyFrom(
                    numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float32), attr.t.name)
                )
                changed += 1
            elif node.op_type == "Cast" and attr.name == "to" and attr.i == f16:
                attr.i = f32
                changed += 1
    for vi in (*graph.input, *graph.output, *graph.value_info):
        if vi.type.tensor_type.elem_type == f16:
            vi.type.tensor_type.elem_type = f32
            changed += 1
    return out if changed else None


def flatten_gemm_biases(model: onnx.ModelProto) -> int:
    """A Gemm bias stored as [1, N] becomes [N] (same broadcast): onnxruntime's per-channel bias check
    indexes the bias per output channel and fails on a row. Shared biases get their own copy."""
    inits = initializers(model.graph)
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    changed = 0
    for node in model.graph.node:
        if node.op_type != "Gemm" or len(node.input) < 3 or node.input[2] not in inits:
            continue
        bias = inits[node.input[2]]
        if len(bias.dims) != 2 or bias.dims[0] != 1:
            continue
        flat = onnx.numpy_helper.to_array(bias).reshape(-1)
        if uses[bias.name] == 1:
            bias.CopyFrom(onnx.numpy_helper.from_array(flat, bias.name))
        else:
            copy = onnx.numpy_helper.from_array(flat, _unique_name(inits, f"{node.name}.bias"))
            model.graph.initializer.append(copy)
            inits[copy.name] = copy
            node.input[2] = copy.name
        changed += 1
    return changed


def attention_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMul nodes with no constant input (query·keyᵀ, attention·value): the mark of a transformer."""
    consts = {t.name for t in model.graph.initializer} | {
        o for n in model.graph.node if n.op_type == "Constant" for o in n.output
    }
    return [
        n.name for n in model.graph.node if n.op_type == "MatMul" and not any(i in consts for i in n.input)
    ]


def grouped_conv_transposes(model: onnx.ModelProto) -> list[str]:
    """ConvTranspose nodes with group > 1: onnxruntime's per-channel quantizer gives their weight one scale
    per output channel *of a group* (axis 1 of [C, M/g, k...]) and then fails on the M-long bias."""
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "ConvTranspose" and next((a.i for a in n.attribute if a.name == "group"), 1) > 1
    ]


def add_zero_biases(model: onnx.ModelProto) -> int:
    """Give each Conv/ConvTranspose/Gemm that has a float weight initializer but no bias a zero bias."""
    inits = initializers(model.graph)
    added = 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm") or len(node.input) < 2:
            continue
        weight = inits.get(node.input[1])
        if (
            weight is None
            or weight.data_type != onnx.TensorProto.FLOAT
            or (len(node.input) > 2 and node.input[2])
        ):
            continue
        if node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            width = weight.dims[0] if trans_b else weight.dims[1]
        else:  # Conv weight [M, C/g, k...]; ConvTranspose weight [C, M/g, k...]
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            width = weight.dims[0] if node.op_type == "Conv" else weight.dims[1] * group
        bias = onnx.numpy_helper.from_array(
            np.zeros(width, np.float32), _unique_name(inits, f"{node.name}.zero_bias")
        )
        model.graph.initializer.append(bias)
        inits[bias.name] = bias
        del node.input[2:]
        node.input.append(bias.name)
        added += 1
    return added


def _unique_name(taken: Mapping[str, object], base: str) -> str:
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    return name


def calibrate_ranges(
    model_path: Path, calib: CalibrationSet, method: str, preset: Preset, cache: Path
) -> None:
    """Run onnxruntime's calibrator over the calibration slice, one small batch at a time; save the ranges.

    Percentile ranges follow the preset's activation symmetry (ORT defaults them to symmetric, which
    would waste half the uint8 range on post-ReLU tensors) and clip at the ``PERCENTILE``th percentile.
    """
    options = (
        {"symmetric": preset.activation_symmetric, "percentile": PERCENTILE} if method == "percentile" else {}
    )
    with contextlib.redirect_stdout(io.StringIO()):  # histogram calibrators print progress to stdout
        calibrator = create_calibrator(
            model_path,
            QUANTIZABLE_OP_TYPES,
            augmented_model_path=str(cache.with_name("augmented.onnx")),
            calibrate_method=CALIB_METHODS[method],
            extra_options=options,
        )
        names = {i.name for i in calibrator.model.graph.input}
        for batch in calib.batches("calib", CALIB_BATCH):
            calibrator.collect_data(FeedReader([batch], names))
        ranges = calibrator.compute_data()
    save_tensors_data(ranges, cache)


def shared_scale_overrides(model: onnx.ModelProto, cache: Path) -> dict[str, list[dict]]:
    """TensorQuantOverrides giving all activation inputs of each Add and Concat (and a Concat's output) one
    range.

    Tensors are unioned transitively (a residual stream feeding two Adds shares across both); each
    group gets the widest symmetric range of its members, so onnxruntime derives one identical scale
    for all of them — what TensorRT needs to run the Add/Concat in INT8 without requantizing.
    """
    ranges = load_tensors_data(cache)
    parent: dict[str, str] = {}

    def find(t: str) -> str:
        while parent.setdefault(t, t) != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    for node in model.graph.node:
        if node.op_type not in ("Add", "Concat"):
            continue
        members = [t for t in node.input if t in ranges]
        if node.op_type == "Concat" and node.output[0] in ranges:
            members.append(node.output[0])
        for other in members[1:]:
            parent[find(other)] = find(members[0])
    groups: dict[str, list[str]] = {}
    for t in parent:
        groups.setdefault(find(t), []).append(t)
    overrides = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        absmax = max(float(np.max(np.abs(ranges[t].range_value))) for t in members)
        for t in members:
            overrides[t] = [{"rmin": np.float32(-absmax), "rmax": np.float32(absmax)}]
    return overrides


@dataclass
class Int8Builder:
    """Runs ``quantize_static`` on the prepared float model with the cached ranges, any layer set excluded."""

    float_path: Path
    cache: Path
    preset: Preset
    method: str
    per_channel: bool
    overrides: dict[str, list[dict]]
    scratch: Path

    def build(
        self, exclude: Iterable[str] = (), float_model: onnx.ModelProto | None = None
    ) -> onnx.ModelProto:
        """The QDQ model of ``float_model`` (default: the prepared one; same tensor names) minus
        ``exclude``."""
        source = self.float_path
        if float_model is not None:
            source = self.scratch / "float_variant.onnx"
            onnx.save(float_model, str(source))
        out = self.scratch / "int8.onnx"
        options = dict(self.preset.extra_options)
        if self.overrides:
            options["TensorQuantOverrides"] = self.overrides
        quantize_static(
            str(source),
            str(out),
            None,
            quant_format=QuantFormat.QDQ,
            per_channel=self.per_channel,
            activation_type=self.preset.activation_type,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=sorted(exclude),
            calibrate_method=CALIB_METHODS[self.method],
            calibration_cache_path=str(self.cache),
            extra_options=options,
        )
        int8 = onnx.load(str(out))
        keep_outputs_float(int8)
        return int8


def keep_outputs_float(qdq: onnx.ModelProto) -> int:
    """Remove the Q -> DQ pair onnxruntime puts right before graph outputs (in place); return how many.

    Rounding the final logits to 256 levels only costs accuracy — close logits swap places — and
    saves nothing: the consumer of a graph output is float anyway.
    """
    outputs = {o.name for o in qdq.graph.output}
    producer = producers(qdq.graph)
    readers: dict[str, int] = {}
    for n in qdq.graph.node:
        for t in n.input:
            readers[t] = readers.get(t, 0) + 1
    drop = []
    for name in outputs:
        dq = producer.get(name)
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        source = producer.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
        if (
            source is None
            or readers.get(q.input[0], 0) != 1
            or readers.get(q.output[0], 0) != 1
            or q.input[0] in outputs
        ):
            continue
        source.output[list(source.output).index(q.input[0])] = name
        drop += [q, dq]
    if drop:
        kept = [n for n in qdq.graph.node if all(n is not d for d in drop)]
        del qdq.graph.node[:]
        qdq.graph.node.extend(kept)
        used = {t for n in qdq.graph.node for t in n.input}
        unused = [t for t in qdq.graph.initializer if t.name not in used]
        for t in unused:
            qdq.graph.initializer.remove(t)
    return len(drop) // 2


def weight_layers(model: onnx.ModelProto) -> list[str]:
    """Names of the Conv/ConvTranspose/Gemm/MatMul nodes whose weight (input 1) is a float initializer."""
    floats = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    return [
        n.name
        for n in model.graph.node
        if n.op_type in WEIGHT_LAYER_OPS and len(n.input) > 1 and n.input[1] in floats
    ]


def quantized_weight_layers(qdq: onnx.ModelProto) -> list[str]:
    """Weight layers of a QDQ model whose weight arrives through a DequantizeLinear."""
    dq_outputs = {n.output[0] for n in qdq.graph.node if n.op_type == "DequantizeLinear"}
    return [
        n.name
        for n in qdq.graph.node
        if n.op_type in WEIGHT_LAYER_OPS and len(n.input) > 1 and n.input[1] in dq_outputs
    ]


def weight_storage_bytes(qdq: onnx.ModelProto) -> int:
    """Serialized size if every float weight behind a QuantizeLinear were stored as INT8 instead.

    The QAT-ready file keeps float weights; onnxruntime folds those Q nodes at load time, and a
    deployment export would store the int8 values: 3 bytes saved per weight element.
    """
    inits = initializers(qdq.graph)
    quantized = {n.input[0] for n in qdq.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in inits}
    saved = sum(
        3 * int(np.prod(inits[name].dims))
        for name in quantized
        if inits[name].data_type == onnx.TensorProto.FLOAT
    )
    return qdq.ByteSize() - saved


def check_runnable(model: onnx.ModelProto) -> None:
    """Full ONNX check and an onnxruntime session: every emitted model must pass both."""
    onnx.checker.check_model(model, full_check=True)
    ort_session(model)


@dataclass
class QuantizeOptions:
    """How the INT8 copy is built and checked: ``preset`` (``PRESETS``), onnxruntime's calibration method,
    per-channel weights, the ``max_drop`` fallback goal, bias correction, node names always kept in float
    (``exclude``), latency runs of the report (0: none) and the user's fidelity metric (``--metric-fn``)."""

    preset: str = "ort"
    calib_method: str = "minmax"
    per_channel: bool = True
    max_drop: float | None = None
    bias_correction: bool = True
    exclude: tuple[str, ...] = ()
    latency_runs: int = 50
    metric: object = None


@dataclass
class Known:
    """Outputs the caller has already on the holdout slice (``compress`` has, from its own fidelity
    check): the dense model's (and the model itself, to compare the INT8 copy with) and the model's."""

    dense_model: onnx.ModelProto | None = None
    dense_outputs: list[np.ndarray] | None = None
    model_outputs: list[np.ndarray] | None = None


@dataclass
class Prepared:
    """The float model as the quantizer reads it, and which of its nodes stay in float."""

    path: Path
    model: onnx.ModelProto
    report: dict
    layers: list[str]
    forced: list[str]
    settings: Preset


def quantize_model(
    model: onnx.ModelProto,
    calib: CalibrationSet,
    opts: QuantizeOptions | None = None,
    known: Known | None = None,
    progress=None,
) -> tuple[onnx.ModelProto, dict]:
    """INT8 QDQ version of ``model`` and a JSON-able report section.

    ``calib`` calibrates (its ``calib`` slice) and verifies (its ``holdout`` slice). With ``opts.max_drop``
    set, the most sensitive weight layers are kept in float until the held-out headline metric (the user's
    ``--metric-fn``; else top-1 agreement with the FP32 model, or the lowest component-mean R²) drops by at
    most ``max_drop``; the report's ``quality_gate`` says whether that was reached (this function does not
    raise for it). ``progress(stage)`` is called as stages start.
    """
    opts, known = opts or QuantizeOptions(), known or Known()
    _check(opts, calib)
    notify = progress or (lambda stage: None)
    warnings = list(calib.warnings)
    upcast = upcast_float16(model)
    if upcast is not None:
        model, calib = upcast, calib.with_float_dtype(np.float32)
        known = dataclasses.replace(known, model_outputs=None)
        warnings.append(
            "float16 model: its INT8 QDQ copy is built from an exact float32 upcast "
            "(float32 inputs and outputs)"
        )
    log_records: list[str] = []
    timer = Timer(release=False)
    with ort_quantizer_sandbox(log_records) as scratch:
        notify("prepare")
        with timer("prepare"):
            prep = _prepare(model, scratch, opts, warnings)
        notify("calibrate")
        with timer("calibrate"):
            cache = scratch / "ranges.json"
            calibrate_ranges(prep.path, calib, opts.calib_method, prep.settings, cache)
            overrides = shared_scale_overrides(prep.model, cache) if opts.preset == "tensorrt" else {}
        builder = Int8Builder(
            prep.path, cache, prep.settings, opts.calib_method, opts.per_channel, overrides, scratch
        )
        corrector = BiasCorrector(prep.model, builder, calib) if opts.bias_correction else None
        build = corrector.build if corrector else builder.build
        notify("quantize")
        with timer("quantize"):
            int8 = first_int8 = build(prep.forced)
        held = None
        if calib.n_holdout():
            held = HeldOut.of(model, calib, opts.metric, known.model_outputs)
            notify("verify")
            with timer("verify"):
                first_out = held.run(int8)
                fidelity = held.compare(first_out)
            int8, fidelity, search = _fallback(
                held, build, builder, prep, (int8, fidelity), opts, notify, timer
            )
        else:
            fidelity, search = {}, {}
            warnings.append("no held-out samples: INT8 fidelity not measured")
    check_runnable(int8)
    report = _report(model, int8, calib, opts, prep, fidelity, search, corrector)
    if held is not None and (known.dense_model is not None or known.dense_outputs is not None):
        with timer("verify"):
            int8_out = first_out if int8 is first_int8 else held.run(int8)
            report["fidelity"].update(_against_dense(held, known, int8_out))
    if opts.latency_runs:
        notify("latency")
        with timer("latency"):
            variants = {"fp32": model, "int8": int8}
            if search.get("excluded"):
                variants["int8_no_fallback"] = first_int8
            report["latency_ms"] = latency_report(variants, calib, opts.latency_runs)
    report["warnings"] = warnings + _dedupe(log_records)
    report["timings_s"] = timer.times
    report["versions"] = versions()
    return int8, report


def _check(opts: QuantizeOptions, calib: CalibrationSet) -> None:
    if opts.preset not in PRESETS:
        raise InputError(f"unknown quantization preset '{opts.preset}' (choose from {', '.join(PRESETS)})")
    if opts.calib_method not in CALIB_METHODS:
        raise InputError(
            f"unknown calibration method '{opts.calib_method}' (choose from {', '.join(CALIB_METHODS)})"
        )
    if calib.n_calib() == 0:
        raise InputError("quantization needs calibration samples; the calibration set is empty")
    if opts.max_drop is not None and not calib.n_holdout():
        raise InputError("--max-drop needs held-out samples to verify against; give more calibration data")


def _prepare(model: onnx.ModelProto, scratch: Path, opts: QuantizeOptions, warnings: list[str]) -> Prepared:
    """The normalized, shape-inferred float model and the nodes kept in float: ``exclude``, every node but the
    weight layers of an attention graph, grouped ConvTransposes."""
    settings = PRESETS[opts.preset]
    path = scratch / "prepared.onnx"
    prepared, prep_report = prepare_float_model(model, path, warnings)
    layers = weight_layers(prepared)
    node_names = {n.name for n in prepared.graph.node}
    forced = sorted(set(opts.exclude) & node_names)
    attention = attention_matmuls(prepared)
    if attention:  # transformer: INT8 weight layers with INT8 inputs, everything else float
        weights = set(layers)
        forced = sorted(set(forced) | {n.name for n in prepared.graph.node if n.name not in weights})
        kept_out = settings.extra_options.get("OpTypesToExcludeOutputQuantization", [])
        settings = dataclasses.replace(
            settings,
            extra_options={
                **settings.extra_options,
                "OpTypesToExcludeOutputQuantization": sorted(set(kept_out) | set(WEIGHT_LAYER_OPS)),
            },
        )
        warnings.append(
            f"attention graph ({len(attention)} MatMuls of two activations): only the inputs "
            f"and weights of its {len(weights)} weight layers are quantized; quantizing every "
            "activation (attention scores, Softmax, LayerNorm, residual Adds, layer outputs) "
            "wrecks transformers (all-MiniLM-L6-v2: embedding cosine 0.41, this way 0.99)"
        )
    grouped = grouped_conv_transposes(prepared) if opts.per_channel else []
    if grouped:
        warnings.append(
            f"{len(grouped)} grouped ConvTranspose node(s) kept in float (onnxruntime's "
            f"per-channel quantizer cannot size their scales): {', '.join(grouped[:3])}"
        )
        forced = sorted(set(forced) | set(grouped))
    unknown = sorted(set(opts.exclude) - node_names)
    if unknown:
        warnings.append(f"excluded node(s) not in the normalized model: {', '.join(unknown[:5])}")
    return Prepared(path, prepared, prep_report, layers, forced, settings)


def _fallback(
    held: HeldOut,
    build,
    builder,
    prep: Prepared,
    first: tuple[onnx.ModelProto, dict],
    opts: QuantizeOptions,
    notify,
    timer: Timer,
) -> tuple[onnx.ModelProto, dict, dict]:
    """(model, its held-out fidelity to the float model, the fallback's account): the ``first`` INT8 model and
    its fidelity, or the fallback's model with layers kept in float where ``max_drop`` asks for it and it
    scores better."""
    int8, fidelity = first
    if opts.max_drop is None or 1.0 - headline(fidelity)[1] <= opts.max_drop:
        return int8, fidelity, {}
    notify("fallback")
    with timer("fallback"):
        found, found_fid, search = fallback_search(
            build, builder.build, prep.forced, prep.layers, held, opts.max_drop
        )
    if found is not None and headline(found_fid)[1] >= headline(fidelity)[1]:
        return found, found_fid, search
    search["excluded"], search["count"] = [], 0
    return int8, fidelity, search


def _against_dense(held: HeldOut, known: Known, int8_out: list[np.ndarray]) -> dict:
    """The INT8 and float copies' held-out outputs against the dense model they were pruned from."""
    dense_out = known.dense_outputs if known.dense_outputs is not None else held.run(known.dense_model)
    args = (held.names, held.classifier, held.metric)
    return {
        "int8_vs_dense": compare(dense_out, int8_out, *args),
        "fp32_vs_dense": compare(dense_out, held.outputs, *args),
    }


def latency_report(models: Mapping[str, onnx.ModelProto], calib: CalibrationSet, runs: int) -> dict:
    """ORT CPU median latency of each model on the same batch-1 feed (the model's batch if fixed), one
    process."""
    feed = next(calib.batches("calib", 1))
    out = {}
    for name, m in models.items():
        lat = measure_latency(m, feed, runs=runs, warmup=max(3, runs // 5), budget_s=10.0)
        out[name] = {"median": round(lat.median_ms, 4), "p90": round(lat.p90_ms, 4), "runs": lat.runs}
    out["batch"] = len(next(iter(feed.values())))
    out["fp32_over_int8"] = round(out["fp32"]["median"] / out["int8"]["median"], 3)
    if "int8_no_fallback" in out:
        out["fallback_cost"] = round(out["int8"]["median"] / out["int8_no_fallback"]["median"], 3)
    return out


def _dedupe(lines: list[str], limit: int = 20) -> list[str]:
    seen = list(dict.fromkeys(f"onnxruntime: {line}" for line in lines))
    return seen[:limit] + (
        [f"... {len(seen) - limit} more onnxruntime warnings"] if len(seen) > limit else []
    )


def _report(model, int8, calib, opts: QuantizeOptions, prep: Prepared, fidelity, search, corrector) -> dict:
    """The JSON-able report section (fidelity, sizes, layers, gate); latency/timings are added by the
    caller."""
    fp32_bytes, int8_bytes, stored = model.ByteSize(), int8.ByteSize(), weight_storage_bytes(int8)
    quantized = quantized_weight_layers(int8)
    report = {
        "preset": prep.settings.name,
        "calib_method": opts.calib_method,
        "per_channel": opts.per_channel,
        "settings": prep.settings.describe(),
        "calibration": {"source": calib.source, "samples": calib.n_calib(), "holdout": calib.n_holdout()},
        "size_bytes": {
            "fp32": fp32_bytes,
            "int8_qdq": int8_bytes,
            "int8_weights_stored": stored,
            "fp32_over_int8_weights_stored": round(fp32_bytes / max(stored, 1), 3),
        },
        "layers": {
            "weight_layers": len(prep.layers),
            "quantized": len(quantized),
            "float": sorted(set(prep.layers) - set(quantized)),
        },
        "bias_correction": corrector.summary() if corrector else None,
        "fidelity": {"int8_vs_fp32": fidelity},
        "preprocessing": prep.report,
    }
    if search:
        report["fallback"] = search
    if opts.max_drop is not None and fidelity:
        key, value = headline(fidelity)
        report["quality_gate"] = {
            "metric": key,
            "value": value,
            "max_drop": opts.max_drop,
            "passed": 1.0 - value <= opts.max_drop,
        }
    return report


def quantize_file(
    model_path: str | os.PathLike,
    outdir: str | os.PathLike,
    calib_spec: str,
    calib_samples: int = 256,
    preprocess: str | None = None,
    input_size: int | None = None,
    opts: QuantizeOptions | None = None,
    progress=None,
) -> dict:
    """``onnxprune quantize``: load, calibrate, quantize, write ``<stem>.int8.onnx`` +
    ``<stem>.int8.report.json``.

    ``opts`` go to :func:`quantize_model`. Both outputs are written (atomically, never over the
    input) before a failed ``max_drop`` gate raises QualityGateError (exit 4).
    """
    opts = opts or QuantizeOptions()
    max_drop = opts.max_drop
    if max_drop is not None and not 0.0 <= max_drop <= 1.0:
        raise InputError(f"--max-drop must be between 0 and 1, got {max_drop}")
    path = Path(model_path)
    with output_folder(outdir, protect=(path,)) as out:
        model = load_model(path)
        require_runnable(model, path)
        calib = load_calibration(
            calib_spec, model, samples=calib_samples, preprocess=preprocess, input_size=input_size
        )
        int8, section = quantize_model(model, calib, opts, progress=progress)
        stem = path.name[:-5] if path.name.endswith(".onnx") else path.name
        report = {"model": str(path), "output": str(out / f"{stem}.int8.onnx"), **section}
        write_outputs(
            [
                (out / f"{stem}.int8.onnx", int8),
                (out / f"{stem}.int8.report.json", json.dumps(report, indent=2)),
            ],
            protect=(path,),
        )
    gate = report.get("quality_gate")
    if gate and not gate["passed"]:
        kept = report.get("fallback", {}).get("count", 0)
        raise QualityGateError(
            f"quality gate failed: {gate['metric']} {gate['value']:.4f} dropped by "
            f"{1 - gate['value']:.4f} > --max-drop {gate['max_drop']} even with {kept} "
            "layer(s) kept in float"
        )
    return report
