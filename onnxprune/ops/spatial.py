"""Spatial ops that keep the channel axis: pools, Resize, Pad, depth-preserving rearrangements."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..channels import Edit, Member, Trace
from ..tracing import Node, TraceContext
from .base import OpEntry


def spatial(ctx: TraceContext, node: Node) -> None:
    """Pools, Resize, Pad, depth-preserving spatial ops: channel axis 1 must come through unchanged."""
    view = ctx.view(node.inputs[0])
    if view is None:
        return
    in_shape, out_shape = ctx.shape(node.inputs[0]), ctx.shape(node.outputs[0])
    if out_shape is None or in_shape[view.axis] != out_shape[view.axis] or len(in_shape) != len(out_shape):
        ctx.block(view.space, f"{node} changes the size of the channel axis")
        return
    if (
        node.op in ("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
        and view.axis != 1
    ):
        ctx.block(view.space, f"{node} pools over the channel axis")
        return
    if node.op == "Pad":
        pads = ctx.const(node.inputs[1]) if len(node.inputs) > 1 else np.asarray(node.attr("pads"))
        axes = (
            ctx.const(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] else np.arange(len(in_shape))
        )
        if pads is None or axes is None:
            ctx.block(view.space, f"{node} has pads that are not constant")
            return
        half = len(pads) // 2
        for k, ax in enumerate(int(a) % len(in_shape) for a in axes):
            if ax == view.axis and (pads[k] != 0 or pads[k + half] != 0):
                ctx.block(view.space, f"{node} pads the channel axis")
                return
    if node.op in ("Resize", "Upsample"):
        sizes = node.inputs[3] if node.op == "Resize" and len(node.inputs) > 3 else ""
        if sizes:
            if ctx.const(sizes) is None or len(ctx.const(sizes)) != len(in_shape):
                ctx.block(view.space, f"{node} has output sizes that are not constant over all axes")
                return
            ctx.member(node, "pass-through", view.space, kind=Edit.RESIZE, input_index=3, axis=view.axis)
    ctx.set_view(node.outputs[0], view)


def edit_resize(edit, trace: Trace, m: Member, kept: Mapping[int, np.ndarray]) -> None:
    """Resize with explicit output sizes: the channel entry becomes the kept count."""
    sizes = edit.get(m.node, m.input_index)
    sizes[m.axis] = len(kept[m.space])


SPATIAL = (
    "MaxPool",
    "AveragePool",
    "LpPool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "GlobalLpPool",
    "Upsample",
    "Pad",
    "SpaceToDepth",
    "DepthToSpace",
)

ENTRIES = {
    **dict.fromkeys(SPATIAL, OpEntry(spatial)),
    "Resize": OpEntry(spatial, edits={Edit.RESIZE: edit_resize}),
}
