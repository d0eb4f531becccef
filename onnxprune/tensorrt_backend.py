"""TensorRT backend of `onnxprune bench --backend tensorrt` (TensorRT 10 Python API).

Per model and batch an engine is built from the ONNX graph (``trt.OnnxParser`` into an explicit-batch
network, ``builder.build_serialized_network``) with one optimization profile pinned to the measured
shapes. Precision follows the graph: a graph with QuantizeLinear nodes is INT8 QDQ and gets
``BuilderFlag.INT8`` (explicit quantization: TensorRT uses the graph's Q/DQ scales, no calibrator)
plus ``FP16`` for the layers left in float; any other graph gets ``FP16``. ``SPARSE_WEIGHTS`` is added
on request or when some weights already hold the 2:4 pattern. Engines are built with
``ProfilingVerbosity.DETAILED`` so the engine inspector's JSON names each layer's tactic: sparse
tactics carry "sparse" in their name (e.g. ``sm80_xmma_fprop_sparse_conv_...``). TensorRT's build log
also says which layers it found eligible for sparse math and where it picked a sparse kernel.

Timing: inputs are copied to the GPU once; each run is ``execute_async_v3`` on a CUDA stream between
two CUDA events (GPU time, like trtexec's "GPU Compute Time"). The CUDA runtime comes from
``cuda-python`` or, failing that, ``torch.cuda``; no pycuda or cupy.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from .bench import (
    BenchModel,
    LatencyStats,
    ModelSkipped,
    Prepare,
    Prepared,
    interleave,
    latency_stats,
    shapes_at_batch,
)
from .graph import initializers
from .modelio import load_model
from .shapes import Shape
from .sparsity import check_pattern, stored_weights

NOT_INSTALLED = "tensorrt is not installed (pip install 'onnxprune[tensorrt]')"
NO_CUDA_BINDINGS = (
    "the TensorRT backend needs cuda-python or torch to drive the GPU (pip install cuda-python)"
)
NO_GPU = "no CUDA GPU visible"
PRECISIONS = ("fp32", "fp16", "int8")


class EngineBuildError(ModelSkipped):
    """TensorRT could not parse or build this model (shown as a skipped row by ``bench``)."""


# ---- availability ---------------------------------------------------------------------------------


def _import_tensorrt():
    import tensorrt

    return tensorrt


def tensorrt_available() -> str | None:
    """None when engines can be built and timed here, else the one-line reason why not."""
    try:
        _import_tensorrt()
    except ModuleNotFoundError:
        return NOT_INSTALLED
    except Exception as exc:  # installed but broken, e.g. libnvinfer missing: say so, in one line
        return f"tensorrt does not import: {' '.join(str(exc).split()) or type(exc).__name__}"
    cuda = cuda_api()
    if cuda is None:
        return NO_CUDA_BINDINGS
    if cuda.device_count() < 1:
        return NO_GPU
    return None


def tensorrt_version() -> str:
    return str(_import_tensorrt().__version__)


# ---- CUDA runtime, from cuda-python or torch ---------------------------------------------------------


class CudaPython:
    """The calls the backend needs, on cuda-python's runtime bindings (every call returns (err, ...))."""

    def __init__(self, cudart):
        self.rt = cudart

    def _check(self, result):
        err, *values = result
        if err != self.rt.cudaError_t.cudaSuccess:
            raise RuntimeError(f"CUDA runtime error: {err}")
        return values[0] if len(values) == 1 else values

    def device_count(self) -> int:
        err, count = self.rt.cudaGetDeviceCount()
        return int(count) if err == self.rt.cudaError_t.cudaSuccess else 0

    def free_bytes(self) -> int:
        free, _total = self._check(self.rt.cudaMemGetInfo())
        return int(free)

    def malloc(self, nbytes: int) -> int:
        return int(self._check(self.rt.cudaMalloc(max(int(nbytes), 1))))

    def upload(self, ptr: int, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        self._check(
            self.rt.cudaMemcpy(ptr, array, array.nbytes, self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice)
        )

    def free(self, ptr: int) -> None:
        self._check(self.rt.cudaFree(ptr))

    def new_stream(self):
        stream = self._check(self.rt.cudaStreamCreate())
        return stream, stream  # TensorRT's execute_async_v3 takes the cudaStream_t as its handle

    def destroy_stream(self, stream) -> None:
        self._check(self.rt.cudaStreamDestroy(stream))

    def time_ms(self, launch: Callable[[], None], stream) -> float:
        start, end = self._check(self.rt.cudaEventCreate()), self._check(self.rt.cudaEventCreate())
        try:
            self._check(self.rt.cudaEventRecord(start, stream))
            launch()
            self._check(self.rt.cudaEventRecord(end, stream))
            self._check(self.rt.cudaEventSynchronize(end))
            return float(self._check(self.rt.cudaEventElapsedTime(start, end)))
        finally:
            self.rt.cudaEventDestroy(start)
            self.rt.cudaEventDestroy(end)


class TorchCuda:
    """The same calls on torch.cuda: buffers are uint8 tensors kept alive by their address."""

    def __init__(self, torch):
        self.torch = torch
        self._buffers: dict[int, object] = {}

    def device_count(self) -> int:
        return int(self.torch.cuda.device_count()) if self.torch.cuda.is_available() else 0

    def free_bytes(self) -> int:
        return int(self.torch.cuda.mem_get_info()[0])

    def malloc(self, nbytes: int) -> int:
        buf = self.torch.empty(max(int(nbytes), 1), dtype=self.torch.uint8, device="cuda")
        self._buffers[buf.data_ptr()] = buf
        return buf.data_ptr()

    def upload(self, ptr: int, array: np.ndarray) -> None:
        raw = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        self._buffers[ptr][: raw.size].copy_(self.torch.from_numpy(raw))

    def free(self, ptr: int) -> None:
        self._buffers.pop(ptr, None)

    def new_stream(self):
        stream = self.torch.cuda.Stream()
        return stream, stream.cuda_stream

    def destroy_stream(self, stream) -> None:
        pass  # torch owns its streams

    def time_ms(self, launch: Callable[[], None], stream) -> float:
        start, end = self.torch.cuda.Event(enable_timing=True), self.torch.cuda.Event(enable_timing=True)
        start.record(stream)
        launch()
        end.record(stream)
        end.synchronize()
        return float(start.elapsed_time(end))


def cuda_api() -> CudaPython | TorchCuda | None:
    """cuda-python's runtime bindings (new or old module path), else torch.cuda, else None."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            cudart = None
    if cudart is not None:
        return CudaPython(cudart)
    try:
        import torch
    except ImportError:
        return None
    return TorchCuda(torch)


# ---- what to build --------------------------------------------------------------------------------


def precision_for(model: onnx.ModelProto) -> str:
    """ "int8" for QDQ graphs (they hold QuantizeLinear nodes), else "fp16"."""
    return "int8" if any(n.op_type == "QuantizeLinear" for n in model.graph.node) else "fp16"


def precision_flags(precision: str, sparse: bool) -> list[str]:
    """Names of the ``trt.BuilderFlag`` members to set; INT8 keeps FP16 for the layers left in float."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (one of {', '.join(PRECISIONS)})")
    flags = {"fp32": [], "fp16": ["FP16"], "int8": ["INT8", "FP16"]}[precision]
    return flags + (["SPARSE_WEIGHTS"] if sparse else [])


def nodes_with_nm_weights(model: onnx.ModelProto, n: int = 2, m: int = 4) -> list[str]:
    """Conv/Gemm/MatMul nodes whose constant weight (``stored_weights``, also behind Q/DQ) holds ≥ n zeros in
    every m along the reduction dimension: the layers that may use sparse math (TensorRT's node names)."""
    return [sw.node for sw in stored_weights(model) if check_pattern(sw.array, sw.axis, n, m)["compliant"]]


# ---- building ---------------------------------------------------------------------------------------


@dataclass
class EngineBuild:
    engine: bytes  # the serialized engine (plan)
    build_s: float
    layer_info: dict  # engine inspector JSON: {"Layers": [...], "Bindings": [...]}
    precision: str
    sparse: bool
    flags: list[str]
    batch: int
    input_shapes: dict[str, Shape]
    log: list[str] = field(default_factory=list)  # TensorRT's info/warning/error lines during the build


@functools.cache
def _logger():
    """One capturing logger for the whole process: TensorRT keeps the first logger it is given as its
    global one, so a second logger would miss messages. Builds read their own lines by list offset."""
    trt = _import_tensorrt()

    class CapturingLogger(trt.ILogger):
        """Keeps TensorRT's messages up to INFO: the (Sparsity) report is an INFO line."""

        def __init__(self):
            trt.ILogger.__init__(self)
            self.messages: list[tuple[int, str]] = []

        def log(self, severity, msg):
            if int(severity) <= int(trt.Logger.INFO):
                self.messages.append((int(severity), str(msg)))

    return CapturingLogger()


def _asymmetric_qdq_hint(model: onnx.ModelProto) -> str:
    """A hint when Q/DQ zero points are uint8 or nonzero (the ort preset): TensorRT takes symmetric int8
    only."""
    inits = initializers(model.graph)
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[2] in inits:
            zp = numpy_helper.to_array(inits[node.input[2]])
            if zp.dtype != np.int8 or np.any(zp != 0):
                return (
                    " (its Q/DQ zero points are not symmetric int8, which TensorRT requires: quantize with "
                    "--preset tensorrt / --quant-preset tensorrt)"
                )
    return ""


def build_engine(
    model: str | onnx.ModelProto,
    *,
    precision: str = "fp16",
    sparse: bool = False,
    batch: int = 1,
    input_shapes: Mapping[str, Shape] | None = None,
) -> EngineBuild:
    """Parse ``model`` (a path or a ModelProto) with TensorRT's ONNX parser and build a serialized engine.

    ``precision`` sets the builder flags (:func:`precision_flags`); dynamic dims are pinned to the
    shapes at ``batch`` (``input_shapes`` for non-batch dims) by one optimization profile with
    min = opt = max. Raises EngineBuildError (a ModelSkipped) when TensorRT rejects the graph.
    """
    trt = _import_tensorrt()
    proto = model if isinstance(model, onnx.ModelProto) else load_model(model)
    shapes = shapes_at_batch(proto, batch, input_shapes)
    flags = precision_flags(precision, sparse)
    logger = _logger()
    first_message = len(logger.messages)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode (flag 0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(proto.SerializeToString()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT's ONNX parser rejected it: {errors}{_asymmetric_qdq_hint(proto)}")
    config = builder.create_builder_config()
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    for flag in flags:
        if not hasattr(trt.BuilderFlag, flag):
            raise EngineBuildError(
                f"TensorRT {trt.__version__} has no BuilderFlag.{flag} (strongly typed networks only)"
            )
        config.set_flag(getattr(trt.BuilderFlag, flag))
    profile = builder.create_optimization_profile()
    dynamic = False
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if any(d < 0 for d in tensor.shape):
            shape = tuple(shapes[tensor.name])
            profile.set_shape(tensor.name, shape, shape, shape)
            dynamic = True
    if dynamic:
        config.add_optimization_profile(profile)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    build_s = time.perf_counter() - start
    if serialized is None:
        errors = [msg for sev, msg in logger.messages[first_message:] if sev <= int(trt.Logger.ERROR)]
        raise EngineBuildError(
            "TensorRT could not build an engine: "
            + ("; ".join(errors[-2:]) or "see its log")
            + _asymmetric_qdq_hint(proto)
        )
    engine_bytes = bytes(serialized)
    runtime = trt.Runtime(logger)  # a runtime must outlive the engines it deserialized: keep it named
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    inspector = engine.create_engine_inspector()
    info = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    del inspector, engine, runtime  # in that order
    return EngineBuild(
        engine_bytes,
        build_s,
        json.loads(info, strict=False),
        precision,
        sparse,
        flags,
        batch,
        shapes,
        [msg for _, msg in logger.messages[first_message:]],
    )


# ---- which layers went sparse ------------------------------------------------------------------------

_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]|]+?)\s*(?:\|[^\]]*)?\]")
_LOG_ELIGIBLE = "Layers eligible for sparse math:"
_LOG_PICKED = "picked sparse implementation for layers:"


def _log_names(log: Iterable[str], marker: str) -> list[str] | None:
    for line in log:
        if marker in line:
            return [n.strip() for n in line.split(marker, 1)[1].split(",") if n.strip()]
    return None


def sparse_layers(
    layer_info: dict | str, model: onnx.ModelProto | None = None, log: Iterable[str] = ()
) -> dict:
    """Which layers could use 2:4 sparse math and which got a sparse tactic.

    * ``eligible``: ONNX nodes whose weights hold the 2:4 pattern (from ``model``, computed by us);
    * ``eligible_tensorrt`` / ``picked_tensorrt``: the layer lists of TensorRT's "(Sparsity)" build log
      lines (None when the log has none);
    * ``sparse_tactic``: engine layers whose tactic name contains "sparse" (needs an engine built with
      ProfilingVerbosity.DETAILED; ``detailed`` says whether tactic names were present);
    * ``layers``: every engine layer that holds an eligible node or runs a sparse tactic, with the ONNX
      nodes it fuses (from its "[ONNX Layer: ...]" metadata, else its " + "-joined name).
    """
    info = json.loads(layer_info, strict=False) if isinstance(layer_info, str) else layer_info
    log = list(log)
    eligible = nodes_with_nm_weights(model) if model is not None else []
    wanted = set(eligible)
    rows, detailed = [], False
    for entry in info.get("Layers", []):
        if isinstance(entry, str):  # LAYER_NAMES_ONLY verbosity: names, no tactics
            entry = {"Name": entry}
        name = str(entry.get("Name", ""))
        tactic = str(entry.get("TacticName", ""))
        detailed = detailed or "TacticName" in entry
        nodes = _ONNX_LAYER.findall(str(entry.get("Metadata", ""))) or [p.strip() for p in name.split(" + ")]
        is_sparse = "sparse" in tactic.lower()
        holds = sorted(wanted.intersection(nodes))
        if holds or is_sparse:
            rows.append(
                {
                    "layer": name,
                    "onnx_nodes": nodes,
                    "tactic": tactic,
                    "eligible": bool(holds),
                    "sparse": is_sparse,
                }
            )
    return {
        "eligible": eligible,
        "eligible_tensorrt": _log_names(log, _LOG_ELIGIBLE),
        "picked_tensorrt": _log_names(log, _LOG_PICKED),
        "sparse_tactic": [r["layer"] for r in rows if r["sparse"]],
        "detailed": detailed,
        "layers": rows,
    }


# ---- running ------------------------------------------------------------------------------------------


class EngineRunner:
    """A deserialized engine with its inputs on the GPU; calling it times one ``execute_async_v3`` (ms).

    ``device_mb``: GPU memory taken by the engine, its execution context and the I/O buffers.
    """

    def __init__(self, build: EngineBuild, feeds: Mapping[str, np.ndarray] | None = None, cuda=None):
        trt = _import_tensorrt()
        self.cuda = cuda or cuda_api()
        self.pointers: list[int] = []
        free_before = self.cuda.free_bytes()
        self.runtime = trt.Runtime(_logger())  # must outlive the engine
        self.engine = self.runtime.deserialize_cuda_engine(build.engine)
        self.context = self.engine.create_execution_context()
        self.stream, self.handle = self.cuda.new_stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        rng = np.random.default_rng(0)
        for name in inputs:  # every input shape first: output shapes depend on them
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            shape = tuple(build.input_shapes[name])
            given = (feeds or {}).get(name)
            data = (
                np.asarray(given, dtype=dtype)
                if given is not None
                else (
                    rng.standard_normal(shape).astype(dtype) if dtype.kind == "f" else np.zeros(shape, dtype)
                )
            )
            self.context.set_input_shape(name, data.shape)
            ptr = self._alloc(data.nbytes)
            self.cuda.upload(ptr, data)
            self.context.set_tensor_address(name, ptr)
        for name in names:
            if name in inputs:
                continue
            shape = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                self.close()
                raise EngineBuildError(f"output '{name}' has a data-dependent shape {list(shape)}: not timed")
            self.context.set_tensor_address(
                name, self._alloc(int(np.prod(shape)) * self.engine.get_tensor_dtype(name).itemsize)
            )
        self.device_mb = (free_before - self.cuda.free_bytes()) / 1e6

    def _alloc(self, nbytes: int) -> int:
        ptr = self.cuda.malloc(nbytes)
        self.pointers.append(ptr)
        return ptr

    def _launch(self) -> None:
        if not self.context.execute_async_v3(self.handle):
            raise RuntimeError("TensorRT execute_async_v3 failed")

    def __call__(self) -> float:
        return self.cuda.time_ms(self._launch, self.stream)

    def close(self) -> None:
        for ptr in self.pointers:
            self.cuda.free(ptr)
        self.pointers = []
        if self.stream is not None:
            self.cuda.destroy_stream(self.stream)
            self.stream = None
        self.context = None  # context, then engine, then runtime: the order TensorRT requires
        self.engine = None
        self.runtime = None


def time_engine(
    build: EngineBuild,
    feeds: Mapping[str, np.ndarray] | None = None,
    *,
    rounds: int = 30,
    warmup: int = 5,
    budget_s: float | None = None,
) -> LatencyStats:
    """Latency of one engine alone (GPU time per run); ``feeds`` default to random inputs."""
    runner = EngineRunner(build, feeds)
    try:
        times = interleave([runner], rounds=rounds, warmup=warmup, budget_s=budget_s)[0]
    finally:
        runner.close()
    return latency_stats(times, batch=build.batch)


def tensorrt_prepare(input_shapes: Mapping[str, Shape] | None, sparse: bool) -> Prepare:
    """Backend hook for :func:`onnxprune.bench.bench_models`: build an engine for the model at this batch
    (precision from :func:`precision_for`; SPARSE_WEIGHTS when asked or when 2:4 weights are present)."""
    cuda = cuda_api()

    def prepare(m: BenchModel, batch: int, feeds: dict[str, np.ndarray]) -> Prepared:
        precision = precision_for(m.model)
        use_sparse = sparse or bool(nodes_with_nm_weights(m.model))
        build = build_engine(
            m.model, precision=precision, sparse=use_sparse, batch=batch, input_shapes=input_shapes
        )
        runner = EngineRunner(build, feeds, cuda)
        extra = {
            "precision": precision,
            "sparse": use_sparse,
            "flags": build.flags,
            "engine_mb": len(build.engine) / 1e6,
            "build_s": round(build.build_s, 2),
        }
        if use_sparse:
            extra["sparse_layers"] = sparse_layers(build.layer_info, m.model, build.log)
        return Prepared(runner, runner.device_mb, extra, runner.close)

    return prepare
