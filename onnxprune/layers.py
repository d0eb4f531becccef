"""Linear layers as matrices: every Conv / Gemm / MatMul-with-a-constant seen as Y = W·X + b per group.

Statistics, OBS scores and reconstruction all reason about a layer as a weight matrix W [out, features]
acting on feature vectors x (an im2col patch for a conv, one row of the activation for Gemm/MatMul).
``LinearLayer`` says how to cut activations into such rows (``features``) and how to read and write W.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view
from onnx import numpy_helper

from .graph import attrs, initializers, producers
from .ops import entry


@dataclass
class LinearLayer:
    node: str
    op: str
    input: str
    output: str
    weight: str  # initializer name
    bias: str | None
    groups: int  # independent blocks (conv groups); features() returns one row matrix per group
    kernel: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    in_per_group: int = 0  # conv input channels per group (W's axis 1)
    trans_b: bool = False  # Gemm transB / MatMul: how the stored weight maps to W [out, features]
    weight_is_a: bool = False  # MatMul with the constant on the left: Y = W·X (features on axis -2)
    # The map that global average pooling reduced to this layer's input (``pooled_input``), or None.
    pooled_from: str | None = None

    @property
    def tap(self) -> str:
        """The tensor whose rows give this layer's statistics: its input, or the map pooled into it
        (``GLOBAL_POOLS``).

        After global average pooling, W·mean_s(x_s) = mean_s(W·x_s): the layer is a 1x1 conv on the pooled map
        followed by the pooling. Its statistics then come from every position of the map (Σ_s x_s x_sᵀ)
        instead of one pooled row per sample — a fit must keep the outputs at every position, not only
        their mean.
        """
        return self.pooled_from or self.input

    def rows_per_sample(self, x: np.ndarray) -> int:
        """Feature rows of ``x`` (this layer's ``tap``) that stand for one of its own input rows: a pooled
        map's positions. Dampening and ridges that grow with features per row count samples, not positions:
        the positions of one image are not independent rows."""
        return int(np.prod(x.shape[2:])) if self.pooled_from is not None and x.ndim > 2 else 1

    @property
    def depthwise(self) -> bool:
        return self.op == "Conv" and self.groups > 1 and self.in_per_group == 1

    # -- weights as [groups, out/g, features] --------------------------------------------------
    def matrix(self, w: np.ndarray) -> np.ndarray:
        if self.op == "Conv":
            cout = w.shape[0]
            return w.reshape(self.groups, cout // self.groups, -1)
        if self.op == "Gemm":
            return (w if self.trans_b else w.T)[None]
        if self.weight_is_a:
            return w[None]  # A [M, K]: rows are outputs
        return w.T[None]  # MatMul B [K, N] → W [N, K]

    def unmatrix(self, m: np.ndarray, like: np.ndarray) -> np.ndarray:
        if self.op == "Conv":
            return m.reshape((-1, *like.shape[1:]))
        if self.op == "Gemm":
            return m[0] if self.trans_b else m[0].T
        return m[0] if self.weight_is_a else m[0].T

    # -- activations as feature rows -----------------------------------------------------------
    def output_rows(self, y: np.ndarray) -> np.ndarray:
        """An output-shaped tensor → [rows, out], rows aligned with ``features`` (ungrouped, unpooled
        layers)."""
        if self.op == "Conv":
            return np.moveaxis(y, 1, -1).reshape(-1, y.shape[1])
        return y.reshape(-1, y.shape[-1])

    def features(self, x: np.ndarray) -> np.ndarray:
        """Input activation → [groups, rows, features] (conv: im2col patches, c-major then kernel offsets)."""
        if self.op != "Conv":
            if (
                self.pooled_from is not None and x.ndim > 2
            ):  # the pooled map [N, C, *spatial]: one row per position
                x = np.moveaxis(x, 1, -1)
            elif self.weight_is_a:  # Y = W·X: features on axis -2
                x = np.swapaxes(x, -1, -2)
            return x.reshape(1, -1, x.shape[-1])
        nd = len(self.kernel)
        pads = [(0, 0), (0, 0)] + [(self.pads[i], self.pads[i + nd]) for i in range(nd)]
        if any(p != (0, 0) for p in pads):
            x = np.pad(x, pads)
        if all(k == 1 for k in self.kernel):
            x = x[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in self.strides)]
            rows = np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])
            return np.stack(np.split(rows, self.groups, axis=1)) if self.groups > 1 else rows[None]
        span = [(k - 1) * d + 1 for k, d in zip(self.kernel, self.dilations, strict=True)]
        win = sliding_window_view(x, span, axis=tuple(range(2, 2 + nd)))
        win = win[
            (slice(None), slice(None))
            + tuple(slice(None, None, s) for s in self.strides)
            + (Ellipsis,)
            + tuple(slice(None, None, d) for d in self.dilations)
        ]
        # win: [B, C, out..., k...] → rows [B·out..., C·k...] per group
        b, c = win.shape[:2]
        out_dims = win.shape[2 : 2 + nd]
        win = np.moveaxis(win, 1, 1 + nd)  # [B, out..., C, k...]
        rows = win.reshape(
            b * int(np.prod(out_dims)), self.groups, c // self.groups * int(np.prod(self.kernel))
        )
        return np.ascontiguousarray(np.swapaxes(rows, 0, 1))

    def feature_gram(self, x: np.ndarray, dtype=np.float64) -> tuple[np.ndarray, int]:
        """(Σ_rows f fᵀ of ``features(x)`` per group [groups, features, features], products in ``dtype``;
        rows).

        A pointwise conv on a map with at least twice as many positions as channels takes Σ_n X_n X_nᵀ on the
        NCHW layout ([C, positions] per sample, no transposed copy; on fewer positions the batched products
        cost more than the copy); otherwise the rows are transposed in the activations' own precision and
        widened after. Both halve the cost of the float64 Hessian pass on EfficientNet-Lite0's high-resolution
        layers, where moving the float64 copy was most of it."""
        if (
            self.op == "Conv"
            and self.groups == 1
            and x.ndim > 2
            and all(k == 1 for k in self.kernel)
            and all(s == 1 for s in self.strides)
            and not any(self.pads)
            and x[0, 0].size >= 2 * x.shape[1]
        ):
            maps = x.astype(dtype).reshape(x.shape[0], x.shape[1], -1)
            return np.matmul(maps, np.swapaxes(maps, 1, 2)).sum(0)[None], maps.shape[0] * maps.shape[2]
        rows = self.features(x).astype(dtype, copy=False)
        if rows.shape[0] > 1:
            return np.einsum("grf,grh->gfh", rows, rows, optimize=True), rows.shape[1]
        return (rows[0].T @ rows[0])[None], rows.shape[1]


def linear_layers(model: onnx.ModelProto) -> dict[str, LinearLayer]:
    """Every Conv (not ConvTranspose), Gemm (B constant, no transA) and MatMul with one constant operand."""
    inits = initializers(model.graph)
    out: dict[str, LinearLayer] = {}
    for node in model.graph.node:
        e = entry(node.op_type, node.domain)
        fields = e.linear(node, attrs(node), inits) if e is not None and e.linear is not None else None
        if fields is not None:
            out[node.name] = LinearLayer(**fields)
    graph = _GraphFacts(model, inits)
    for layer in out.values():
        if layer.op != "Conv" or (
            all(k == 1 for k in layer.kernel) and all(s == 1 for s in layer.strides) and not any(layer.pads)
        ):
            layer.pooled_from = None if layer.weight_is_a else pooled_input(layer.input, graph)
    return out


class _GraphFacts:
    """What the pooling rules read: producers, constant tensors and ranks known from shape inference."""

    def __init__(self, model: onnx.ModelProto, inits: dict[str, onnx.TensorProto]):
        g = model.graph
        self.producers = producers(g)
        self.constants = inits
        self.ranks = {
            v.name: len(v.type.tensor_type.shape.dim)
            for v in (*g.input, *g.value_info, *g.output)
            if v.type.tensor_type.HasField("shape")
        }

    def constant(self, name: str) -> np.ndarray | None:
        if name in self.constants:
            return numpy_helper.to_array(self.constants[name])
        node = self.producers.get(name)
        if (
            node is not None
            and node.op_type == "Constant"
            and node.attribute
            and node.attribute[0].name == "value"
        ):
            return numpy_helper.to_array(node.attribute[0].t)
        return None


def _mean_over_all_spatial_axes(node: onnx.NodeProto, graph: _GraphFacts) -> bool:
    """ReduceMean over exactly the axes 2 … rank−1 of an [N, C, *spatial] map (e.g. torch's ``x.mean((2,
    3))``)."""
    rank = graph.ranks.get(node.input[0])
    axes = attrs(node).get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:  # opset 18: axes is an input
        axes = graph.constant(node.input[1])
    if rank is None or rank < 3 or axes is None:
        return False
    return sorted(int(a) % rank for a in np.ravel(axes)) == list(range(2, rank))


# Global average pooling ops: does this node average its input [N, C, *spatial] over every spatial axis?
GLOBAL_POOLS = {"GlobalAveragePool": lambda node, graph: True, "ReduceMean": _mean_over_all_spatial_axes}
# Ops that hand a globally pooled [N, C, 1, ...] tensor on without mixing channels or samples.
POOL_PASS_THROUGH = {
    "Flatten": lambda a: a.get("axis", 1) == 1,
    "Reshape": lambda a: True,
    "Squeeze": lambda a: True,
}


def pooled_input(tensor: str, graph: _GraphFacts) -> str | None:
    """The map that a ``GLOBAL_POOLS`` op reduced to ``tensor`` (through ``POOL_PASS_THROUGH`` ops), or
    None."""
    node = graph.producers.get(tensor)
    while node is not None and node.op_type in POOL_PASS_THROUGH:
        if not POOL_PASS_THROUGH[node.op_type](attrs(node)):
            return None
        node = graph.producers.get(node.input[0])
    if node is not None and node.op_type in GLOBAL_POOLS and GLOBAL_POOLS[node.op_type](node, graph):
        return node.input[0]
    return None


def readers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor → the nodes that read it (each once, however many of its inputs it is)."""
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for i in set(node.input):
            out.setdefault(i, []).append(node)
    return out


def residual_partners(model: onnx.ModelProto, layers: dict[str, LinearLayer]) -> dict[str, str]:
    """Layer → the other operand of the Add that its output alone feeds (a residual connection).

    The block output is then W·x + s, so a fit that keeps the block output (not only W·x) absorbs the
    drift of s as well: the skip path carries every earlier block's leftover error past the layers that
    could correct it. Only ungrouped, unpooled layers (``output_rows``) and partners that are not constant;
    a bias Add (constant operand) in between is passed (W·x + b + s: transformer exports). Each Add must be
    its input's only reader (not a graph output either), so the partner cannot be computed from the layer.
    """
    consumers = readers(model)
    constants = {t.name for t in model.graph.initializer} | {
        o for n in model.graph.node if n.op_type == "Constant" for o in n.output
    }
    graph_outputs = {o.name for o in model.graph.output}
    out: dict[str, str] = {}
    for name, layer in layers.items():
        if layer.groups != 1 or layer.pooled_from or layer.weight_is_a or layer.output in graph_outputs:
            continue
        tensor, users = layer.output, consumers.get(layer.output, [])
        while len(users) == 1 and users[0].op_type == "Add" and len(set(users[0].input)) == 2:
            other = next(i for i in users[0].input if i != tensor)
            if other not in constants:
                out[name] = other
                break
            # a bias Add first (transformer exports: MatMul → Add(bias) → Add(residual)): W·x + b + s
            tensor, users = users[0].output[0], consumers.get(users[0].output[0], [])
            if tensor in graph_outputs:
                break
    return out


def _clip_bounds(node: onnx.NodeProto, graph: _GraphFacts) -> tuple[float, float] | None:
    """Clip's [min, max]: attributes before opset 11, optional constant inputs after (absent: unbounded)."""
    node_attributes = attrs(node)
    bounds = [node_attributes.get("min", -np.inf), node_attributes.get("max", np.inf)]
    for i, name in enumerate(node.input[1:3]):
        if name:
            value = graph.constant(name)
            if value is None or value.size != 1:
                return None
            bounds[i] = float(value.reshape(()))
    return float(bounds[0]), float(bounds[1])


# Activations that clamp their input to [lo, hi] and pass it unchanged in between: the layer feeding one
# needs its outputs right only inside the range (below lo any value ≤ lo gives the same activation).
RECTIFIERS = {"Relu": lambda node, graph: (0.0, np.inf), "Clip": _clip_bounds}


def rectified_outputs(
    model: onnx.ModelProto, layers: dict[str, LinearLayer]
) -> dict[str, tuple[float, float, str | None]]:
    """Layer → (lo, hi, partner) of the ``RECTIFIERS`` op that alone reads its output — directly (partner
    None)
    or through the residual Add its output alone feeds (partner: the Add's other operand; ResNet's
    conv → Add → ReLU), in which case the clamp reads the block output W·x + s. Ungrouped, unpooled layers
    only
    (their ``output_rows`` align with the fit's feature rows); graph outputs are read as is and left out."""
    graph = _GraphFacts(model, initializers(model.graph))
    consumers = readers(model)
    graph_outputs = {o.name for o in model.graph.output}
    out = {}
    for name, layer in layers.items():
        if layer.groups != 1 or layer.pooled_from or layer.weight_is_a:
            continue
        tensor, partner = layer.output, None
        users = consumers.get(tensor, [])
        if (
            len(users) == 1
            and users[0].op_type == "Add"
            and len(set(users[0].input)) == 2
            and tensor not in graph_outputs
        ):
            partner = next(i for i in users[0].input if i != tensor)
            tensor = users[0].output[0]
            users = consumers.get(tensor, [])
        if (
            tensor in graph_outputs
            or len(users) != 1
            or users[0].op_type not in RECTIFIERS
            or users[0].input[0] != tensor
        ):
            continue
        bounds = RECTIFIERS[users[0].op_type](users[0], graph)
        if bounds is not None and bounds[0] < bounds[1]:
            out[name] = (*bounds, partner)
    return out


def initializer_dict(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
