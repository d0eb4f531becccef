"""Channel groups: which channels of a graph must be removed together.

A *channel space* is the channel axis of one tensor where it is born (a Conv's output channels, a
MatMul's output features, a Concat's output). Op rules (``ops.REGISTRY``) say how each node moves
channels between spaces: unify two spaces index by index, identify a range of one with another
(Concat/Split/Slice offsets), or carry a space into another tensor axis (Transpose, Flatten blocks).
A space can be identified with parts of several others, so spaces are cut into *segments* at every
offset any identification needs, and a union-find over segments yields the groups: sets of
equal-length segments whose channel i is one and the same channel everywhere.

Anything a rule cannot prove safe *blocks* the spaces involved with a reason naming the node; a
group touching a blocked space is not prunable. Blocking is always correct.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np


@dataclass(frozen=True)
class View:
    """Where a space lives in a tensor: axis ``axis`` has size outer·C·inner, index = (o·C + c)·inner + r."""

    space: int
    axis: int
    outer: int = 1
    inner: int = 1

    @property
    def plain(self) -> bool:
        return self.outer == 1 and self.inner == 1


class Edit(str, Enum):
    """What pruning edits at a member (``ops.EDITS`` holds one rule per kind)."""

    PARAM = "param"  # slice a constant input along an axis
    GROUP = "group"  # a depthwise conv's group count
    RESHAPE = "reshape"  # a Reshape's constant target shape
    RESIZE = "resize"  # a Resize's constant output sizes
    SPLIT = "split"  # a Split's sizes
    SLICE = "slice"  # a Slice's bounds


@dataclass(frozen=True)
class Member:
    """One node's relation to a space, and the edit pruning must make there.

    kind: ``param`` slices input ``input_index`` along ``axis`` (with the outer/inner block expansion
    and, for grouped-conv inputs, within-group indices when ``groups`` > 1); ``split``/``slice``/
    ``reshape``/``resize`` rewrite those nodes' size constants; ``group`` sets a depthwise conv's group.
    """

    node: str
    role: str  # producer | consumer | pass-through
    space: int
    kind: Edit = Edit.PARAM
    input_index: int = -1
    axis: int = 0
    outer: int = 1
    inner: int = 1
    groups: int = 1


@dataclass
class Space:
    id: int
    tensor: str
    size: int
    reasons: list[str] = field(default_factory=list)
    alias_of: int | None = None  # re-expressed as interleaved channels of that space (TraceContext.rebase)


@dataclass
class Segment:
    space: int
    start: int
    length: int
    group: int = -1


@dataclass
class ChannelGroup:
    """Channels removed together: channel i of the group is index start+i of every segment."""

    id: int
    size: int
    segments: list[Segment]
    members: list[tuple[str, str]]  # (node, role), each once
    reasons: list[str]

    @property
    def prunable(self) -> bool:
        return not self.reasons and self.size > 1

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "channels": self.size,
            "prunable": self.prunable,
            "reason": "; ".join(self.reasons)
            if self.reasons
            else ("single channel" if self.size <= 1 else None),
            "members": [{"node": n, "role": r} for n, r in self.members],
            "segments": [{"space": s.space, "start": s.start, "length": s.length} for s in self.segments],
        }


def _refine(spaces: list[Space], links: list[tuple[int, int, int, int, int]]) -> list[list[int]]:
    """Cut points of every space so that each link maps whole segments onto whole segments.

    A link (a, a0, b, b0, n) says channel a0+i of space a is channel b0+i of space b for i < n; a cut
    inside one side of a link is mirrored to the other side until nothing changes.
    """
    cuts = [{0, s.size} for s in spaces]
    for a, a0, b, b0, n in links:
        cuts[a].update((a0, a0 + n))
        cuts[b].update((b0, b0 + n))
    changed = True
    while changed:
        changed = False
        for a, a0, b, b0, n in links:
            for src, s0, dst, d0 in ((a, a0, b, b0), (b, b0, a, a0)):
                for p in [p for p in cuts[src] if s0 < p < s0 + n]:
                    q = d0 + p - s0
                    if q not in cuts[dst]:
                        cuts[dst].add(q)
                        changed = True
    return [sorted(c) for c in cuts]


def build_groups(
    spaces: list[Space], links: list[tuple[int, int, int, int, int]], members: list[Member]
) -> tuple[list[ChannelGroup], dict[int, list[Segment]]]:
    """Union-find over refined segments → groups (ids in order of first appearance)."""
    cuts = _refine(spaces, links)
    segments: dict[int, list[Segment]] = {
        s.id: []
        if s.alias_of is not None
        else [Segment(s.id, lo, hi - lo) for lo, hi in zip(cuts[s.id][:-1], cuts[s.id][1:], strict=True)]
        for s in spaces
    }
    flat = [seg for s in spaces for seg in segments[s.id]]
    index = {(seg.space, seg.start): i for i, seg in enumerate(flat)}
    parent = list(range(len(flat)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, a0, b, b0, n in links:
        for seg in segments[a]:
            if a0 <= seg.start < a0 + n:
                j = index[(b, b0 + seg.start - a0)]
                ri, rj = find(index[(a, seg.start)]), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    roots: dict[int, int] = {}
    for i, seg in enumerate(flat):
        seg.group = roots.setdefault(find(i), len(roots))
    by_space_members: dict[int, list[Member]] = {}
    for m in members:
        by_space_members.setdefault(m.space, []).append(m)
    groups = [ChannelGroup(g, 0, [], [], []) for g in range(len(roots))]
    for seg in flat:
        grp = groups[seg.group]
        assert grp.size in (0, seg.length), "segments of one group must have equal length"
        grp.size = seg.length
        grp.segments.append(seg)
        for reason in spaces[seg.space].reasons:
            if reason not in grp.reasons:
                grp.reasons.append(reason)
        for m in by_space_members.get(seg.space, []):
            if (m.node, m.role) not in grp.members:
                grp.members.append((m.node, m.role))
    return groups, segments


@dataclass
class Trace:
    """Result of tracing a graph: spaces, members, groups, and how MACs scale with each space."""

    spaces: list[Space]
    members: list[Member]
    groups: list[ChannelGroup]
    segments: dict[int, list[Segment]]
    views: dict[str, View]
    # node → [(share of the node's MACs, spaces whose kept fraction multiplies that share)]
    mac_scaling: dict[str, list[tuple[float, tuple[int, ...]]]]

    def prunable_groups(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]

    def group_of(self, space: int, channel: int) -> ChannelGroup:
        for seg in self.segments[space]:
            if seg.start <= channel < seg.start + seg.length:
                return self.groups[seg.group]
        raise IndexError(f"channel {channel} outside space {space}")

    def members_of(self, group: int) -> list[Member]:
        """The members whose space holds channels of ``group`` (what pruning the group edits)."""
        return [m for m in self.members if any(s.group == group for s in self.segments[m.space])]

    def space_of(self, tensor: str) -> int | None:
        view = self.views.get(tensor)
        return None if view is None else view.space

    def kept_channels(self, plan: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """Kept indices of every space under a keep-plan {group id → kept channel indices of the group}."""
        for gid, kept in plan.items():
            g = self.groups[gid]
            k = np.asarray(kept)
            if not g.prunable:
                raise ValueError(f"group {gid} is not prunable: {'; '.join(g.reasons) or 'single channel'}")
            if k.size == 0 or k.size != np.unique(k).size or k.min() < 0 or k.max() >= g.size:
                raise ValueError(
                    f"group {gid}: kept indices must be distinct, in [0, {g.size}), and not empty"
                )
        out = {}
        for sid, segs in self.segments.items():
            parts = [
                seg.start + np.sort(np.asarray(plan[seg.group]))
                if seg.group in plan
                else np.arange(seg.start, seg.start + seg.length)
                for seg in segs
            ]
            out[sid] = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
        return out

    def layer_kept(self, layers, plan: dict[int, np.ndarray]) -> tuple[dict, dict]:
        """Per linear layer ({name: LinearLayer}), the positions along its input / output channel axis that
        ``plan`` keeps (traced only; a Flatten's C·H·W blocks or an interleaved view expanded)."""
        kept = self.kept_channels(plan)

        def positions(tensor):  # positions along the tensor's channel axis (C·H·W blocks after a Flatten)
            view = self.views[tensor]
            return expand_indices(kept[view.space], self.spaces[view.space].size, view.outer, view.inner)

        ins = {n: positions(lay.input) for n, lay in layers.items() if lay.input in self.views}
        outs = {n: positions(lay.output) for n, lay in layers.items() if lay.output in self.views}
        return ins, outs

    def input_units(self, layers) -> dict[str, int]:
        """Per linear layer whose input is traced with whole channels in a row (no outer blocks), the
        positions along its input axis one channel spans (1, or a Flatten's H·W)."""
        return {
            n: self.views[lay.input].inner
            for n, lay in layers.items()
            if lay.input in self.views and self.views[lay.input].outer == 1
        }

    def predict_macs(self, node_macs: dict[str, int], plan: dict[int, np.ndarray]) -> float:
        """MACs after applying ``plan``: each node's MACs times the kept fraction of the spaces it scales
        with."""
        kept = self.kept_channels(plan)
        frac = {s.id: len(kept[s.id]) / s.size if s.size else 1.0 for s in self.spaces}
        total = 0.0
        for node, macs in node_macs.items():
            terms = self.mac_scaling.get(node, [(1.0, ())])
            total += macs * sum(share * float(np.prod([frac[s] for s in sp])) for share, sp in terms)
        return total

    def predict_params(self, param_sizes: dict[tuple[str, int], int], plan: dict[int, np.ndarray]) -> float:
        """Parameters after ``plan``: each (node, input) tensor shrinks by the kept fraction of every space
        slicing it."""
        kept = self.kept_channels(plan)
        frac = {s.id: len(kept[s.id]) / s.size if s.size else 1.0 for s in self.spaces}
        factor: dict[tuple[str, int], float] = {}
        for m in self.members:
            key = (m.node, m.input_index)
            if m.kind == "param" and key in param_sizes:
                factor[key] = factor.get(key, 1.0) * frac[m.space]
        return float(sum(n * factor.get(k, 1.0) for k, n in param_sizes.items()))

    def group_macs(self, node_macs: dict[str, int]) -> dict[int, float]:
        """MACs each group controls: what removing all of its channels would save (others kept)."""
        share: dict[int, dict[int, float]] = {}  # space → {group: fraction of the space}
        for sid, segs in self.segments.items():
            for seg in segs:
                d = share.setdefault(sid, {})
                d[seg.group] = d.get(seg.group, 0.0) + seg.length / self.spaces[sid].size
        out = {g.id: 0.0 for g in self.groups}
        for node, macs in node_macs.items():
            for part, spaces in self.mac_scaling.get(node, []):
                for gid in {g for s in spaces for g in share.get(s, {})}:
                    kept = float(np.prod([1.0 - share[s].get(gid, 0.0) for s in spaces]))
                    out[gid] += macs * part * (1.0 - kept)
        return out


def expand_indices(kept: np.ndarray, size: int, outer: int = 1, inner: int = 1) -> np.ndarray:
    """Element indices along an axis of size outer·size·inner holding channels ``kept``: (o·C + c)·inner +
    r."""
    o = np.arange(outer)[:, None, None]
    r = np.arange(inner)[None, None, :]
    return ((o * size + np.asarray(kept)[None, :, None]) * inner + r).reshape(-1)


def weight_positions(channels, size: int, outer: int = 1, inner: int = 1, groups: int = 1) -> np.ndarray:
    """Positions along a member's weight axis that hold ``channels`` of its space (of ``size``): the tensor
    positions (o·C + c)·inner + r, taken modulo one group's width for a grouped conv's input, whose weights
    hold one group's channels (every group loses the same ones)."""
    pos = expand_indices(channels, size, outer, inner)
    return pos % (outer * size * inner // groups) if groups > 1 else pos
