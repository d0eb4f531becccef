"""The op registry: one ``OpEntry`` per op type, holding everything onnxprune knows about it.

=================  ==============================================================================
trace              how the op moves channels (``tracer.trace_channels`` applies it node by node)
edits              how pruning edits the members it records, per ``channels.Edit`` kind
                   (constant inputs: ``base.edit_param`` for every op)
macs               its multiply-accumulates at concrete shapes (``costs.model_cost``)
linear             its matrix view for statistics, the refit and SparseGPT (``layers.linear_layers``)
weight_layer       INT8 quantizes its weights (``quantize``); ``quantize``: notes
=================  ==============================================================================

Adding an op: one entry in the family module it belongs to (``pointwise``, ``spatial``, ``shape``,
``linear``, ``recurrent``) and one test. An op without an entry blocks the channels it reads.
"""

from __future__ import annotations

from ..channels import Edit
from . import linear, pointwise, recurrent, shape, spatial
from .base import EditRule, MacRule, OpEntry, Rule, edit_param

REGISTRY: dict[str, OpEntry] = {
    **pointwise.ENTRIES,
    **spatial.ENTRIES,
    **shape.ENTRIES,
    **linear.ENTRIES,
    **recurrent.ENTRIES,
}
EDITS: dict[Edit, EditRule] = {
    Edit.PARAM: edit_param,
    **{kind: rule for e in REGISTRY.values() for kind, rule in e.edits.items()},
}
WEIGHT_LAYER_OPS: tuple[str, ...] = tuple(op for op, e in REGISTRY.items() if e.weight_layer)
DEFAULT_DOMAINS = ("", "ai.onnx")


def entry(op: str, domain: str = "") -> OpEntry | None:
    """The entry of an op of the default ONNX domain (None for other domains and unknown ops)."""
    return REGISTRY.get(op) if domain in DEFAULT_DOMAINS else None


def trace_rule(op: str, domain: str = "") -> Rule | None:
    e = entry(op, domain)
    return e.trace if e is not None else None


def mac_rule(op: str) -> MacRule | None:
    """The MAC formula of an op type (any domain: a fused op keeps its name's cost)."""
    e = REGISTRY.get(op)
    return e.macs if e is not None else None


__all__ = ["EDITS", "REGISTRY", "WEIGHT_LAYER_OPS", "OpEntry", "entry", "mac_rule", "trace_rule"]
