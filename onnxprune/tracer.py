"""Walk a normalized graph once, applying each op's trace rule (``ops.REGISTRY``), and build its channel
groups."""

from __future__ import annotations

from collections.abc import Mapping

import onnx

from .channels import Trace, View, build_groups
from .ops import trace_rule
from .ops.base import block_unknown
from .shapes import FLOAT_TYPES, Shape, graph_inputs, static_shapes
from .tracing import Node, TraceContext, probe_shapes


def trace_channels(model: onnx.ModelProto, input_shapes: Mapping[str, Shape] | None = None) -> Trace:
    """Channel groups of a normalized model (see ``channels``). Shapes are taken at a probe input shape."""
    ctx = TraceContext(model, static_shapes(model, probe_shapes(model, input_shapes)))
    for vi in graph_inputs(model):
        # Inputs are traced (and blocked) so that everything joined to them is known to be fixed.
        shape = ctx.shape(vi.name)
        if shape and len(shape) >= 2 and vi.type.tensor_type.elem_type in FLOAT_TYPES:
            axis = 1 if len(shape) >= 4 else len(shape) - 1
            ctx.set_view(vi.name, View(ctx.new_space(vi.name, shape[axis], f"graph input '{vi.name}'"), axis))
    for proto in model.graph.node:
        node = Node(proto)
        rule = trace_rule(node.op, node.domain)
        unknown = [
            t
            for t in node.inputs + node.outputs
            if t and ctx.shape(t) is None and (t in node.outputs or ctx.view(t) is not None)
        ]
        if rule is not None and unknown:
            # Rules reason from shapes; without them nothing can be proven, so nothing is traced on.
            for t in node.inputs:
                if ctx.view(t) is not None:
                    ctx.block(ctx.view(t).space, f"{node}: shape of '{unknown[0]}' is unknown")
        elif rule is None:
            block_unknown(ctx, node)
        else:
            rule(ctx, node)
    for out in model.graph.output:
        view = ctx.view(out.name)
        if view is not None:
            ctx.block(view.space, f"graph output '{out.name}'")
    groups, segments = build_groups(ctx.spaces, ctx.links, ctx.members)
    return Trace(ctx.spaces, ctx.members, groups, segments, ctx.views, ctx.mac_scaling)
