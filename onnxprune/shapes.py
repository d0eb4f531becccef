"""Tensor shapes: ONNX shape inference that keeps symbolic dims, and concrete shapes at a given input
shape."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper

from .errors import InputError

Shape = tuple[int, ...]
FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
_TWO_GB = 2**31 - 1


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX shape inference with data propagation; stale value_info is dropped first.

    Symbolic dims (e.g. batch ``N``) stay symbolic. Models over 2 GB go through a temporary file.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.value_info[:]
    if m.ByteSize() < _TWO_GB:
        return onnx.shape_inference.infer_shapes(m, check_type=False, strict_mode=False, data_prop=True)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in.onnx"), os.path.join(tmp, "out.onnx")
        onnx.save_model(m, src, save_as_external_data=True, location="w.data")
        onnx.shape_inference.infer_shapes_path(src, dst, check_type=False, strict_mode=False, data_prop=True)
        return onnx.load_model(dst)


def parse_input_shapes(specs: Iterable[str]) -> dict[str, Shape]:
    """``["input:1x3x224x224", "ids:1x128"]`` → ``{"input": (1, 3, 224, 224), "ids": (1, 128)}``."""
    shapes: dict[str, Shape] = {}
    for spec in specs:
        name, sep, dims = spec.rpartition(":")
        try:
            if not sep or not name:
                raise ValueError
            shape = tuple(int(d) for d in dims.lower().split("x"))
            if any(d <= 0 for d in shape):
                raise ValueError
        except ValueError:
            raise InputError(
                f"bad --input-shape '{spec}': expected NAME:DxDx..., e.g. input:1x3x224x224"
            ) from None
        shapes[name] = shape
    return shapes


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Real graph inputs (initializers listed as inputs, as old exporters do, are not inputs)."""
    inits = {t.name for t in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def declared_shape(vi: onnx.ValueInfoProto) -> list[int | str | None]:
    """Dims of a value: int when static, the symbol's name when symbolic, None when unknown."""
    if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return []
    out: list[int | str | None] = []
    for d in vi.type.tensor_type.shape.dim:
        out.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
    return out


def static_batch(inputs: Iterable[onnx.ValueInfoProto]) -> int | None:
    """The first static leading (batch) dim among ``inputs``; None when every batch dim is dynamic."""
    return next((d[0] for d in map(declared_shape, inputs) if d and isinstance(d[0], int) and d[0] > 0), None)


def resolve_input_shapes(
    model: onnx.ModelProto, given: Mapping[str, Shape] | None = None
) -> dict[str, Shape]:
    """Concrete shape for every graph input: ``given`` wins, a dynamic leading (batch) dim becomes 1.

    Any other dynamic dim must be given explicitly; the error says which input and dim.
    """
    given = dict(given or {})
    inputs = graph_inputs(model)
    unknown = set(given) - {vi.name for vi in inputs}
    if unknown:
        names = ", ".join(vi.name for vi in inputs)
        raise InputError(f"--input-shape names unknown input '{sorted(unknown)[0]}' (model inputs: {names})")
    shapes: dict[str, Shape] = {}
    for vi in inputs:
        dims = declared_shape(vi)
        if vi.name in given:
            shape = given[vi.name]
            if dims and len(dims) != len(shape):
                raise InputError(
                    f"--input-shape for '{vi.name}' has rank {len(shape)}, model expects rank {len(dims)} "
                    f"{dims}"
                )
            for have, want in zip(dims, shape, strict=False):
                if isinstance(have, int) and have != want:
                    raise InputError(
                        f"--input-shape for '{vi.name}': got {list(shape)}, model fixes dims {dims}"
                    )
            shapes[vi.name] = tuple(shape)
            continue
        resolved = []
        for axis, d in enumerate(dims):
            if isinstance(d, int) and d > 0:
                resolved.append(d)
            elif axis == 0:
                resolved.append(1)
            else:
                raise InputError(
                    f"input '{vi.name}' has dynamic dim {axis} ('{d or '?'}'): pass --input-shape {vi.name}:"
                    + "x".join(
                        str(x if isinstance(x, int) and x > 0 else 1 if i == 0 else "D")
                        for i, x in enumerate(dims)
                    )
                )
        shapes[vi.name] = tuple(resolved)
    return shapes


def with_input_shapes(model: onnx.ModelProto, shapes: Mapping[str, Shape]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph inputs have the given static shapes (other value_info cleared)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        if vi.name in shapes:
            dims = vi.type.tensor_type.shape.dim
            del dims[:]
            for d in shapes[vi.name]:
                dims.add().dim_value = int(d)
    del m.graph.value_info[:]
    for vo in m.graph.output:
        vo.type.tensor_type.ClearField("shape")
    return m


def _static(vi: onnx.ValueInfoProto) -> Shape | None:
    dims = declared_shape(vi)
    if (
        vi.type.HasField("tensor_type")
        and vi.type.tensor_type.HasField("shape")
        and all(isinstance(d, int) and d >= 0 for d in dims)
    ):
        return tuple(int(d) for d in dims)
    return None


def _ort_shapes(model: onnx.ModelProto, shapes: Mapping[str, Shape], names: list[str]) -> dict[str, Shape]:
    """Run the model once on zeros with ``names`` tapped as outputs; return their real shapes."""
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    existing = {o.name for o in m.graph.output}
    for n in names:
        if n not in existing:
            m.graph.output.append(helper.make_empty_tensor_value_info(n))
    feeds = {}
    for vi in graph_inputs(m):
        dtype = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        feeds[vi.name] = np.zeros(shapes[vi.name], dtype=dtype)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    outs = sess.run(names, feeds)
    return {n: tuple(np.asarray(v).shape) for n, v in zip(names, outs, strict=True)}


def static_shapes(
    model: onnx.ModelProto, input_shapes: Mapping[str, Shape] | None = None
) -> dict[str, Shape]:
    """Concrete shape of every tensor (inputs, initializers, node outputs) at the given input shapes.

    ONNX shape inference first; tensors it leaves unknown (data-dependent Reshapes, custom ops) are
    measured by one onnxruntime run on zeros.
    """
    shapes_in = resolve_input_shapes(model, input_shapes)
    inferred = infer_shapes(with_input_shapes(model, shapes_in))
    shapes: dict[str, Shape] = dict(shapes_in)
    for t in inferred.graph.initializer:
        shapes[t.name] = tuple(t.dims)
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        s = _static(vi)
        if s is not None:
            shapes[vi.name] = s
    for node in inferred.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    shapes[node.output[0]] = tuple(a.t.dims)
    missing = [o for node in inferred.graph.node for o in node.output if o and o not in shapes]
    if missing:
        try:
            shapes.update(_ort_shapes(inferred, shapes_in, missing))
        except Exception:
            pass  # leave them unknown: the cost model reports such nodes as unmeasured
    return shapes
