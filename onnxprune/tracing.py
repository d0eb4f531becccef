"""What op rules see and do while the channel tracer walks a graph (``TraceContext``), and the probe shapes
it walks at."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np
import onnx
from onnx import numpy_helper

from .channels import Member, Space, View
from .graph import attrs, initializers, producers
from .shapes import Shape, declared_shape, graph_inputs


class Node:
    """A read-only view of a NodeProto: name, op, inputs, outputs and attributes."""

    def __init__(self, proto: onnx.NodeProto):
        self.proto = proto
        self.name, self.op = proto.name, proto.op_type
        self.domain = proto.domain
        self.inputs, self.outputs = list(proto.input), list(proto.output)
        self.attrs = attrs(proto)

    def attr(self, name: str, default=None):
        return self.attrs.get(name, default)

    def __str__(self) -> str:
        return f"node '{self.name}' ({self.op})"


class TraceContext:
    """What op rules see and do: tensor views, shapes and constants in; spaces, links, members out."""

    def __init__(self, model: onnx.ModelProto, shapes: Mapping[str, Shape]):
        self.shapes = shapes
        self.consts = initializers(model.graph)
        self._producers = producers(model.graph)
        self._arrays: dict[str, np.ndarray] = {}
        self.views: dict[str, View] = {}
        self.spaces: list[Space] = []
        self.links: list[tuple[int, int, int, int, int]] = []
        self.members: list[Member] = []
        self.mac_scaling: dict[str, list[tuple[float, tuple[int, ...]]]] = {}

    # -- reading ------------------------------------------------------------------------------
    def view(self, name: str) -> View | None:
        return self.views.get(name) if name else None

    def shape(self, name: str) -> Shape | None:
        return self.shapes.get(name) if name else None

    def producer(self, name: str) -> Node | None:
        """The node writing tensor ``name`` (None for graph inputs and initializers)."""
        proto = self._producers.get(name) if name else None
        return None if proto is None else Node(proto)

    def const(self, name: str) -> np.ndarray | None:
        if not name or name not in self.consts:
            return None
        if name not in self._arrays:
            self._arrays[name] = numpy_helper.to_array(self.consts[name])
        return self._arrays[name]

    # -- writing ------------------------------------------------------------------------------
    def set_view(self, name: str, view: View | None) -> None:
        if view is not None and name:
            self.views[name] = view

    def new_space(self, tensor: str, size: int, reason: str | None = None) -> int:
        sid = len(self.spaces)
        self.spaces.append(Space(sid, tensor, int(size)))
        if reason:
            self.block(sid, reason)
        return sid

    def block(self, space: int, reason: str) -> None:
        if reason not in self.spaces[space].reasons:
            self.spaces[space].reasons.append(reason)

    def link(self, a: int, a0: int, b: int, b0: int, n: int) -> None:
        """Channel a0+i of space a is channel b0+i of space b, for i < n."""
        if n > 0 and not (a == b and a0 == b0):
            self.links.append((a, int(a0), b, int(b0), int(n)))

    def unify(self, a: int, b: int, node: Node) -> bool:
        """Make two whole spaces one; spaces of different sizes cannot be, and are blocked."""
        if self.spaces[a].size != self.spaces[b].size:
            reason = f"{node} joins channel axes of different sizes"
            self.block(a, reason)
            self.block(b, reason)
            return False
        self.link(a, 0, b, 0, self.spaces[a].size)
        return True

    def rebase(self, plain: View, other: View) -> View | None:
        """Re-express a plain space as the interleaved channels of another one, where both lay out the same
        tensor axis: ``other`` holds |B| channels each ``inner`` wide (a channel shuffle's output), the plain
        space A has |A| = |B|·inner channels, and A's channel c·inner + r is position r of B's channel c.
        Every member, view and MAC term of A moves to B with its inner extent multiplied by ``inner``; A is
        left empty (an alias). Returns the joint view, or None when A is not plain, is linked to other spaces,
        or the extents differ."""
        a, b = plain.space, other.space
        if (
            a == b
            or not plain.plain
            or other.plain
            or plain.axis != other.axis
            or other.outer != 1
            or self.spaces[a].size != self.spaces[b].size * other.inner
            or any(a in (link[0], link[2]) for link in self.links)
        ):
            return None
        g = other.inner
        self.members = [replace(m, space=b, inner=m.inner * g) if m.space == a else m for m in self.members]
        self.views = {
            t: View(b, v.axis, v.outer, v.inner * g) if v.space == a else v for t, v in self.views.items()
        }
        self.mac_scaling = {
            n: [(share, tuple(b if s == a else s for s in sp)) for share, sp in terms]
            for n, terms in self.mac_scaling.items()
        }
        for reason in self.spaces[a].reasons:
            self.block(b, reason)
        self.spaces[a].alias_of = b
        return other

    def member(self, node: Node, role: str, space: int, **kw) -> None:
        self.members.append(Member(node.name, role, space, **kw))

    def scales(self, node: Node, *terms: tuple[float, tuple[int, ...]]) -> None:
        self.mac_scaling[node.name] = list(terms)


def probe_shapes(model: onnx.ModelProto, given: Mapping[str, Shape] | None = None) -> dict[str, Shape]:
    """Input shapes for tracing: dynamic batch → 2, other dynamic dims → 7 (odd sizes expose mix-ups)."""
    shapes = dict(given or {})
    for vi in graph_inputs(model):
        if vi.name not in shapes:
            dims = declared_shape(vi)
            shapes[vi.name] = tuple(
                d if isinstance(d, int) and d > 0 else (2 if i == 0 else 7) for i, d in enumerate(dims)
            )
    return shapes
