"""Cost model: multiply-accumulates (MACs) and parameter counts per node and per model.

Each op's MAC formula lives in its registry entry (``ops.REGISTRY``); it gets the node and the concrete
tensor shapes at the analysed input shape and returns the node's MACs (None if a shape it needs is
unknown). Parameters are the elements of floating-point initializers, each counted once, at the
first node that reads it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import onnx

from .ops import mac_rule
from .shapes import FLOAT_TYPES, Shape, static_shapes


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
        rule = mac_rule(node.op_type)
        if rule is not None:
            try:
                macs = int(rule(node, shapes))
            except (KeyError, IndexError, TypeError, ValueError, AttributeError):
                unmeasured.append(node.name)
        weight = (
            node.input[1]
            if len(node.input) > 1 and node.input[1] in floats
            else (weights[0] if weights else None)
        )
        out = shapes.get(node.output[0]) if node.output else None
        nodes.append(
            NodeCost(
                node.name,
                node.op_type,
                macs,
                params,
                floats[weight] if weight else None,
                list(out) if out is not None else None,
            )
        )
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
