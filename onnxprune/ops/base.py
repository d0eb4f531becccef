"""The op registry's entry type and what every op shares: blocking, and slicing constant inputs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from ..channels import Edit, Member, Trace, weight_positions
from ..shapes import Shape
from ..tracing import Node, TraceContext

Rule = Callable[[TraceContext, Node], None]  # how the op moves channels
MacRule = Callable[[onnx.NodeProto, Mapping[str, Shape]], "int | None"]  # its MACs at concrete shapes
# its matrix view (``layers.LinearLayer`` fields), None where this node has none
LinearView = Callable[[onnx.NodeProto, dict, Mapping[str, onnx.TensorProto]], "dict | None"]
# how pruning edits a member of this kind: (editor, trace, member, kept indices per space)
EditRule = Callable[[object, Trace, Member, Mapping[int, np.ndarray]], None]


@dataclass(frozen=True)
class OpEntry:
    """Everything onnxprune knows about one op type: how it moves channels (``trace``), how pruning edits
    the members it records (``edits``, per ``Edit`` kind; every op's constant inputs are sliced by
    ``edit_param``), its MACs, its matrix view for statistics and refit (``linear``), and how INT8 treats it
    (``weight_layer``: its weights are quantized per channel; ``quantize``: notes)."""

    trace: Rule
    macs: MacRule | None = None
    linear: LinearView | None = None
    edits: Mapping[Edit, EditRule] = field(default_factory=dict)
    weight_layer: bool = False
    quantize: str = ""


def block_unknown(ctx: TraceContext, node: Node) -> None:
    """Ops the table does not know: every traced input is blocked; outputs are not traced."""
    what = f"{node.domain}::{node.op}" if node.domain not in ("", "ai.onnx") else node.op
    for name in node.inputs:
        view = ctx.view(name)
        if view is not None:
            ctx.block(view.space, f"node '{node.name}' ({what}) is not supported by the channel tracer")


def block_inputs(ctx: TraceContext, node: Node, why: str) -> None:
    for name in node.inputs:
        view = ctx.view(name)
        if view is not None:
            ctx.block(view.space, f"{node} {why}")


def edit_param(edit, trace: Trace, m: Member, kept: Mapping[int, np.ndarray]) -> None:
    """Slice constant input ``m.input_index`` along ``m.axis`` to the positions holding the kept channels."""
    arr = edit.get(m.node, m.input_index)
    positions = np.unique(
        weight_positions(kept[m.space], trace.spaces[m.space].size, m.outer, m.inner, m.groups)
    )
    edit.set(m.node, m.input_index, np.take(arr, positions, axis=m.axis))


def set_attr(node: onnx.NodeProto, name: str, value) -> None:
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(helper.make_attribute(name, value))
