"""Reading a graph: node attributes as Python values."""

from __future__ import annotations

import onnx
from onnx import helper


def attrs(node: onnx.NodeProto) -> dict:
    """A node's attributes as {name: Python value}."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def attr(node: onnx.NodeProto, name: str, default=None):
    """One attribute of a node as a Python value, ``default`` when absent."""
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _graph(g: onnx.ModelProto | onnx.GraphProto) -> onnx.GraphProto:
    return g.graph if isinstance(g, onnx.ModelProto) else g


def initializers(g: onnx.ModelProto | onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """Initializer name → tensor (not copied: edits write through)."""
    return {t.name: t for t in _graph(g).initializer}


def producers(g: onnx.ModelProto | onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    """Tensor name → the node writing it (graph inputs and initializers have none)."""
    return {o: n for n in _graph(g).node for o in n.output if o}
