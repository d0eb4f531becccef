"""Small synthetic ONNX graphs for tests: one builder per structural pattern.

Every builder takes ``(seed=0, opset=17)`` and returns an ``onnx.ModelProto`` that passes
``onnx.checker.check_model(full_check=True)`` and runs in onnxruntime. Weights are float32 from
``numpy.random.default_rng(seed)`` with values chosen so that bugs show: random BatchNorm statistics
(var in [0.5, 2], gamma in [0.5, 1.5], nonzero beta/mean), nonzero biases, std 1/sqrt(fan_in)
weights. Every input and output has a dynamic batch dim named ``"N"``; sizes are small (channels
4-16, spatial 8-16). Node output tensors are named like their node (``"stem"``, ``"stem/bn"``),
weights ``"<node>.weight"`` / ``"<node>.bias"``.

    from models import synthetic
    model = synthetic.build("residual_add", seed=0)          # any name in synthetic.names()
    feeds = synthetic.random_inputs(model, batch=2)

Variants (``with_*``) return a new ModelProto and never mutate their argument. They record
themselves in ``metadata_props`` so that ``with_opset`` can rebuild the graph at another opset and
replay them. Supported opsets: 11 .. onnx's newest; ops whose form differs are emitted in the form
of that opset (Split/Squeeze axes as attributes before 13, HardSwish as HardSigmoid*x before 14,
LayerNormalization decomposed into ReduceMean/Sub/Pow/Sqrt/Div as torch exports it before 17).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import external_data_helper, helper

from .synthetic_builder import META_GRAPH, META_SEED, META_VARIANTS, MIN_OPSET, Builder, UnsupportedOpset

__all__ = [
    "GRAPHS",
    "MIN_OPSET",
    "Builder",
    "UnsupportedOpset",
    "build",
    "names",
    "output_shapes",
    "paddle_style_model",
    "random_inputs",
    "with_constant_weights",
    "with_external_data",
    "with_identity_noise",
    "with_opset",
    "with_static_batch",
]


# ---- builders ------------------------------------------------------------------------------


def residual_add(seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    """ResNet basic blocks: identity-shortcut Add and projection-shortcut (strided 1x1 Conv+BN) Add.

    Pattern: Conv+BN+Relu stem, block 1 (identity Add), block 2 (stride 2, projection Add; its
    conv2 has a Conv bias before the BN), GAP -> Flatten -> Gemm(transB=1). Output fc [N,5].
    Channel groups: {stem, b1.conv2, b1.add; read by b1.conv1, b2.conv1, b2.proj} (8, coupled by
    the identity Add); {b1.conv1} (8, free); {b2.conv1} (12, free); {b2.conv2, b2.proj, b2.add;
    read by fc via GAP+Flatten} (12).
    """
    b = Builder(seed, opset)
    x = b.input("x", ["N", 3, 16, 16])
    s = b.cba(x, 3, 8, name="stem")
    h = b.cba(s, 8, 8, name="b1.conv1")
    h = b.cba(h, 8, 8, act=None, name="b1.conv2")
    r = b.op("Relu", [b.op("Add", [h, s], "b1.add")], "b1.relu")
    h = b.cba(r, 8, 12, stride=2, name="b2.conv1")
    h = b.cba(h, 12, 12, act=None, bias=True, name="b2.conv2")
    p = b.cba(r, 8, 12, k=1, stride=2, act=None, name="b2.proj")
    r = b.op("Relu", [b.op("Add", [h, p], "b2.add")], "b2.relu")
    b.output(b.gap_fc(r, 12, 5), ["N", 5])
    return b.finish(residual_add)


def dense_concat(seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    """DenseNet block: each layer reads the Concat of all earlier feature maps.

    Pattern: stem(6) -> dense1(4) reads stem; cat1 = Concat(stem, dense1) [10];
    dense2(4) reads cat1; cat2 = Concat(stem, dense1, dense2) [14]; transition 1x1 Conv+BN+Relu
    (8) -> AveragePool 2 -> head 1x1 Conv (4). Output head [N,4,8,8].
    Channel groups: {stem} (6; read at offset 0 of cat1 and cat2 and by dense1);
    {dense1} (4; offsets 6..9 of cat1 and cat2); {dense2} (4; offsets 10..13 of cat2);
    {trans} (8); {head} (4, graph output).
    """
    b = Builder(seed, opset)
    x = b.input("x", ["N", 3, 16, 16])
    c0 = b.cba(x, 3, 6, name="stem")
    l1 = b.cba(c0, 6, 4, name="dense1")
    l2 = b.cba(b.op("Concat", [c0, l1], "cat1", axis=1), 10, 4, name="dense2")
    t = b.cba(b.op("Concat", [c0, l1, l2], "cat2", axis=1), 14, 8, k=1, name="trans")
    t = b.op("AveragePool", [t], "trans/pool", kernel_shape=[2, 2], strides=[2, 2])
    b.output(b.conv(t, 8, 4, k=1, name="head"), ["N", 4, 8, 8])
    return b.finish(dense_concat)


def depthwise_se(seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    """MobileNetV3 block: depthwise conv + squeeze-excite (GAP->Conv->Relu->Conv->Sigmoid->Mul).

    Pattern: stem Conv+BN+HardSwish (stride 2) -> depthwise 3x3 (group=8)+BN+Relu -> SE(8->4->8)
    -> pointwise Conv+BN (12) -> GAP -> Flatten -> Gemm. Output fc [N,5].
    Channel groups: {stem, dw (pass-through), se/fc1 input, se/fc2 output, se/mul, pw input} (8:
    the SE gate multiplies channelwise, so its producer se/fc2 joins the group); {se/fc1} (4, SE
    hidden); {pw; read by fc} (12).
    """
    b = Builder(seed, opset)
    x = b.input("x", ["N", 3, 16, 16])
    s = b.cba(x, 3, 8, stride=2, act="hardswish", name="stem")
    d = b.cba(s, 8, 8, group=8, name="dw")
    p = b.cba(b.se(d, 8, 4), 8, 12, k=1, act=None, name="pw")
    b.output(b.gap_fc(p, 12, 5), ["N", 5])
    return b.finish(depthwise_se)


def grouped_conv(seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    """Grouped convolutions with 1 < groups < C (ResNeXt / ShuffleNet style).

    Pattern: stem (8) -> gconv1 3x3 8->12 groups=4 (2 in / 3 out per group) -> gconv2 1x1 12->12
    groups=2 (6 in per group = two gconv1 groups) -> head 1x1 (6). Output head [N,6,8,8].
    Channel groups: {stem} (8, read by gconv1 in 4 groups of 2: prune uniformly per group);
    {gconv1} (12, 4 groups of 3 out, read by gconv2 in 2 groups of 6); {gconv2} (12, 2 groups of 6);
    {head} (6, graph output).
    """
    b = Builder(seed, opset)
    x = b.input("x", ["N", 3, 8, 8])
    s = b.cba(x, 3, 8, name="stem")
    g = b.cba(s, 8, 12, group=4, name="gconv1")
    g = b.cba(g, 12, 12, k=1, group=2, name="gconv2")
    b.output(b.conv(g, 12, 6, k=1, name="head"), ["N", 6, 8, 8])
    return b.finish(grouped_conv)


def split_slice(seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    """Split (sizes as input from opset 13, attribute before) and channel Slices, re-joined.

    Pattern: stem (12) -> Split [4, 8] on axis 1 -> a: Conv+BN+Relu (4); c: Slice [0:4] and
    Slice [4:8] of c added together (4) -> Concat(a, sum) (8) -> head 1x1 Conv (6) -> spatial Slice
    [1:-1, 1:-1] (channel-preserving). Output head/crop [N,6,6,6].
    Channel groups: stem channels 0..3 (read by branch_a); stem channels 4+i and 8+i for i<4
    (coupled pairwise by slice_add, read at offsets 4..7 of cat); {branch_a} (4; offsets 0..3 of
    cat); {head} (6, graph output).
    """
    b = Builder(seed, opset)
    x = b.input("x", ["N", 3, 8, 8])
    a, c = b.split(b.cba(x, 3, 12, name="stem"), [4, 8], axis=1, name="split")
    a = b.cba(a, 4, 4, name="branch_a")
    ch = b.const("axes.c", [1], np.int64)
    lo = b.op(
        "Slice",
        [c, b.const("slice_lo.starts", [0], np.int64), b.const("slice_lo.ends", [4], np.int64), ch],
        "slice_lo",
    )
    hi = b.op(
        "Slice",
        [
            c,
            b.const("slice_hi.starts", [4], np.int64),
            b.const("slice_hi.ends", [np.iinfo(np.int64).max], np.int64),
            ch,
            b.const("slice_hi.steps", [1], np.int64),
        ],
        "slice_hi",
    )
    cat = b.op("Concat", [a, b.op("Add", [lo, hi], "slice_add")], "cat", axis=1)
    h = b.conv(cat, 8, 6, k=1, name="head")
    h = b.op(
        "Slice",
        [
            h,
            b.const("crop.starts", [1, 1], np.int64),
            b.const("crop.ends", [-1, -1], np.int64),
            b.const("crop.axes", [2, 3], np.int64),
        ],
        "head/crop",
    )
    b.output(h, ["N", 6, 6, 6])
    return b.finish(split_slice)


def flatten_gemm(seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    """Conv features flattened into fully connected layers: Flatten -> Gemm(transB=1) -> Gemm(transB=0).

    Pattern: Conv+BN+Relu (4) -> MaxPool 2 -> Flatten [N,64] -> fc1 Gemm transB=1 (16) -> Relu ->
    fc2 Gemm transB=0 (10). Output fc2 [N,10].
    Channel groups: {conv; read by fc1 as 4 blocks of 16 columns (C*H*W order)}; {fc1} (16; read
    by fc2 as rows of B since transB=0); {fc2} (10, graph output).
    """
    b = Builder(seed, opset)
    x = b.input("x", ["N", 3, 8, 8])
    c = b.cba(x, 3, 4, name="conv")
    f = b.op(
        "Flatten", [b.op("MaxPool", [c], "pool", kernel_shape=[2, 2], strides=[2, 2])], "flatten", axis=1
    )
    h = b.op("Relu", [b.gemm(f, 64, 16, "fc1", trans_b=1)], "fc1/relu")
    b.output(b.gemm(h, 16, 10, "fc2", trans_b=0), ["N", 10])
    return b.finish(flatten_gemm)


def reshape_matmul(seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    """Reshape [0, -1] used as flatten, then MatMul+Add linear layers (torch x.view(N, -1) @ W).

    Pattern: Conv+BN+Relu (6) -> AveragePool 2 -> Reshape [N,96] -> fc1 MatMul+Add (12) -> Relu ->
    fc2 MatMul+Add (5). Output fc2 [N,5].
    Channel groups: {conv; read by fc1 as 6 blocks of 16 rows of W}; {fc1} (12; rows of fc2 W);
    {fc2} (5, graph output).
    """
    b = Builder(seed, opset)
    x = b.input("x", ["N", 3, 8, 8])
    c = b.op("AveragePool", [b.cba(x, 3, 6, name="conv")], "pool", kernel_shape=[2, 2], strides=[2, 2])
    r = b.op("Reshape", [c, b.const("reshape.shape", [0, -1], np.int64)], "reshape")
    h = b.op("Relu", [b.linear(r, 96, 12, "fc1")], "fc1/relu")
    b.output(b.linear(h, 12, 5, "fc2"), ["N", 5])
    return b.finish(reshape_matmul)


def transpose_nhwc(seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    """Channels moved to the last axis for a MatMul (1x1 conv as Linear in NHWC), then moved back.

    Pattern: Conv+BN+Relu (8) -> Transpose [0,2,3,1] -> fc MatMul+Add on the last axis (12) ->
    Relu -> Transpose [0,3,1,2] -> head 1x1 Conv (6). Output head [N,6,8,8].
    Channel groups: {conv; axis 1 moves to axis 3, read by fc as rows of W}; {fc; axis 3 moves back
    to axis 1, read by head}; {head} (6, graph output).
    """
    b = Builder(seed, opset)
    x = b.input("x", ["N", 3, 8, 8])
    t = b.op("Transpose", [b.cba(x, 3, 8, name="conv")], "to_nhwc", perm=[0, 2, 3, 1])
    h = b.op("Relu", [b.linear(t, 8, 12, "fc")], "fc/relu")
    h = b.op("Transpose", [h], "to_nchw", perm=[0, 3, 1, 2])
    b.output(b.conv(h, 12, 6, k=1, name="head"), ["N", 6, 8, 8])
    return b.finish(transpose_nhwc)


def resize_fpn(seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    """FPN top-down path: lateral 1x1 convs + Resize(nearest, x2) + Add, two output heads.

    Pattern: c1 (8, 16x16) -> c2 (12, s2) -> c3 (16, s2); lat3(c3); p2 = lat2(c2) + up(lat3);
    p1 = lat1(c1) + up(p2); head1(p1), head2(p2). Both Resizes share one scales initializer.
    Outputs head1 [N,4,16,16], head2 [N,4,8,8].
    Channel groups: {c1}, {c2}, {c3} (read by their lateral and the next stage); {lat1, lat2, lat3,
    p1, p2} (8, coupled through Resize + Add, read by head1 and head2); {head1}, {head2} (outputs).
    """
    b = Builder(seed, opset)
    x = b.input("x", ["N", 3, 16, 16])
    c1 = b.cba(x, 3, 8, name="c1")
    c2 = b.cba(c1, 8, 12, stride=2, name="c2")
    c3 = b.cba(c2, 12, 16, stride=2, name="c3")
    p3 = b.conv(c3, 16, 8, k=1, name="lat3")
    p2 = b.op("Add", [b.conv(c2, 12, 8, k=1, name="lat2"), b.upsample2(p3, "up3")], "p2")
    p1 = b.op("Add", [b.conv(c1, 8, 8, k=1, name="lat1"), b.upsample2(p2, "up2")], "p1")
    b.output(b.conv(p1, 8, 4, name="head1"), ["N", 4, 16, 16])
    b.output(b.conv(p2, 8, 4, name="head2"), ["N", 4, 8, 8])
    return b.finish(resize_fpn)


def channel_shuffle(seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    """ShuffleNet channel shuffle: Reshape [N,g,C/g,H,W] -> Transpose [0,2,1,3,4] -> Reshape [N,C,H,W].

    Pattern: stem (8) -> gconv1 1x1 groups=2 -> shuffle (g=2) -> depthwise 3x3+BN -> gconv2 1x1
    groups=2 -> GAP -> Flatten -> Gemm. Output fc [N,5].
    Channel groups: {stem} (4: gconv1's two groups read it alike); {gconv1, the shuffle (channel 2j + k is
    gconv1 channel 4k + j), dw (pass-through), read by gconv2 in 2 groups} (2: a channel of a gconv1 slice,
    the same in both, and gconv2's groups couple shuffled channels 0..3 with 4..7); {gconv2 in 2 groups;
    read by fc} (4).
    """
    b = Builder(seed, opset)
    x = b.input("x", ["N", 3, 8, 8])
    g = b.shuffle(b.cba(b.cba(x, 3, 8, name="stem"), 8, 8, k=1, group=2, name="gconv1"), 2, 4, 8)
    d = b.cba(g, 8, 8, group=8, act=None, name="dw")
    b.output(b.gap_fc(b.cba(d, 8, 8, k=1, group=2, name="gconv2"), 8, 5), ["N", 5])
    return b.finish(channel_shuffle)


def shuffle_residual(seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    """Shuffled channels meeting plain ones: a residual Add, an SE gate and a Split after a channel shuffle.

    Pattern: stem (8) -> gconv 1x1 groups=2 -> shuffle (g=2: channel 2j + k is gconv channel 4k + j) ->
    depthwise 3x3+BN+Relu -> SE (GAP, 1x1 8->4, Relu, 1x1 4->8, Sigmoid, Mul) -> res conv 3x3+BN, Add with
    the shuffled stream, Relu -> Split [4, 4] of the shuffled order -> head 1x1 4->6 (output head [N,6,8,8])
    and GAP -> Flatten -> Gemm 4->5 (output fc [N,5]).
    Channel groups: {stem} (4: gconv's two groups prune alike); {gconv, the shuffle, dw, se/fc2 and res
    outputs (plain channels re-expressed as the shuffled ones), read by se/fc1, res and, through the first
    Split half, head} (2 channels of a gconv slice, each 2 shuffled positions wide); the same through the
    second half, read by fc (2); {se/fc1} (4).
    """
    b = Builder(seed, opset)
    x = b.input("x", ["N", 3, 8, 8])
    g = b.shuffle(b.cba(b.cba(x, 3, 8, name="stem"), 8, 8, k=1, group=2, name="gconv"), 2, 4, 8)
    d = b.se(b.cba(g, 8, 8, group=8, name="dw"), 8, 4)
    r = b.op("Relu", [b.op("Add", [b.cba(d, 8, 8, act=None, name="res"), d], "res/add")], "res/relu")
    first, second = b.split(r, [4, 4], axis=1, name="split")
    b.output(b.conv(first, 4, 6, k=1, name="head"), ["N", 6, 8, 8])
    b.output(b.gap_fc(second, 4, 5), ["N", 5])
    return b.finish(shuffle_residual)


def lstm(seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    """LSTM over a sequence (batch-first input transposed to ONNX's [S,N,F]) with two heads.

    Pattern: x [N,6,8] -> proj MatMul+Add (10) -> Transpose -> LSTM hidden 12 -> Y Squeeze(1) ->
    Transpose -> seq_head MatMul+Add (5); Y_h Squeeze(0) -> cls_head Gemm transB=1 (4).
    Outputs seq_head [N,6,5], cls_head [N,4].
    Channel groups: {proj; read by lstm W columns} (10); {lstm hidden} (12: rows of W/R/B in 4 gate
    blocks and R columns, recurrent -- expected blocked); {seq_head}, {cls_head} (outputs).
    """
    b = Builder(seed, opset)
    hid = 12
    x = b.input("x", ["N", 6, 8])
    p = b.op("Transpose", [b.linear(x, 8, 10, "proj")], "to_seq", perm=[1, 0, 2])
    w = b.weight("lstm.W", [1, 4 * hid, 10], fan_in=hid)
    r = b.weight("lstm.R", [1, 4 * hid, hid], fan_in=hid)
    y, yh = b.op(
        "LSTM", [p, w, r, b.bias("lstm.B", [1, 8 * hid])], "lstm", ["lstm.Y", "lstm.Y_h"], hidden_size=hid
    )
    y = b.op("Transpose", [b.squeeze(y, [1], "lstm/squeeze_y")], "to_batch", perm=[1, 0, 2])
    b.output(b.linear(y, hid, 5, "seq_head"), ["N", 6, 5])
    b.output(b.gemm(b.squeeze(yh, [0], "lstm/squeeze_h"), hid, 4, "cls_head"), ["N", 4])
    return b.finish(lstm)


def transformer_block(seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    """BERT encoder layer as torch exports it: tokens [N,8,16], 2 heads of 8, FFN 32.

    Pattern: ln_emb -> q/k/v MatMul+Add -> Reshape [N,S,2,8] -> Transpose (k to [N,H,Dh,S]) ->
    MatMul -> Div sqrt(8) -> Softmax -> MatMul v -> Transpose -> Reshape [N,S,16] -> attn_out ->
    Add residual -> ln1 -> ffn1 -> Gelu as Div/Erf/Add/Mul/Mul -> ffn2 -> Add residual -> ln2.
    LayerNormalization is decomposed (ReduceMean/Sub/Pow/Add/Sqrt/Div/Mul/Add) before opset 17.
    Output ln2 [N,8,16].
    Channel groups: {hidden D=16: x, all LayerNorms, residual Adds, q/k/v/ffn1 rows, attn_out and
    ffn2 outputs} (normalized by LayerNorm, graph output -- blocked); {q, k output columns} (16,
    2 heads of 8: q and k heads coupled through the score MatMul); {v; read by attn_out rows} (2
    heads of 8); {ffn1; read by ffn2 rows} (32, free).
    """
    b = Builder(seed, opset)
    d, heads, dh = 16, 2, 8
    x = b.input("x", ["N", 8, d])
    h0 = b.layernorm(x, d, "ln_emb")
    split_heads = b.const("heads.shape", [0, 0, heads, dh], np.int64)

    def project(name, perm):
        t = b.op("Reshape", [b.linear(h0, d, d, name), split_heads], f"{name}/heads")
        return b.op("Transpose", [t], f"{name}/transpose", perm=perm)

    q, k, v = project("q", [0, 2, 1, 3]), project("k", [0, 2, 3, 1]), project("v", [0, 2, 1, 3])
    s = b.op("Div", [b.op("MatMul", [q, k], "scores"), b.const("attn.scale", np.sqrt(dh))], "scores/scale")
    c = b.op("MatMul", [b.op("Softmax", [s], "probs", axis=-1), v], "context")
    c = b.op("Transpose", [c], "context/transpose", perm=[0, 2, 1, 3])
    c = b.op("Reshape", [c, b.const("merge.shape", [0, 0, d], np.int64)], "context/merge")
    h1 = b.layernorm(b.op("Add", [b.linear(c, d, d, "attn_out"), h0], "attn_residual"), d, "ln1")
    f = b.linear(h1, d, 2 * d, "ffn1")
    g = b.gelu(f, "gelu")
    f = b.linear(g, 2 * d, d, "ffn2")
    b.output(b.layernorm(b.op("Add", [f, h1], "ffn_residual"), d, "ln2"), ["N", 8, d])
    return b.finish(transformer_block)


def transformer_runtime_shapes(seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    """An attention block whose head split and merge shapes are built at run time, as torch exports write
    them: tokens [N,8,12], 3 heads of 4, q/k/v as MatMul + bias Add, then
    Reshape(x, Concat(Slice(Shape(x), 0, 2), [3, 4])) -> Transpose -> scores -> Softmax -> context ->
    Transpose -> Reshape(c, Concat(Slice(Shape(c), 0, 2), [12])) -> attn_out -> Add residual -> FFN 24 (Relu)
    -> Add residual. Output [N,8,12].
    The head count and head size are constants inside a computed shape: pruning heads must rewrite them.
    """
    b = Builder(seed, opset)
    d, heads, dh = 12, 3, 4
    x = b.input("x", ["N", 8, d])

    def leading(t, name):  # [N, S] of a [N, S, ...] tensor, read at run time
        shape = b.op("Shape", [t], f"{name}/shape")
        return b.op(
            "Slice",
            [shape, b.const(f"{name}.start", [0], np.int64), b.const(f"{name}.end", [2], np.int64)],
            f"{name}/leading",
        )

    def project(name, perm):
        y = b.linear(x, d, d, name)
        target = b.op(
            "Concat",
            [leading(y, name), b.const(f"{name}.heads", [heads, dh], np.int64)],
            f"{name}/target",
            axis=0,
        )
        return b.op(
            "Transpose", [b.op("Reshape", [y, target], f"{name}/heads")], f"{name}/transpose", perm=perm
        )

    q, k, v = project("q", [0, 2, 1, 3]), project("k", [0, 2, 3, 1]), project("v", [0, 2, 1, 3])
    s = b.op("Div", [b.op("MatMul", [q, k], "scores"), b.const("attn.scale", np.sqrt(dh))], "scores/scale")
    c = b.op("MatMul", [b.op("Softmax", [s], "probs", axis=-1), v], "context")
    c = b.op("Transpose", [c], "context/transpose", perm=[0, 2, 1, 3])
    merge = b.op(
        "Concat", [leading(c, "merge"), b.const("merge.width", [d], np.int64)], "merge/target", axis=0
    )
    c = b.op("Reshape", [c, merge], "context/merge")
    h = b.op("Add", [b.linear(c, d, d, "attn_out"), x], "attn_residual")
    f = b.linear(b.op("Relu", [b.linear(h, d, 2 * d, "ffn1")], "ffn1/relu"), 2 * d, d, "ffn2")
    b.output(b.op("Add", [f, h], "ffn_residual"), ["N", 8, d])
    return b.finish(transformer_runtime_shapes)


def conv_chain(seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    """Plain conv chain through every per-channel pass-through op the tracer must know.

    Pattern: Pad (constant 0.5, spatial) -> conv1 Conv(bias)+BN+Relu (8) -> conv2 +BN+Clip(0,6)
    -> conv3 +BN+HardSwish (12) -> MaxPool 2 -> Pad reflect -> conv4 valid (12) -> PRelu
    (per-channel slope [12,1,1]) -> conv5 dilation 2 (8) -> LeakyRelu 0.1 -> AveragePool 2.
    Output avgpool [N,8,4,4].
    Channel groups: {conv1} (8), {conv2} (8), {conv3 through MaxPool and Pad} (12),
    {conv4 with PRelu slope} (12), {conv5} (8, graph output).
    """
    b = Builder(seed, opset)
    x = b.input("x", ["N", 3, 16, 16])
    pads = b.const("pad.pads", [0, 0, 1, 1, 0, 0, 1, 1], np.int64)
    p = b.op("Pad", [x, pads, b.const("pad.value", 0.5)], "pad", mode="constant")
    c = b.cba(p, 3, 8, pad=0, bias=True, name="conv1")
    c = b.cba(c, 8, 8, act="clip6", name="conv2")
    c = b.cba(c, 8, 12, act="hardswish", name="conv3")
    c = b.op("MaxPool", [c], "maxpool", kernel_shape=[2, 2], strides=[2, 2])
    c = b.conv(b.op("Pad", [c, pads], "pad_reflect", mode="reflect"), 12, 12, pad=0, name="conv4")
    c = b.op(
        "PRelu", [c, b.param("prelu.slope", b.rng.uniform(0.05, 0.3, [12, 1, 1]).astype(np.float32))], "prelu"
    )
    c = b.op("LeakyRelu", [b.conv(c, 12, 8, dilation=2, name="conv5")], "leaky", alpha=0.1)
    b.output(b.op("AveragePool", [c], "avgpool", kernel_shape=[2, 2], strides=[2, 2]), ["N", 8, 4, 4])
    return b.finish(conv_chain)


def conv_transpose(seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    """ConvTranspose decoder: weight layout [Cin, Cout/group, k, k] (channels swap axes vs Conv).

    Pattern: conv Conv+BN+Relu stride 2 (8, 4x4) -> deconv1 ConvTranspose k2 s2 (6, 8x8) +BN+Relu
    -> deconv2 ConvTranspose k3 pad1 groups=2 (4). Output deconv2 [N,4,8,8].
    Channel groups: {conv; read by deconv1 weight axis 0} (8); {deconv1 = weight axis 1, its BN;
    read by deconv2 axis 0 in 2 groups of 3} (6); {deconv2} (4, graph output).
    """
    b = Builder(seed, opset)
    x = b.input("x", ["N", 3, 8, 8])
    c = b.cba(x, 3, 8, stride=2, name="conv")
    w1 = b.weight("deconv1.weight", [8, 6, 2, 2], fan_in=8)
    t = b.op(
        "ConvTranspose", [c, w1, b.bias("deconv1.bias", [6])], "deconv1", kernel_shape=[2, 2], strides=[2, 2]
    )
    t = b.op("Relu", [b.bn(t, 6, "deconv1/bn")], "deconv1/relu")
    w2 = b.weight("deconv2.weight", [6, 2, 3, 3], fan_in=27)
    t = b.op(
        "ConvTranspose",
        [t, w2, b.bias("deconv2.bias", [4])],
        "deconv2",
        kernel_shape=[3, 3],
        pads=[1, 1, 1, 1],
        group=2,
    )
    b.output(t, ["N", 4, 8, 8])
    return b.finish(conv_transpose)


def mlp_gemm(seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    """BN-free MLP of Gemms covering transA/transB, alpha/beta and a [1,M] bias.

    Pattern: x [N,12] -> fc1 Gemm transB=0 (16) -> Relu -> fc2 Gemm transB=1 alpha=0.5 beta=2 (16)
    -> Relu -> Transpose [16,N] -> fc3 Gemm transA=1 transB=1 (8) -> Relu -> fc4 Gemm transB=0
    bias [1,4] (4). Output fc4 [N,4].
    Stored B is [K,M] for transB=0 and [M,K] for transB=1.
    Channel groups: {fc1 = axis 1 of its B [12,16]; read by fc2 as axis 1 of its B [16,16]} (16);
    {fc2 = axis 0 of its B; axis 1 of h becomes axis 0 through the Transpose, read by fc3 as K =
    axis 0 of A (transA=1) and axis 1 of its B [8,16]} (16); {fc3; read by fc4 as axis 0 of its B
    [8,4]} (8); {fc4, bias [1,4]} (4, graph output).
    """
    b = Builder(seed, opset)
    x = b.input("x", ["N", 12])
    h = b.op("Relu", [b.gemm(x, 12, 16, "fc1", trans_b=0)], "fc1/relu")
    h = b.op("Relu", [b.gemm(h, 16, 16, "fc2", alpha=0.5, beta=2.0)], "fc2/relu")
    h = b.op("Transpose", [h], "fc3/transpose", perm=[1, 0])
    h = b.op("Relu", [b.gemm(h, 16, 8, "fc3", trans_a=1)], "fc3/relu")
    b.output(b.gemm(h, 8, 4, "fc4", trans_b=0, bias_shape=[1, 4]), ["N", 4])
    return b.finish(mlp_gemm)


def paddle_convnet(seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    """PP-LCNet-like net as Paddle exports it (see paddle_style_model for the Constant-weight form).

    Pattern: conv1 Conv+BN+HardSwish s2 (8) -> dw1 depthwise+BN+HardSwish -> SE with HardSigmoid
    (alpha 0.2) gate -> pw1 (16) -> dw2 depthwise s2 -> pw2 (16) -> GAP -> Flatten -> fc
    MatMul+Add (Paddle Linear, not Gemm). Output fc [N,10].
    Channel groups: {conv1, dw1, se gate, pw1 input} (8); {se/fc1} (2); {pw1, dw2} (16);
    {pw2; read by fc rows} (16); {fc} (10, graph output).
    """
    b = Builder(seed, opset)
    x = b.input("x", ["N", 3, 16, 16])
    h = b.cba(x, 3, 8, stride=2, act="hardswish", name="conv1")
    h = b.se(b.cba(h, 8, 8, group=8, act="hardswish", name="dw1"), 8, 2, gate="hardsigmoid")
    h = b.cba(h, 8, 16, k=1, act="hardswish", name="pw1")
    h = b.cba(h, 16, 16, stride=2, group=16, act="hardswish", name="dw2")
    h = b.cba(h, 16, 16, k=1, act="hardswish", name="pw2")
    f = b.op("Flatten", [b.op("GlobalAveragePool", [h], "gap")], "flatten", axis=1)
    b.output(b.linear(f, 16, 10, "fc"), ["N", 10])
    return b.finish(paddle_convnet)


GRAPHS: dict[str, Callable[..., onnx.ModelProto]] = {
    "residual_add": residual_add,
    "dense_concat": dense_concat,
    "depthwise_se": depthwise_se,
    "grouped_conv": grouped_conv,
    "split_slice": split_slice,
    "flatten_gemm": flatten_gemm,
    "reshape_matmul": reshape_matmul,
    "transpose_nhwc": transpose_nhwc,
    "resize_fpn": resize_fpn,
    "channel_shuffle": channel_shuffle,
    "shuffle_residual": shuffle_residual,
    "lstm": lstm,
    "transformer_block": transformer_block,
    "transformer_runtime_shapes": transformer_runtime_shapes,
    "conv_chain": conv_chain,
    "conv_transpose": conv_transpose,
    "mlp_gemm": mlp_gemm,
    "paddle_convnet": paddle_convnet,
}


def names() -> list[str]:
    return list(GRAPHS)


def build(name: str, seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    """Build graph ``name`` (see ``names()``); raises UnsupportedOpset outside 11..newest."""
    if name not in GRAPHS:
        raise KeyError(f"unknown synthetic graph {name!r}; known: {', '.join(GRAPHS)}")
    return GRAPHS[name](seed=seed, opset=opset)


# ---- variants ------------------------------------------------------------------------------


def _meta(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def _copy_recording(model: onnx.ModelProto, variant: list) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    meta = _meta(out)
    if META_GRAPH in meta:
        meta[META_VARIANTS] = json.dumps([*json.loads(meta.get(META_VARIANTS, "[]")), variant])
        helper.set_model_props(out, meta)
    return out


def with_constant_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """Paddle / PP-OCR style: every initializer becomes a Constant node, leaving zero initializers.

    Initializers read by several nodes, and every third other one, are routed through an Identity
    (``<name>/const`` -Constant-> Identity -> ``<name>``), as Paddle exports have; shared weights
    thus get a shared Identity. Tensor names seen by the consumers do not change.
    """
    out = _copy_recording(model, ["constant_weights"])
    graph = out.graph
    uses = Counter(i for n in graph.node for i in n.input)
    front = []
    for k, init in enumerate(graph.initializer):
        via_identity = uses[init.name] > 1 or k % 3 == 0
        src = f"{init.name}/const" if via_identity else init.name
        front.append(helper.make_node("Constant", [], [src], name=f"{src}/Constant", value=init))
        if via_identity:
            front.append(helper.make_node("Identity", [src], [init.name], name=f"{init.name}/Identity"))
    nodes = front + list(graph.node)
    del graph.node[:], graph.initializer[:]
    graph.node.extend(nodes)
    return out


def with_static_batch(model: onnx.ModelProto, n: int) -> onnx.ModelProto:
    """Replace the symbolic batch dim ``N`` by ``n`` on inputs, outputs and value_info."""
    out = _copy_recording(model, ["static_batch", n])
    for vi in [*out.graph.input, *out.graph.output, *out.graph.value_info]:
        for dim in vi.type.tensor_type.shape.dim:
            if dim.dim_param == "N":
                dim.dim_value = n
    return out


def with_identity_noise(model: onnx.ModelProto, seed: int = 0, fraction: float = 0.3) -> onnx.ModelProto:
    """Insert Identity nodes on a random ``fraction`` of intermediate tensors (not graph outputs)."""
    out = _copy_recording(model, ["identity_noise", seed, fraction])
    rng = np.random.default_rng(seed)
    keep = {o.name for o in out.graph.output}
    renamed: dict[str, str] = {}
    nodes = []
    for node in out.graph.node:  # topologically sorted, so consumers come after the rename
        node.input[:] = [renamed.get(i, i) for i in node.input]
        nodes.append(node)
        for t in node.output:
            if node.op_type != "Constant" and t and t not in keep and rng.random() < fraction:
                renamed[t] = f"{t}/noise"
                nodes.append(helper.make_node("Identity", [t], [renamed[t]], name=f"{t}/noise"))
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


_VARIANTS: dict[str, Callable[..., onnx.ModelProto]] = {
    "constant_weights": with_constant_weights,
    "static_batch": with_static_batch,
    "identity_noise": with_identity_noise,
}


def with_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """The same synthetic graph (same seed, hence same weights) genuinely built at ``opset``.

    Rebuilds from the builder recorded in the model's metadata and replays recorded variants;
    raises ValueError for models not made by this module, UnsupportedOpset below opset 11.
    """
    meta = _meta(model)
    if META_GRAPH not in meta:
        raise ValueError(
            "with_opset needs a model made by models.synthetic (metadata "
            f"{META_GRAPH!r} missing); convert foreign models with onnx.version_converter"
        )
    out = build(meta[META_GRAPH], seed=int(meta[META_SEED]), opset=opset)
    for name, *args in json.loads(meta.get(META_VARIANTS, "[]")):
        out = _VARIANTS[name](out, *args)
    return out


# (op type -> input indices) whose *values* onnx shape inference reads: these stay inline.
_SHAPE_INPUTS = {
    "Reshape": {1},
    "Resize": {1, 2, 3},
    "Upsample": {1},
    "Pad": {1, 3},
    "Slice": {1, 2, 3, 4},
    "Split": {1},
    "Squeeze": {1},
    "Unsqueeze": {1},
    "Expand": {1},
    "Tile": {1},
    "ReduceMean": {1},
    "ReduceSum": {1},
    "ConstantOfShape": {0},
}


def with_external_data(model: onnx.ModelProto, path: str | Path, convert_attribute: bool = False) -> Path:
    """Save ``model`` at ``path`` with its weights in ``<path name>.data`` beside it; returns ``path``.

    Tensors whose values shape inference reads (Reshape shapes, Resize scales, Slice/Pad/Split
    parameters, ...) stay inline, as exporters keep small tensors inline: onnx shape inference
    cannot read them from an external file. ``convert_attribute=True`` also moves Constant-node
    weights out. ``model`` is not modified.
    """
    path = Path(path)
    location = f"{path.name}.data"
    (path.parent / location).unlink(missing_ok=True)  # onnx appends to an existing data file
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    inline = {
        n.input[i] for n in copy.graph.node for i in _SHAPE_INPUTS.get(n.op_type, ()) if i < len(n.input)
    }
    for node in reversed(copy.graph.node):  # follow Identity chains back to the source tensor
        if node.op_type == "Identity" and node.output[0] in inline:
            inline.add(node.input[0])
    tensors = [t for t in copy.graph.initializer if t.name not in inline]
    if convert_attribute:
        tensors += [
            a.t
            for n in copy.graph.node
            if n.op_type == "Constant" and n.output[0] not in inline
            for a in n.attribute
            if a.type == onnx.AttributeProto.TENSOR
        ]
    for t in tensors:
        if t.HasField("raw_data"):
            external_data_helper.set_external_data(t, location)
    onnx.save_model(copy, str(path))
    return path


def paddle_style_model(seed: int = 0, opset: int = 11) -> onnx.ModelProto:
    """Paddle-exported conv net: paddle_convnet at opset 11 (or 13) with all weights in Constants."""
    return with_constant_weights(build("paddle_convnet", seed=seed, opset=opset))


# ---- feeds ---------------------------------------------------------------------------------


def _shape(vi: onnx.ValueInfoProto, batch: int) -> tuple[int, ...]:
    return tuple(d.dim_value if d.HasField("dim_value") else batch for d in vi.type.tensor_type.shape.dim)


def output_shapes(model: onnx.ModelProto, batch: int = 2) -> dict[str, tuple[int, ...]]:
    """Declared output shapes with every symbolic dim set to ``batch``."""
    return {o.name: _shape(o, batch) for o in model.graph.output}


def random_inputs(model: onnx.ModelProto, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Feeds for every graph input: symbolic dims -> ``batch``, fixed dims kept; float ~ N(0,1),
    integers in [0, 4), bool ~ coin flips, each in the input's declared dtype."""
    rng = np.random.default_rng(seed)
    inits = {i.name for i in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        shape, dtype = _shape(vi, batch), helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        if np.issubdtype(dtype, np.floating):
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[vi.name] = rng.random(shape) < 0.5
        else:
            feeds[vi.name] = rng.integers(0, 4, shape).astype(dtype)
    return feeds
