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
