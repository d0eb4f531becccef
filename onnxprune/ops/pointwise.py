"""Ops that keep every channel where it is: per-element, broadcasting, normalizing and reducing ops."""

from __future__ import annotations

from ..channels import View
from ..tracing import Node, TraceContext
from .base import OpEntry


def unary(ctx: TraceContext, node: Node) -> None:
    """Per-element ops (Relu, Sigmoid, Cast, …): the output carries the input's channels."""
    ctx.set_view(node.outputs[0], ctx.view(node.inputs[0]))


def elementwise(ctx: TraceContext, node: Node) -> None:
    """Broadcasting ops (Add, Mul, Where, PRelu, Clip, …): traced inputs are joined channel by channel;
    constant operands with a full channel dim are per-channel parameters (sliced); an untraced
    activation with a full channel dim blocks (its channels cannot be removed with ours)."""
    out = node.outputs[0]
    rank = len(ctx.shape(out) or ())
    traced = [(i, n, ctx.view(n)) for i, n in enumerate(node.inputs) if ctx.view(n) is not None]
    if not traced:
        return
    ref = None
    for _, name, view in traced:
        axis = view.axis + rank - len(ctx.shape(name))
        here = View(view.space, axis, view.outer, view.inner)
        if ref is None:
            ref = here
        elif (here.axis, here.outer, here.inner) != (ref.axis, ref.outer, ref.inner):
            joint = ctx.rebase(ref, here) or ctx.rebase(here, ref)  # plain channels beside shuffled ones
            if joint is None:
                ctx.block(ref.space, f"{node} combines channel axes that do not line up")
                ctx.block(view.space, f"{node} combines channel axes that do not line up")
            else:
                ref = joint
        else:
            ctx.unify(ref.space, view.space, node)
    full = (ctx.shape(out) or ())[ref.axis]
    for i, name in enumerate(node.inputs):
        if not name or ctx.view(name) is not None:
            continue
        shape = ctx.shape(name)
        pos = ref.axis - (rank - len(shape)) if shape is not None else None
        if shape is not None and (pos < 0 or shape[pos] == 1):
            continue  # broadcast along the channel axis: nothing to slice
        if shape is not None and ctx.const(name) is not None and shape[pos] == full:
            ctx.member(
                node, "pass-through", ref.space, input_index=i, axis=pos, outer=ref.outer, inner=ref.inner
            )
        else:
            ctx.block(ref.space, f"{node} mixes the channels with '{name}', which is not traced")
    ctx.set_view(out, ref)


def per_channel_norm(ctx: TraceContext, node: Node) -> None:
    """BatchNormalization / InstanceNormalization: channel axis 1, per-channel parameters on inputs 1…"""
    view = ctx.view(node.inputs[0])
    if view is None:
        return
    if view.axis != 1:
        ctx.block(view.space, f"{node} normalizes over axis 1, which does not hold the traced channels")
        return
    for i in range(1, len(node.inputs)):
        if ctx.const(node.inputs[i]) is None:
            ctx.block(view.space, f"{node} has non-constant parameters")
            return
        ctx.member(
            node, "pass-through", view.space, input_index=i, axis=0, outer=view.outer, inner=view.inner
        )
    ctx.set_view(node.outputs[0], view)


def normalizing(ctx: TraceContext, node: Node) -> None:
    """LayerNormalization over axes [axis, rank) and Softmax-like ops over ``axis``: a channel removed from
    the normalized axes changes every other one's value, so the space blocks; elsewhere they pass through."""
    view = ctx.view(node.inputs[0])
    if view is None:
        return
    axis = node.attr("axis", -1) % len(ctx.shape(node.inputs[0]))
    if view.axis == axis or (node.op == "LayerNormalization" and view.axis > axis):
        ctx.block(view.space, f"{node} normalizes over the channel axis")
    ctx.set_view(node.outputs[0], view)


def reduce(ctx: TraceContext, node: Node) -> None:
    """Reduce*: reducing over the channel axis blocks; otherwise the axis shifts if dims are dropped."""
    view = ctx.view(node.inputs[0])
    if view is None:
        return
    rank = len(ctx.shape(node.inputs[0]))
    axes = node.attr("axes")
    if axes is None and len(node.inputs) > 1 and node.inputs[1]:
        axes = ctx.const(node.inputs[1])
        if axes is None:
            ctx.block(view.space, f"{node} reduces over axes that are not constant")
            return
    axes = list(range(rank)) if axes is None or len(axes) == 0 else [int(a) % rank for a in axes]
    if view.axis in axes:
        ctx.block(view.space, f"{node} reduces over the channel axis")
        return
    shift = 0 if node.attr("keepdims", 1) else sum(a < view.axis for a in axes)
    ctx.set_view(node.outputs[0], View(view.space, view.axis - shift, view.outer, view.inner))


def opaque(ctx: TraceContext, node: Node) -> None:
    """Ops that only read a tensor's shape (Shape, Size): nothing to prune, nothing to block."""


UNARY = (
    "Relu",
    "LeakyRelu",
    "Elu",
    "Selu",
    "Celu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Erf",
    "Gelu",
    "Softplus",
    "Softsign",
    "Mish",
    "Exp",
    "Log",
    "Sqrt",
    "Neg",
    "Abs",
    "Reciprocal",
    "Floor",
    "Ceil",
    "Round",
    "Sign",
    "Sin",
    "Cos",
    "Cast",
    "Identity",
    "Dropout",
    "Not",
    "IsNaN",
    "IsInf",
    "ThresholdedRelu",
    "Shrink",
)
ELEMENTWISE = (
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Max",
    "Min",
    "Sum",
    "Mean",
    "PRelu",
    "Clip",
    "Where",
    "Equal",
    "Less",
    "LessOrEqual",
    "Greater",
    "GreaterOrEqual",
    "And",
    "Or",
    "Xor",
    "Mod",
)
REDUCE = (
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
)

ENTRIES = {
    **dict.fromkeys(UNARY, OpEntry(unary)),
    **dict.fromkeys(ELEMENTWISE, OpEntry(elementwise)),
    **dict.fromkeys(REDUCE, OpEntry(reduce)),
    **dict.fromkeys(("Softmax", "LogSoftmax", "Hardmax", "LayerNormalization"), OpEntry(normalizing)),
    **dict.fromkeys(("BatchNormalization", "InstanceNormalization"), OpEntry(per_channel_norm)),
    **dict.fromkeys(("Shape", "Size"), OpEntry(opaque)),
}
