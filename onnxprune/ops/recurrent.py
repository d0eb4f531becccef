"""Recurrent layers (LSTM, GRU, RNN): input features are consumed; hidden units are not prunable."""

from __future__ import annotations

from ..channels import View
from ..graph import attr
from ..tracing import Node, TraceContext
from .base import OpEntry


def recurrent(ctx: TraceContext, node: Node) -> None:
    """LSTM/GRU/RNN: input features are consumed (W's last axis); hidden units are not prunable yet."""
    view = ctx.view(node.inputs[0])
    w = ctx.const(node.inputs[1])
    r = ctx.const(node.inputs[2])
    if view is not None:
        if view.axis == 2 and view.plain and w is not None:
            ctx.member(node, "consumer", view.space, input_index=1, axis=2)
            i, h = w.shape[2], r.shape[2] if r is not None else 0
            ctx.scales(node, (i / (i + h), (view.space,)), (h / (i + h), ()))
        else:
            ctx.block(view.space, f"{node} reads the traced channels on an axis other than its features")
    for o in node.outputs:
        shape = ctx.shape(o)
        if o and shape:
            ctx.set_view(
                o,
                View(
                    ctx.new_space(o, shape[-1], f"{node}: recurrent hidden units are not prunable"),
                    len(shape) - 1,
                ),
            )


def recurrent_macs(node, sh):
    """LSTM/GRU/RNN: per step and direction, gates·(I + H) MACs; W is [dirs, gates·H, I], R is [dirs, gates·H,
    H]."""
    x, w, r = sh[node.input[0]], sh[node.input[1]], sh[node.input[2]]
    seq, batch = (x[1], x[0]) if attr(node, "layout", 0) else (x[0], x[1])
    return seq * batch * w[0] * w[1] * (w[2] + r[2])


ENTRIES = dict.fromkeys(("LSTM", "GRU", "RNN"), OpEntry(recurrent, macs=recurrent_macs))
