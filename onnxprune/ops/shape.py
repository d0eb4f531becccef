"""Ops that move, cut or join the channel axis: Transpose, Reshape and kin, Concat, Split, Slice, Gather."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from onnx import numpy_helper

from ..channels import Edit, Member, Trace, View
from ..tracing import Node, TraceContext
from .base import OpEntry, block_inputs, set_attr
from .pointwise import elementwise


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
    inner_total = view.inner * math.prod(in_shape[a + 1 :])
    size = in_shape[a] // (view.outer * view.inner)
    for b in range(len(out_shape)):
        before, after = math.prod(out_shape[:b]), math.prod(out_shape[b + 1 :])
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
    before, after = math.prod(in_shape[:a]), math.prod(in_shape[a + 1 :])
    for j in range(len(out_shape) - 1):
        if (
            out_shape[j] > 1
            and out_shape[j + 1] > 1
            and out_shape[j] * out_shape[j + 1] == in_shape[a]
            and math.prod(out_shape[:j]) == before
            and math.prod(out_shape[j + 2 :]) == after
        ):
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
                ctx.block(
                    mapped.space,
                    f"{node} builds its target shape at run time with the channel count "
                    f"{value} as a constant",
                )
                return
            ctx.member(
                node,
                "pass-through",
                mapped.space,
                kind=Edit.RESHAPE,
                input_index=1,
                axis=mapped.axis,
                outer=mapped.outer,
                inner=mapped.inner,
            )
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
    ctx.member(node, "pass-through", view.space, kind=Edit.SPLIT, axis=view.axis)


def slice_(ctx: TraceContext, node: Node) -> None:
    """Slice: untouched channel axis passes through; a unit-step range of it becomes a linked space."""
    view = ctx.view(node.inputs[0])
    if view is None:
        return
    shape = ctx.shape(node.inputs[0])
    consts = [ctx.const(n) if i < len(node.inputs) and n else None for i, n in enumerate(node.inputs[1:5])]
    consts += [None] * (4 - len(consts))
    starts, ends, axes, steps = consts
    if (
        starts is None
        or ends is None
        or (len(node.inputs) > 3 and node.inputs[3] and axes is None)
        or (len(node.inputs) > 4 and node.inputs[4] and steps is None)
    ):
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
    ctx.member(node, "pass-through", view.space, kind=Edit.SLICE, axis=k)
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
            block_inputs(ctx, node, "uses traced channels as indices")
        return
    rank = len(ctx.shape(data))
    axis %= rank
    if view.axis == axis:
        ctx.block(view.space, f"{node} gathers along the channel axis")
        return
    shift = len(ctx.shape(indices) or ()) - 1 if view.axis > axis else 0
    ctx.set_view(node.outputs[0], View(view.space, view.axis + shift, view.outer, view.inner))


def edit_reshape(edit, trace: Trace, m: Member, kept: Mapping[int, np.ndarray]) -> None:
    """A constant target shape: the channel entry becomes outer·kept·inner."""
    shape = edit.get(m.node, m.input_index)
    shape[m.axis] = m.outer * len(kept[m.space]) * m.inner


def edit_split(edit, trace: Trace, m: Member, kept: Mapping[int, np.ndarray]) -> None:
    """Split sizes follow each output's kept channels (stated explicitly where the split was equal)."""
    node = edit.nodes[m.node]
    views = [trace.views[o] for o in node.output]
    sizes = np.array([v.outer * len(kept[v.space]) * v.inner for v in views], np.int64)
    if len(node.input) > 1 and node.input[1]:
        edit.set(m.node, 1, sizes)
    elif any(a.name == "split" for a in node.attribute):
        set_attr(node, "split", sizes.tolist())
    else:  # equal split (or num_outputs): state the sizes explicitly
        for i, a in enumerate(node.attribute):
            if a.name == "num_outputs":
                del node.attribute[i]
                break
        name = f"{m.node}__split_sizes"
        edit.model.graph.initializer.append(numpy_helper.from_array(sizes, name))
        del node.input[1:]
        node.input.append(name)


def edit_slice(edit, trace: Trace, m: Member, kept: Mapping[int, np.ndarray]) -> None:
    """Slice bounds on the channel axis: the start moves to the kept channels before it, the length is the
    output's kept count."""
    node = edit.nodes[m.node]
    starts, ends = edit.get(m.node, 1), edit.get(m.node, 2)
    full, k = trace.spaces[m.space].size, kept[m.space]
    start = int(starts[m.axis]) + (full if starts[m.axis] < 0 else 0)
    start = min(max(start, 0), full)
    new_start = int(np.sum(k < start))
    starts[m.axis] = new_start
    ends[m.axis] = new_start + len(kept[trace.space_of(node.output[0])])


ENTRIES = {
    **dict.fromkeys(("Flatten", "Squeeze", "Unsqueeze"), OpEntry(reshape)),
    "Reshape": OpEntry(reshape, edits={Edit.RESHAPE: edit_reshape}),
    "Transpose": OpEntry(transpose),
    "Concat": OpEntry(concat),
    "Split": OpEntry(split, edits={Edit.SPLIT: edit_split}),
    "Slice": OpEntry(slice_, edits={Edit.SLICE: edit_slice}),
    "Gather": OpEntry(gather),
}
