"""Loading and saving ONNX models safely.

Loading refuses, with one clear line (exit 2), anything that is not a usable ONNX model: missing or
empty files, bytes that are not an ONNX protobuf, truncated files, external data that is missing,
truncated, or located outside the model's folder (absolute paths and ``..`` are a path-traversal
hole: a model must never make us read arbitrary files). Saving is atomic, never writes over the
input, and switches to external data above ~1.8 GB (protobuf's hard limit is 2 GB).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import external_data_helper, helper, numpy_helper

from .errors import InputError
from .graph import initializers

EXTERNAL_DATA_THRESHOLD = int(1.8 * 2**30)


def _iter_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """All tensors stored in a graph: initializers and tensor attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _iter_tensors(attr.g)
            for g in attr.graphs:
                yield from _iter_tensors(g)


def _check_external_data(model: onnx.ModelProto, base_dir: Path) -> None:
    """Every external-data reference must name an existing file inside ``base_dir`` that is long enough."""
    root = base_dir.resolve()
    for tensor in _iter_tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        what = f"external data of tensor '{tensor.name}'"
        if not location:
            raise InputError(f"{what} has no location")
        if os.path.isabs(location) or Path(location).drive or location.startswith(("/", "\\")):
            raise InputError(
                f"{what} points to absolute path '{location}': refusing, it must lie inside the model's "
                "folder"
            )
        target = (base_dir / location).resolve()
        if target != root and root not in target.parents:
            raise InputError(
                f"{what} location '{location}' escapes the model's folder: refusing (path traversal)"
            )
        if not target.is_file():
            raise InputError(f"{what}: file '{location}' not found next to the model in {base_dir}")
        offset = int(info.get("offset", 0) or 0)
        length = info.get("length")
        size = target.stat().st_size
        if length is not None and offset + int(length) > size:
            raise InputError(
                f"{what} in '{location}' is truncated: needs bytes {offset}..{offset + int(length)}, file "
                f"has {size}"
            )


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an ``.onnx`` file (external data resolved next to it) and check it; raise InputError if
    unusable."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"model file not found: {p}")
    if not p.is_file():
        raise InputError(f"model path is not a file: {p}")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read model file {p}: {exc.strerror or exc}") from None
    if not data:
        raise InputError(f"model file is empty: {p}")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError (or RuntimeError with some backends)
        raise InputError(f"{p} is not an ONNX model or is truncated (protobuf parse failed: {exc})") from None
    if model.ir_version <= 0 or not model.HasField("graph") or not model.opset_import:
        missing = (
            "ir_version"
            if model.ir_version <= 0
            else "graph"
            if not model.HasField("graph")
            else "opset_import"
        )
        raise InputError(f"{p} is not a complete ONNX model (no {missing}; not ONNX, or a truncated file)")
    if not model.graph.node:
        raise InputError(f"{p} has an empty graph (no nodes)")
    _check_external_data(model, p.parent)
    try:
        external_data_helper.load_external_data_for_model(model, str(p.parent))
    except Exception as exc:
        raise InputError(f"cannot read external data of {p}: {exc}") from None
    try:
        if model.ByteSize() < 2**31 - 1:
            onnx.checker.check_model(model)
        else:
            onnx.checker.check_model(str(p))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{p} is not a valid ONNX model: {first}") from None
    check_contents(model, p)
    limit = ort_max_ir_version()
    if (
        model.ir_version
        > limit
        >= helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    ):
        model.ir_version = (
            limit  # onnx ≥ 1.23 writes IR 14 by default; onnxruntime refuses it even for old opsets
        )
    return model


# Elements a tensor may declare: 2^31 (8 GiB of float32). Larger static shapes are refused before anything is
# allocated for them (a declared input, a ConstantOfShape or Expand target, a calibration array).
MAX_ELEMENTS = 2**31
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def check_contents(model: onnx.ModelProto, path: Path | str) -> None:
    """What the ONNX checker lets through but no command can work with: an opset newer than this onnx knows,
    NaN or infinite weights, empty weights of a linear layer, a graph input declaring more than
    ``MAX_ELEMENTS`` elements."""
    newest = onnx.defs.onnx_opset_version()
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx") and not 1 <= op.version <= newest:
            raise InputError(
                f"{path} imports opset {op.version} of the ONNX domain; this onnx "
                f"({onnx.__version__}) knows opsets 1 to {newest}"
            )
    graph = model.graph
    inits = initializers(graph)
    floats = (
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.BFLOAT16,
    )
    for tensor in _iter_tensors(graph):
        if tensor.data_type in floats and tensor.data_location != onnx.TensorProto.EXTERNAL:
            values = numpy_helper.to_array(tensor)
            if values.size and not np.isfinite(values).all():
                what = "NaN" if np.isnan(values).any() else "infinite"
                raise InputError(f"{path}: weight '{tensor.name}' holds {what} values")
    for node in graph.node:
        if node.op_type in WEIGHTED_OPS and node.domain in ("", "ai.onnx"):
            for name in node.input[:2]:
                t = inits.get(name)
                if t is not None and 0 in t.dims:
                    raise InputError(
                        f"{path}: node '{node.name}' ({node.op_type}) has an empty weight "
                        f"'{name}' of shape {list(t.dims)}"
                    )
    for vi in graph.input:
        check_declared_size(vi, f"{path}: input")


def check_declared_size(vi: onnx.ValueInfoProto, what: str) -> None:
    """Refuse a tensor whose static dims declare more than ``MAX_ELEMENTS`` elements (symbolic dims: 1)."""
    dims = [d.dim_value for d in vi.type.tensor_type.shape.dim if d.HasField("dim_value")]
    count = int(np.prod(np.array(dims, dtype=object))) if dims else 1
    if count > MAX_ELEMENTS:
        raise InputError(
            f"{what} '{vi.name}' declares {count:,} elements ({_dims(vi)}), more than the "
            f"{MAX_ELEMENTS:,} onnxprune handles"
        )


def _dims(vi: onnx.ValueInfoProto) -> str:
    return (
        "["
        + ", ".join(
            str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?")
            for d in vi.type.tensor_type.shape.dim
        )
        + "]"
    )


def require_runnable(model: onnx.ModelProto, path: Path | str) -> None:
    """Refuse (exit 2) a model onnxruntime cannot load, e.g. one with ops of a domain it does not know:
    every command that runs the model would otherwise fail later with onnxruntime's raw error."""
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    try:
        if model.ByteSize() < 2**31 - 1:
            onnxruntime.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        else:
            onnxruntime.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail / InvalidGraph / ... types
        text = " ".join(str(exc).split())
        reason = text.split(" : ")[-1] if " : " in text else text
        raise InputError(f"onnxruntime cannot run {path}: {reason}") from None


@functools.cache
def ort_max_ir_version() -> int:
    """The newest ONNX IR version the installed onnxruntime loads (probed once with an Identity model)."""
    import onnxruntime

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    for ir in range(onnx.IR_VERSION, 3, -1):
        probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=ir)
        try:
            onnxruntime.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
            return ir
        except Exception:  # noqa: BLE001 - "Unsupported model IR version": try the next older one
            continue
    return onnx.IR_VERSION


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _is_protected(out: Path, protect) -> bool:
    """``out`` is (a link to, or the same path as) one of the files in ``protect``."""
    return any(_same_file(out, Path(q)) or out.resolve() == Path(q).resolve() for q in protect)


def save_model(
    model: onnx.ModelProto,
    path: str | os.PathLike,
    *,
    protect: tuple[str | os.PathLike, ...] = (),
    check: bool = True,
) -> Path:
    """Write ``model`` to ``path`` atomically; refuse to overwrite any file in ``protect``.

    Above EXTERNAL_DATA_THRESHOLD the weights go to ``<name>.data`` beside the model. The model is
    written into a temporary folder in the destination directory, checked with the full ONNX checker
    there (``check``), and only then moved into place, so a failure never leaves a partial file.
    """
    return write_outputs([(path, model)], protect=protect, check=check)[0]


def write_outputs(
    items: list[tuple[str | os.PathLike, onnx.ModelProto | str]],
    *,
    protect: tuple[str | os.PathLike, ...] = (),
    check: bool = True,
) -> list[Path]:
    """Write several outputs (models, or texts) as one: each is staged in a temporary folder beside its
    destination (models checked there with the full ONNX checker), and only once every one is staged are
    they moved into place. A failure leaves none of them; nothing is written over a file in ``protect``."""
    outs = [Path(p) for p, _ in items]
    for out, (_, item) in zip(outs, items, strict=True):
        extra = (
            [out.parent / (out.name + ".data")]
            if isinstance(item, onnx.ModelProto) and item.ByteSize() > EXTERNAL_DATA_THRESHOLD
            else []
        )
        for target in (out, *extra):
            if _is_protected(target, protect):
                raise InputError(f"refusing to overwrite the input file {target}")
    staged: list[tuple[Path, Path]] = []  # (staged file, destination)
    temps: list[Path] = []
    try:
        for out, (_, item) in zip(outs, items, strict=True):
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".onnxprune-", dir=out.parent))
            temps.append(tmp)
            staged.extend((tmp / name, out.parent / name) for name in _stage(item, tmp, out.name, check))
        for src, dst in staged:
            os.replace(src, dst)
    finally:
        for tmp in temps:
            shutil.rmtree(tmp, ignore_errors=True)
    return outs


def _stage(item: onnx.ModelProto | str, folder: Path, name: str, check: bool) -> list[str]:
    """Write one output into ``folder``; returns the file names written (the model last: it is moved last)."""
    if isinstance(item, str):
        (folder / name).write_text(item)
        os.chmod(folder / name, 0o644)
        return [name]
    path = folder / name
    data_name = name + ".data"
    if item.ByteSize() > EXTERNAL_DATA_THRESHOLD:
        copy = onnx.ModelProto()
        copy.CopyFrom(item)  # converting to external data mutates the proto in place
        onnx.save_model(
            copy,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data_name,
            size_threshold=0,
        )
        names = [data_name, name]
    else:
        onnx.save_model(item, str(path))
        names = [name]
    if check:
        onnx.checker.check_model(str(path), full_check=True)
    return names


@contextlib.contextmanager
def output_folder(path: str | os.PathLike, *, protect: tuple[str | os.PathLike, ...] = ()) -> Iterator[Path]:
    """The output folder, checked before any work starts: a writable folder that is not an input file.

    Missing folders are created now (so an impossible path fails at once, not after the pipeline ran) and
    removed again, with every parent created for it, when the command then fails without writing there.
    """
    out = Path(path)
    if _is_protected(out, protect):
        raise InputError(f"output folder {out} is the input file")
    missing, existing = [], out
    while not existing.exists() and existing != existing.parent:
        missing.append(existing)
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"output folder {out}: {existing} is a file, not a folder")
    created: list[Path] = []

    def undo() -> None:
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty

    try:
        for folder in reversed(missing):
            folder.mkdir()
            created.append(folder)
        fd, probe = tempfile.mkstemp(prefix=".onnxprune-probe-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        undo()
        raise InputError(f"cannot write to output folder {out}: {exc.strerror or exc}") from None
    try:
        yield out
    except BaseException:
        undo()
        raise
