"""Loading and saving ONNX models safely.

Loading refuses, with one clear line (exit 2), anything that is not a usable ONNX model: missing or
empty files, bytes that are not an ONNX protobuf, truncated files, external data that is missing,
truncated, or located outside the model's folder (absolute paths and ``..`` are a path-traversal
hole: a model must never make us read arbitrary files). Saving is atomic, never writes over the
input, and switches to external data above ~1.8 GB (protobuf's hard limit is 2 GB).
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import onnx
from onnx import external_data_helper, helper

from .errors import InputError

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
            raise InputError(f"{what} points to absolute path '{location}': refusing, it must lie inside the model's folder")
        target = (base_dir / location).resolve()
        if target != root and root not in target.parents:
            raise InputError(f"{what} location '{location}' escapes the model's folder: refusing (path traversal)")
        if not target.is_file():
            raise InputError(f"{what}: file '{location}' not found next to the model in {base_dir}")
        offset = int(info.get("offset", 0) or 0)
        length = info.get("length")
        size = target.stat().st_size
        if length is not None and offset + int(length) > size:
            raise InputError(
                f"{what} in '{location}' is truncated: needs bytes {offset}..{offset + int(length)}, file has {size}"
            )


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an ``.onnx`` file (external data resolved next to it) and check it; raise InputError if unusable."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"model file not found: {p}")
    if not p.is_file():
        raise InputError(f"model path is not a file: {p}")
    data = p.read_bytes()
    if not data:
        raise InputError(f"model file is empty: {p}")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError (or RuntimeError with some backends)
        raise InputError(f"{p} is not an ONNX model or is truncated (protobuf parse failed: {exc})") from None
    if model.ir_version <= 0 or not model.HasField("graph") or not model.opset_import:
        missing = "ir_version" if model.ir_version <= 0 else "graph" if not model.HasField("graph") else "opset_import"
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
    limit = ort_max_ir_version()
    if model.ir_version > limit >= helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True):
        model.ir_version = limit  # onnx ≥ 1.23 writes IR 14 by default; onnxruntime refuses it even for old opsets
    return model


@functools.cache
def ort_max_ir_version() -> int:
    """The newest ONNX IR version the installed onnxruntime loads (probed once with an Identity model)."""
    import onnxruntime

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
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
    out = Path(path)
    if _is_protected(out, protect):
        raise InputError(f"refusing to overwrite the input model {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    external = model.ByteSize() > EXTERNAL_DATA_THRESHOLD
    data_name = out.name + ".data"
    if external and _is_protected(out.parent / data_name, protect):
        raise InputError(f"refusing to overwrite the input's external data {out.parent / data_name}")
    tmp = Path(tempfile.mkdtemp(prefix=".onnxprune-", dir=out.parent))
    try:
        tmp_model = tmp / out.name
        if external:
            copy = onnx.ModelProto()
            copy.CopyFrom(model)  # converting to external data mutates the proto in place
            onnx.save_model(copy, str(tmp_model), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name, size_threshold=0)
        else:
            onnx.save_model(model, str(tmp_model))
        if check:
            onnx.checker.check_model(str(tmp_model), full_check=True)
        if external:
            os.replace(tmp / data_name, out.parent / data_name)
        os.replace(tmp_model, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def write_text_atomic(path: str | os.PathLike, text: str, *, protect: tuple[str | os.PathLike, ...] = ()) -> Path:
    """Write a text file atomically (temp file in the same folder, then rename); never over ``protect``."""
    out = Path(path)
    if _is_protected(out, protect):
        raise InputError(f"refusing to overwrite the input file {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".onnxprune-", dir=out.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a report is an ordinary file
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out
