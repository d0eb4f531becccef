"""Layers with weights: Conv, ConvTranspose, Gemm, MatMul (and Einsum's MACs). They consume input channels
and produce output channels; Conv, Gemm and MatMul with a constant operand also have a matrix view
(``layers.LinearLayer``) for statistics, the refit and SparseGPT."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import onnx

from ..channels import Edit, Member, Trace, View
from ..graph import attr
from ..tracing import Node, TraceContext
from .base import OpEntry, block_inputs, block_unknown, set_attr


def conv(ctx: TraceContext, node: Node) -> None:
    """Conv / ConvTranspose: input channels are consumed, output channels produced; a depthwise conv
    passes channels through; a grouped conv prunes every group alike (its group slices are linked)."""
    x, w = node.inputs[0], node.inputs[1]
    weight = ctx.const(w)
    view = ctx.view(x)
    if weight is None:
        block_inputs(ctx, node, "has weights that are not constant")
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
        ctx.member(node, "pass-through", view.space, kind=Edit.GROUP, **blocks)
        ctx.scales(node, (1.0, (view.space,)))
        ctx.set_view(node.outputs[0], view)
        return
    if g > 1 and cin == g and cout % g == 0 and not transposed:
        if view is not None:
            ctx.block(view.space, f"{node} is a depthwise conv with channel multiplier {cout // g}")
        ctx.set_view(
            node.outputs[0], View(ctx.new_space(node.outputs[0], cout, f"{node} has a channel multiplier"), 1)
        )
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
            ctx.member(
                node,
                "consumer",
                view.space,
                input_index=1,
                axis=in_axis,
                groups=1 if transposed else g,
                outer=view.outer,
                inner=view.inner,
            )
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
        block_inputs(ctx, node, "multiplies two activations")
        return
    terms = []
    if view is not None:
        if view.axis == (0 if trans_a else 1):
            ctx.member(
                node,
                "consumer",
                view.space,
                input_index=1,
                axis=1 if trans_b else 0,
                outer=view.outer,
                inner=view.inner,
            )
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
        block_inputs(ctx, node, "is a matrix-vector product")
        return
    if wb is not None or wa is not None:
        act_view, w_idx, contracted, w_in_axis, w_out_axis, out_axis = (
            (va, 1, ra - 1, rb - 2, rb - 1, rout - 1)
            if wb is not None
            else (vb, 0, rb - 2, ra - 1, ra - 2, rout - 2)
        )
        terms = []
        if act_view is not None:
            if act_view.axis == contracted:
                ctx.member(
                    node,
                    "consumer",
                    act_view.space,
                    input_index=w_idx,
                    axis=w_in_axis,
                    outer=act_view.outer,
                    inner=act_view.inner,
                )
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
        block_inputs(ctx, node, "contracts two activations over the channel axis (attention)")
        return
    if va is not None and vb is not None:
        block_inputs(ctx, node, "multiplies two traced activations")
        return
    if va is not None and va.axis == ra - 2:
        ctx.set_view(out, View(va.space, rout - 2, va.outer, va.inner))
        ctx.scales(node, (1.0, (va.space,)))
    elif vb is not None and vb.axis == rb - 1:
        ctx.set_view(out, View(vb.space, rout - 1, vb.outer, vb.inner))
        ctx.scales(node, (1.0, (vb.space,)))
    else:
        block_inputs(ctx, node, "batches over the traced channels")


def conv_macs(node, sh):
    """Conv: every output element is a dot product over (Cin/g)·k_h·k_w inputs; W is [Cout, Cin/g, k...]."""
    return math.prod(sh[node.output[0]]) * math.prod(sh[node.input[1]][1:])


def conv_transpose_macs(node, sh):
    """ConvTranspose: every input element scatters into (Cout/g)·k_h·k_w outputs; W is [Cin, Cout/g, k...]."""
    return math.prod(sh[node.input[0]]) * math.prod(sh[node.input[1]][1:])


def gemm_macs(node, sh):
    """Gemm: Y[M,N] = A'[M,K]·B'[K,N]  →  M·N·K."""
    a = sh[node.input[0]]
    k = a[0] if attr(node, "transA", 0) else a[1]
    return math.prod(sh[node.output[0]]) * k


def matmul_macs(node, sh):
    """MatMul (numpy semantics, batched or not, weights or activations): prod(output)·K, K = A's last dim."""
    return math.prod(sh[node.output[0]]) * sh[node.input[0]][-1]


def einsum_macs(node, sh):
    """Einsum: one multiply per point of the full index space (product of every distinct index's size)."""
    lhs = attr(node, "equation").decode().replace(" ", "").split("->")[0]
    sizes: dict[str, int] = {}
    for term, name in zip(lhs.split(","), node.input, strict=True):
        if "..." in term:
            return None
        for letter, dim in zip(term, sh[name], strict=True):
            sizes[letter] = dim
    return math.prod(sizes.values())


def edit_group(edit, trace: Trace, m: Member, kept: Mapping[int, np.ndarray]) -> None:
    """A depthwise conv's group count follows its kept channels."""
    set_attr(edit.nodes[m.node], "group", int(m.outer * len(kept[m.space]) * m.inner))


def _bias(node: onnx.NodeProto, index: int = 2) -> str | None:
    return node.input[index] if len(node.input) > index and node.input[index] else None


def _fields(node: onnx.NodeProto, op: str, bias: str | None, groups: int, **extra) -> dict:
    """The ``layers.LinearLayer`` fields of a node whose input 0 is the activation and input 1 the weight."""
    io = dict(input=node.input[0], output=node.output[0], weight=node.input[1])
    return dict(node=node.name, op=op, **io, bias=bias, groups=groups, **extra)


def conv_view(node: onnx.NodeProto, attrs: dict, inits: Mapping[str, onnx.TensorProto]) -> dict | None:
    """A Conv with constant weights and explicit padding: W [groups, out/g, (in/g)·k…] on im2col patches."""
    if node.input[1] not in inits or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None  # implicit padding is not handled by the im2col view
    w = inits[node.input[1]]
    nd = len(w.dims) - 2
    return _fields(
        node,
        "Conv",
        _bias(node),
        int(attrs.get("group", 1)),
        kernel=tuple(w.dims[2:]),
        strides=tuple(attrs.get("strides", [1] * nd)),
        pads=tuple(attrs.get("pads", [0] * 2 * nd)),
        dilations=tuple(attrs.get("dilations", [1] * nd)),
        in_per_group=int(w.dims[1]),
    )


def gemm_view(node: onnx.NodeProto, attrs: dict, inits: Mapping[str, onnx.TensorProto]) -> dict | None:
    """A Gemm with a constant B, no transA, unit alpha/beta and a row-vector (or no) C."""
    if (
        node.input[1] not in inits
        or attrs.get("transA", 0)
        or attrs.get("alpha", 1.0) != 1.0
        or attrs.get("beta", 1.0) != 1.0
    ):
        return None
    c = _bias(node)
    if c is not None and (c not in inits or len(inits[c].dims) > 1 and inits[c].dims[0] != 1):
        return None
    return _fields(node, "Gemm", c, 1, trans_b=bool(attrs.get("transB", 0)))


def matmul_view(node: onnx.NodeProto, attrs: dict, inits: Mapping[str, onnx.TensorProto]) -> dict | None:
    """A MatMul of an activation by a constant 2-D matrix on the right."""
    a, b = node.input
    if b in inits and a not in inits and len(inits[b].dims) == 2:
        return _fields(node, "MatMul", None, 1)
    return None


ENTRIES = {
    "Conv": OpEntry(
        conv,
        macs=conv_macs,
        linear=conv_view,
        edits={Edit.GROUP: edit_group},
        weight_layer=True,
        quantize="symmetric per-channel INT8 weights",
    ),
    "ConvTranspose": OpEntry(
        conv,
        macs=conv_transpose_macs,
        edits={Edit.GROUP: edit_group},
        weight_layer=True,
        quantize="symmetric per-channel INT8 weights; grouped ones stay in float "
        "(onnxruntime's per-channel quantizer cannot size their scales)",
    ),
    "Gemm": OpEntry(
        gemm,
        macs=gemm_macs,
        linear=gemm_view,
        weight_layer=True,
        quantize="symmetric per-channel INT8 weights",
    ),
    "MatMul": OpEntry(
        matmul,
        macs=matmul_macs,
        linear=matmul_view,
        weight_layer=True,
        quantize="symmetric per-channel INT8 weights; a MatMul of two activations (attention) "
        "makes an attention graph, where only weight layers and their inputs are quantized",
    ),
    "Einsum": OpEntry(block_unknown, macs=einsum_macs),
}
