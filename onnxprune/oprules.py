"""The op-rule table: how each op type moves channels (one entry per op; add an op = add an entry).

A rule reads the views of its inputs and, for its outputs, either carries a view on (pass-through),
creates a space (producer), links spaces (Concat/Split/Slice offsets, residual joins), records the
members pruning must edit, or blocks the spaces it cannot handle with a reason naming the node.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .channels import View
from .tracer import Node, TraceContext

Rule = Callable[[TraceContext, Node], None]


def block_unknown(ctx: TraceContext, node: Node) -> None:
    """Ops the table does not know: every traced input is blocked; outputs are not traced."""
    what = f"{node.domain}::{node.op}" if node.domain not in ("", "ai.onnx") else node.op
    for name in node.inputs:
        view = ctx.view(name)
        if view is not None:
            ctx.block(view.space, f"node '{node.name}' ({what}) is not supported by the channel tracer")


def _block_inputs(ctx: TraceContext, node: Node, why: str) -> None:
    for name in node.inputs:
        view = ctx.view(name)
        if view is not None:
            ctx.block(view.space, f"{node} {why}")


# -- pass-through ------------------------------------------------------------------------------

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
            ctx.member(node, "pass-through", ref.space, input_index=i, axis=pos, outer=ref.outer, inner=ref.inner)
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
        ctx.member(node, "pass-through", view.space, input_index=i, axis=0, outer=view.outer,
                   inner=view.inner)
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


def spatial(ctx: TraceContext, node: Node) -> None:
    """Pools, Resize, Pad, depth-preserving spatial ops: channel axis 1 must come through unchanged."""
    view = ctx.view(node.inputs[0])
    if view is None:
        return
    in_shape, out_shape = ctx.shape(node.inputs[0]), ctx.shape(node.outputs[0])
    if out_shape is None or in_shape[view.axis] != out_shape[view.axis] or len(in_shape) != len(out_shape):
        ctx.block(view.space, f"{node} changes the size of the channel axis")
        return
    if node.op in ("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool") \
            and view.axis != 1:
        ctx.block(view.space, f"{node} pools over the channel axis")
        return
    if node.op == "Pad":
        pads = ctx.const(node.inputs[1]) if len(node.inputs) > 1 else np.asarray(node.attr("pads"))
        axes = ctx.const(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] else np.arange(len(in_shape))
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
            ctx.member(node, "pass-through", view.space, kind="resize", input_index=3, axis=view.axis)
    ctx.set_view(node.outputs[0], view)


def transpose(ctx: TraceContext, node: Node) -> None:
    view = ctx.view(node.inputs[0])
    if view is None:
        return
    rank = len(ctx.shape(node.inputs[0]))
    perm = list(node.attr("perm", list(range(rank))[::-1]))
    ctx.set_view(node.outputs[0], View(view.space, perm.index(view.axis), view.outer, view.inner))


def map_reshape(in_shape, view: View, out_shape) -> View | None:
    """Where a channel axis lands when a row-major tensor is reshaped, or None if it is split apart.

    In flat memory, channel c sits at (P·c + …) with an outer extent P = prod(dims before the axis)·outer
    and an inner extent Q = inner·prod(dims after). The output axis b holds it whole iff the product of
    the output dims before b divides P and the product after b divides Q.
    """
    a = view.axis
    outer_total = math.prod(in_shape[:a]) * view.outer
    inner_total = view.inner * math.prod(in_shape[a + 1:])
    size = in_shape[a] // (view.outer * view.inner)
    for b in range(len(out_shape)):
        before, after = math.prod(out_shape[:b]), math.prod(out_shape[b + 1:])
        if before and after and outer_total % before == 0 and inner_total % after == 0:
            outer, inner = outer_total // before, inner_total // after
            if outer * size * inner == out_shape[b]:
                return View(view.space, b, outer, inner)
    return None


def split_axis(in_shape, view: View, out_shape) -> int | None:
    """Output axis j when a plain channel axis of C = a·b channels becomes two consecutive output axes
    [a, b] (j and j + 1) with everything before and after it kept: channel c is (c // b, c % b)."""
    if not view.plain:
        return None
    a = view.axis
    before, after = math.prod(in_shape[:a]), math.prod(in_shape[a + 1:])
    for j in range(len(out_shape) - 1):
        if out_shape[j] > 1 and out_shape[j + 1] > 1 and out_shape[j] * out_shape[j + 1] == in_shape[a] \
                and math.prod(out_shape[:j]) == before and math.prod(out_shape[j + 2:]) == after:
            return j
    return None


def _shape_entry(ctx: TraceContext, name: str, index: int) -> tuple[str, int | None]:
    """Where entry ``index`` of a shape tensor comes from: ("const", value) for a constant (directly or as a
    constant piece of a Concat), ("runtime", None) for a piece computed from the graph (Shape of a tensor:
    it follows the pruned tensors), ("unknown", None) when it cannot be told."""
    value = ctx.const(name)
    if value is not None:
        return "const", int(np.asarray(value).reshape(-1)[index])
    producer = ctx.producer(name)
    if producer is None or producer.op != "Concat":
        return "unknown", None
    offset = 0
    for piece in producer.inputs:
        shape = ctx.shape(piece)
        length = int(math.prod(shape)) if shape is not None else None
        if length is None:
            return "unknown", None
        if offset <= index < offset + length:
            if ctx.const(piece) is not None:
                return "const", int(np.asarray(ctx.const(piece)).reshape(-1)[index - offset])
            return "runtime", None
        offset += length
    return "unknown", None


def reshape(ctx: TraceContext, node: Node) -> None:
    """Reshape/Flatten/Squeeze/Unsqueeze: exact index mapping from the static shapes, else block.

    A channel axis of C = a·b channels split into two axes [a, b] (a channel shuffle's [N, g, C/g, H, W],
    a head split) maps too: the b channels of one slice are a new space, linked to each of the a slices
    of the input (every slice loses the same channels), living on the b axis.
    A Reshape whose target is computed at run time must not hold the channel count as a constant."""
    view = ctx.view(node.inputs[0])
    if view is None:
        return
    in_shape, out_shape = ctx.shape(node.inputs[0]), ctx.shape(node.outputs[0])
    mapped = map_reshape(in_shape, view, out_shape) if out_shape is not None else None
    if mapped is None and out_shape is not None and node.op == "Reshape":
        j = split_axis(in_shape, view, out_shape)
        if j is not None:
            slices, size = out_shape[j], out_shape[j + 1]
            sub = ctx.new_space(node.outputs[0], size)
            for i in range(slices):
                ctx.link(sub, 0, view.space, i * size, size)
            mapped = View(sub, j + 1)
    if mapped is None:
        ctx.block(view.space, f"channel axis reshaped by {node}: cannot map indices (split across axes)")
        return
    if node.op == "Reshape":
        kind, value = _shape_entry(ctx, node.inputs[1], mapped.axis)
        if kind == "const" and value > 0:
            if ctx.const(node.inputs[1]) is None:
                ctx.block(mapped.space, f"{node} builds its target shape at run time with the channel count "
                          f"{value} as a constant")
                return
            ctx.member(node, "pass-through", mapped.space, kind="reshape", input_index=1, axis=mapped.axis,
                       outer=mapped.outer, inner=mapped.inner)
        elif kind == "unknown":
            ctx.block(mapped.space, f"{node} has a target shape computed at run time that cannot be followed")
            return
    ctx.set_view(node.outputs[0], mapped)


def concat(ctx: TraceContext, node: Node) -> None:
    """Concat on the channel axis: a new space whose ranges are the inputs; elsewhere a join."""
    out = node.outputs[0]
    rank = len(ctx.shape(out))
    axis = node.attr("axis") % rank
    views = [ctx.view(n) for n in node.inputs]
    if all(v is None for v in views):
        return
    if any(v is not None and v.axis != axis for v in views):
        elementwise(ctx, node)  # same channels in every input, concatenated along another axis
        return
    if any(v is not None and not v.plain for v in views):
        for v in views:
            if v is not None:
                ctx.block(v.space, f"{node} concatenates flattened channel blocks")
        return
    space = ctx.new_space(out, ctx.shape(out)[axis])
    offset = 0
    for name, view in zip(node.inputs, views, strict=True):
        size = ctx.shape(name)[axis]
        if view is None:
            view = View(ctx.new_space(name, size, f"{node} concatenates '{name}', which is not traced"), axis)
        ctx.link(space, offset, view.space, 0, size)
        offset += size
    ctx.set_view(out, View(space, axis))


def split(ctx: TraceContext, node: Node) -> None:
    """Split on the channel axis: each output is a new space linked to its range of the input."""
    view = ctx.view(node.inputs[0])
    if view is None:
        return
    rank = len(ctx.shape(node.inputs[0]))
    if node.attr("axis", 0) % rank != view.axis:
        for o in node.outputs:
            ctx.set_view(o, view)
        return
    sizes = [ctx.shape(o)[view.axis] for o in node.outputs]
    bounds = np.cumsum([0, *sizes])
    if view.outer != 1 or any(b % view.inner for b in bounds):
        ctx.block(view.space, f"{node} splits flattened channel blocks")
        return
    for o, lo, size in zip(node.outputs, bounds, sizes, strict=False):  # whole channels of `inner` positions
        space = ctx.new_space(o, size // view.inner)
        ctx.link(space, 0, view.space, lo // view.inner, size // view.inner)
        ctx.set_view(o, View(space, view.axis, 1, view.inner))
    ctx.member(node, "pass-through", view.space, kind="split", axis=view.axis)


def slice_(ctx: TraceContext, node: Node) -> None:
    """Slice: untouched channel axis passes through; a unit-step range of it becomes a linked space."""
    view = ctx.view(node.inputs[0])
    if view is None:
        return
    shape = ctx.shape(node.inputs[0])
    consts = [ctx.const(n) if i < len(node.inputs) and n else None for i, n in enumerate(node.inputs[1:5])]
    consts += [None] * (4 - len(consts))
    starts, ends, axes, steps = consts
    if starts is None or ends is None or (len(node.inputs) > 3 and node.inputs[3] and axes is None) \
            or (len(node.inputs) > 4 and node.inputs[4] and steps is None):
        ctx.block(view.space, f"{node} has slice bounds that are not constant")
        return
    axes = [int(a) % len(shape) for a in (axes if axes is not None else range(len(starts)))]
    if view.axis not in axes:
        ctx.set_view(node.outputs[0], view)
        return
    k = axes.index(view.axis)
    step = int(steps[k]) if steps is not None else 1
    length = ctx.shape(node.outputs[0])[view.axis]
    if step != 1 or not view.plain:
        ctx.block(view.space, f"{node} slices the channel axis with a step or across flattened blocks")
        return
    start = int(np.clip(starts[k] + shape[view.axis] if starts[k] < 0 else starts[k], 0, shape[view.axis]))
    space = ctx.new_space(node.outputs[0], length)
    ctx.link(space, 0, view.space, start, length)
    ctx.member(node, "pass-through", view.space, kind="slice", axis=k)
    ctx.set_view(node.outputs[0], View(space, view.axis))


def gather(ctx: TraceContext, node: Node) -> None:
    """Gather: an embedding table lookup makes a space of its columns; other gathers move the axis."""
    data, indices = node.inputs[0], node.inputs[1]
    axis = node.attr("axis", 0)
    table = ctx.const(data)
    if table is not None and table.ndim == 2 and axis % 2 == 0 and ctx.view(indices) is None:
        space = ctx.new_space(node.outputs[0], table.shape[1])
        ctx.member(node, "producer", space, input_index=0, axis=1)
        ctx.set_view(node.outputs[0], View(space, len(ctx.shape(node.outputs[0])) - 1))
        return
    view = ctx.view(data)
    if view is None:
        if ctx.view(indices) is not None:
            _block_inputs(ctx, node, "uses traced channels as indices")
        return
    rank = len(ctx.shape(data))
    axis %= rank
    if view.axis == axis:
        ctx.block(view.space, f"{node} gathers along the channel axis")
        return
    shift = len(ctx.shape(indices) or ()) - 1 if view.axis > axis else 0
    ctx.set_view(node.outputs[0], View(view.space, view.axis + shift, view.outer, view.inner))


# -- producers and consumers -------------------------------------------------------------------

def conv(ctx: TraceContext, node: Node) -> None:
    """Conv / ConvTranspose: input channels are consumed, output channels produced; a depthwise conv
    passes channels through; a grouped conv prunes every group alike (its group slices are linked)."""
    x, w = node.inputs[0], node.inputs[1]
    weight = ctx.const(w)
    view = ctx.view(x)
    if weight is None:
        _block_inputs(ctx, node, "has weights that are not constant")
        return
    if view is not None and view.axis != 1:
        ctx.block(view.space, f"{node} reads channels on axis 1, not where they are traced")
        view = None
    g = int(node.attr("group", 1))
    transposed = node.op == "ConvTranspose"
    cin = weight.shape[0] if transposed else weight.shape[1] * g
    cout = weight.shape[1] * g if transposed else weight.shape[0]
    out_axis, in_axis = (1, 0) if transposed else (0, 1)
    has_bias = len(node.inputs) > 2 and bool(node.inputs[2])
    if g > 1 and g == cin == cout:  # depthwise: channel c in → channel c out
        if view is None:
            view = View(ctx.new_space(node.outputs[0], cout, f"{node}: depthwise input not traced"), 1)
        blocks = {"outer": view.outer, "inner": view.inner}
        ctx.member(node, "pass-through", view.space, input_index=1, axis=0, **blocks)
        if has_bias:
            ctx.member(node, "pass-through", view.space, input_index=2, axis=0, **blocks)
        ctx.member(node, "pass-through", view.space, kind="group", **blocks)
        ctx.scales(node, (1.0, (view.space,)))
        ctx.set_view(node.outputs[0], view)
        return
    if g > 1 and cin == g and cout % g == 0 and not transposed:
        if view is not None:
            ctx.block(view.space, f"{node} is a depthwise conv with channel multiplier {cout // g}")
        ctx.set_view(node.outputs[0], View(ctx.new_space(node.outputs[0], cout, f"{node} has a channel multiplier"), 1))
        return
    terms = []
    if view is not None:
        size = ctx.spaces[view.space].size
        if g > 1 and (view.outer != 1 or size % g):
            ctx.block(view.space, f"{node} splits interleaved channels into {g} groups")
        else:
            # each group reads one slice of the space (an interleaved view: whole blocks of `inner`)
            for k in range(1, g):
                ctx.link(view.space, 0, view.space, k * (size // g), size // g)
            ctx.member(node, "consumer", view.space, input_index=1, axis=in_axis,
                       groups=1 if transposed else g, outer=view.outer, inner=view.inner)
            terms.append(view.space)
    space = ctx.new_space(node.outputs[0], cout)
    for k in range(1, g):
        ctx.link(space, 0, space, k * (cout // g), cout // g)
    ctx.member(node, "producer", space, input_index=1, axis=out_axis, groups=g if transposed else 1)
    if has_bias:
        ctx.member(node, "producer", space, input_index=2, axis=0)
    ctx.scales(node, (1.0, (*terms, space)))
    ctx.set_view(node.outputs[0], View(space, 1))


def gemm(ctx: TraceContext, node: Node) -> None:
    """Gemm: A's K axis is consumed (B rows/cols sliced), output columns are a new space."""
    a, b = node.inputs[0], node.inputs[1]
    weight = ctx.const(b)
    view = ctx.view(a)
    trans_a, trans_b = node.attr("transA", 0), node.attr("transB", 0)
    if weight is None:
        _block_inputs(ctx, node, "multiplies two activations")
        return
    terms = []
    if view is not None:
        if view.axis == (0 if trans_a else 1):
            ctx.member(node, "consumer", view.space, input_index=1, axis=1 if trans_b else 0,
                       outer=view.outer, inner=view.inner)
            terms.append(view.space)
        else:
            ctx.block(view.space, f"{node} reads the traced channels as rows")
    n = weight.shape[0] if trans_b else weight.shape[1]
    space = ctx.new_space(node.outputs[0], n)
    ctx.member(node, "producer", space, input_index=1, axis=0 if trans_b else 1)
    bias = ctx.const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
    if bias is not None and bias.ndim > 0 and bias.shape[-1] == n and n > 1:
        ctx.member(node, "producer", space, input_index=2, axis=bias.ndim - 1)
    ctx.scales(node, (1.0, (*terms, space)))
    ctx.set_view(node.outputs[0], View(space, 1))


def matmul(ctx: TraceContext, node: Node) -> None:
    """MatMul with a constant operand: its contracted axis is consumed, the other one produced.
    Two activations: a traced contracted axis blocks (attention scores), others pass through."""
    a, b = node.inputs
    wa, wb = ctx.const(a), ctx.const(b)
    va, vb = ctx.view(a), ctx.view(b)
    out = node.outputs[0]
    ra, rb, rout = len(ctx.shape(a)), len(ctx.shape(b)), len(ctx.shape(out))
    if min(ra, rb) < 2:
        _block_inputs(ctx, node, "is a matrix-vector product")
        return
    if wb is not None or wa is not None:
        act_view, w_idx, contracted, w_in_axis, w_out_axis, out_axis = (
            (va, 1, ra - 1, rb - 2, rb - 1, rout - 1) if wb is not None else (vb, 0, rb - 2, ra - 1, ra - 2, rout - 2))
        terms = []
        if act_view is not None:
            if act_view.axis == contracted:
                ctx.member(node, "consumer", act_view.space, input_index=w_idx, axis=w_in_axis,
                           outer=act_view.outer, inner=act_view.inner)
                terms.append(act_view.space)
            else:
                ctx.block(act_view.space, f"{node} keeps the traced channels on an axis it does not contract")
        weight = wb if wb is not None else wa
        space = ctx.new_space(out, weight.shape[w_out_axis])
        ctx.member(node, "producer", space, input_index=w_idx, axis=w_out_axis)
        ctx.scales(node, (1.0, (*terms, space)))
        ctx.set_view(out, View(space, out_axis))
        return
    if (va is not None and va.axis == ra - 1) or (vb is not None and vb.axis == rb - 2):
        _block_inputs(ctx, node, "contracts two activations over the channel axis (attention)")
        return
    if va is not None and vb is not None:
        _block_inputs(ctx, node, "multiplies two traced activations")
        return
    if va is not None and va.axis == ra - 2:
        ctx.set_view(out, View(va.space, rout - 2, va.outer, va.inner))
        ctx.scales(node, (1.0, (va.space,)))
    elif vb is not None and vb.axis == rb - 1:
        ctx.set_view(out, View(vb.space, rout - 1, vb.outer, vb.inner))
        ctx.scales(node, (1.0, (vb.space,)))
    else:
        _block_inputs(ctx, node, "batches over the traced channels")


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
            ctx.set_view(o, View(ctx.new_space(o, shape[-1], f"{node}: recurrent hidden units are not prunable"),
                                 len(shape) - 1))


def opaque(ctx: TraceContext, node: Node) -> None:
    """Ops that only read a tensor's shape (Shape, Size): nothing to prune, nothing to block."""


UNARY = ("Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Erf",
         "Gelu", "Softplus", "Softsign", "Mish", "Exp", "Log", "Sqrt", "Neg", "Abs", "Reciprocal", "Floor",
         "Ceil", "Round", "Sign", "Sin", "Cos", "Cast", "Identity", "Dropout", "Not", "IsNaN", "IsInf",
         "ThresholdedRelu", "Shrink")
ELEMENTWISE = ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Clip", "Where",
               "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor", "Mod")
SPATIAL = ("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool",
           "Resize", "Upsample", "Pad", "SpaceToDepth", "DepthToSpace")
REDUCE = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
          "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")

RULES: dict[str, Rule] = {
    **dict.fromkeys(UNARY, unary),
    **dict.fromkeys(ELEMENTWISE, elementwise),
    **dict.fromkeys(SPATIAL, spatial),
    **dict.fromkeys(REDUCE, reduce),
    **dict.fromkeys(("Reshape", "Flatten", "Squeeze", "Unsqueeze"), reshape),
    **dict.fromkeys(("Softmax", "LogSoftmax", "Hardmax", "LayerNormalization"), normalizing),
    **dict.fromkeys(("BatchNormalization", "InstanceNormalization"), per_channel_norm),
    **dict.fromkeys(("LSTM", "GRU", "RNN"), recurrent),
    **dict.fromkeys(("Shape", "Size"), opaque),
    "Transpose": transpose,
    "Concat": concat,
    "Split": split,
    "Slice": slice_,
    "Gather": gather,
    "Conv": conv,
    "ConvTranspose": conv,
    "Gemm": gemm,
    "MatMul": matmul,
}
