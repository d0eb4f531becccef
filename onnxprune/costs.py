"""Cost model: multiply-accumulates (MACs) and parameter counts per node and per model.

MAC rules live in one table keyed by op type; each rule gets the node and the concrete tensor
shapes at the analysed input shape and returns the node's MACs (None if a shape it needs is
unknown). Parameters are the elements of floating-point initializers, each counted once, at the
first node that reads it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import onnx

from .shapes import FLOAT_TYPES, Shape, static_shapes


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _conv(node, sh):
    """Conv: every output element is a dot product over (Cin/g)·k_h·k_w inputs; W is [Cout, Cin/g, k...]."""
    return math.prod(sh[node.output[0]]) * math.prod(sh[node.input[1]][1:])


def _conv_transpose(node, sh):
    """ConvTranspose: every input element scatters into (Cout/g)·k_h·k_w outputs; W is [Cin, Cout/g, k...]."""
    return math.prod(sh[node.input[0]]) * math.prod(sh[node.input[1]][1:])


def _gemm(node, sh):
    """Gemm: Y[M,N] = A'[M,K]·B'[K,N]  →  M·N·K."""
    a = sh[node.input[0]]
    k = a[0] if _attr(node, "transA", 0) else a[1]
    return math.prod(sh[node.output[0]]) * k


def _matmul(node, sh):
    """MatMul (numpy semantics, batched or not, weights or activations): prod(output)·K, K = A's last dim."""
    return math.prod(sh[node.output[0]]) * sh[node.input[0]][-1]


def _recurrent(node, sh):
    """LSTM/GRU/RNN: per step and direction, gates·(I + H) MACs; W is [dirs, gates·H, I], R is [dirs, gates·H, H]."""
    x, w, r = sh[node.input[0]], sh[node.input[1]], sh[node.input[2]]
    seq, batch = (x[1], x[0]) if _attr(node, "layout", 0) else (x[0], x[1])
    return seq * batch * w[0] * w[1] * (w[2] + r[2])


def _einsum(node, sh):
    """Einsum: one multiply per point of the full index space (product of every distinct index's size)."""
    lhs = _attr(node, "equation").decode().replace(" ", "").split("->")[0]
    sizes: dict[str, int] = {}
    for term, name in zip(lhs.split(","), node.input, strict=True):
        if "..." in term:
            return None
        for letter, dim in zip(term, sh[name], strict=True):
            sizes[letter] = dim
    return math.prod(sizes.values())


MAC_RULES: dict[str, Callable[[onnx.NodeProto, Mapping[str, Shape]], int | None]] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "LSTM": _recurrent,
    "GRU": _recurrent,
    "RNN": _recurrent,
    "Einsum": _einsum,
}


@dataclass
class NodeCost:
    name: str
    op: str
    macs: int | None
    params: int
    weight_shape: list[int] | None
    output_shape: list[int] | None


@dataclass
class ModelCost:
    macs: int
    params: int
    nodes: list[NodeCost]
    input_shapes: dict[str, list[int]]
    unmeasured: list[str]  # nodes with a MAC rule whose shapes could not be determined

    def to_dict(self) -> dict:
        return asdict(self)


def param_slots(model: onnx.ModelProto) -> dict[tuple[str, int], int]:
    """Elements of every floating-point initializer, keyed by the (node, input index) that first reads it."""
    floats = {t.name: math.prod(t.dims) for t in model.graph.initializer if t.data_type in FLOAT_TYPES}
    seen: set[str] = set()
    slots: dict[tuple[str, int], int] = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in floats and name not in seen:
                seen.add(name)
                slots[(node.name, i)] = floats[name]
    return slots


def model_cost(model: onnx.ModelProto, input_shapes: Mapping[str, Shape] | None = None) -> ModelCost:
    """MACs and params of every node and of the whole model at the given input shapes (batch 1 by default)."""
    shapes = static_shapes(model, input_shapes)
    floats = {t.name: list(t.dims) for t in model.graph.initializer if t.data_type in FLOAT_TYPES}
    params_of: dict[str, int] = {}
    for (node_name, _), n in param_slots(model).items():
        params_of[node_name] = params_of.get(node_name, 0) + n
    nodes: list[NodeCost] = []
    unmeasured: list[str] = []
    for node in model.graph.node:
        weights = [n for n in node.input if n in floats]
        params = params_of.get(node.name, 0)
        macs = None
        rule = MAC_RULES.get(node.op_type)
        if rule is not None:
            try:
                macs = int(rule(node, shapes))
            except (KeyError, IndexError, TypeError, ValueError, AttributeError):
                unmeasured.append(node.name)
        weight = node.input[1] if len(node.input) > 1 and node.input[1] in floats else (weights[0] if weights else None)
        out = shapes.get(node.output[0]) if node.output else None
        nodes.append(NodeCost(node.name, node.op_type, macs, params,
                              floats[weight] if weight else None, list(out) if out is not None else None))
    return ModelCost(
        macs=sum(n.macs or 0 for n in nodes),
        params=sum(n.params for n in nodes),
        nodes=nodes,
        input_shapes={k: list(shapes[k]) for k in shapes if k in {vi.name for vi in model.graph.input}},
        unmeasured=unmeasured,
    )


def human(n: float | int | None, unit: str = "") -> str:
    """1234567 → '1.23M' (SI prefixes, three significant digits)."""
    if n is None:
        return "?"
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}{unit}"
    return f"{n:g}{unit}"

