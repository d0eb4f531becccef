"""Channel criteria: for every prunable group, a removal order (least important first) and an error curve.

``GroupRanking.error[m]`` is the estimated damage of removing the first m channels of ``order``; the
allocator trades these curves against cost. Data-free scores (magnitude, BN scale, FPGM) and
activation statistics are normalized per layer and summed over the group's coupled layers; their curve
is the cumulative normalized score. ``obs`` removes channels greedily by structured Optimal Brain
Surgeon over every consumer of the group:

    ΔE = Σ_consumers Σ_rows  w_F · ((H⁻¹)_FF)⁻¹ · w_Fᵀ     (F = the consumer features fed by the channel)

with the surviving weights compensated, w ← w − w_F ((H⁻¹)_FF)⁻¹ (H⁻¹)_F:, and H⁻¹ downdated the same
way, so each step prices the next channel given the ones already gone. ΔE is divided by each
consumer's output energy tr(W H Wᵀ), making groups comparable. Channels the consumers can do without
exactly on the calibration data (dead, or combinations of others) come first, at no cost
(``free_channels``). ``woodfisher`` is the same search with H⁻¹ built WoodFisher-style from a sample of
input rows by the Woodbury recursion (no d×d inversion of an accumulated Hessian; see
:func:`woodfisher_inverse`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx

from .calibration.collect import row_hessian
from .channels import ChannelGroup, Trace, weight_positions
from .layers import LinearLayer, initializer_dict, linear_layers

CRITERIA = (
    "obs",
    "woodfisher",
    "magnitude",
    "magnitude-l1",
    "bn-scale",
    "fpgm",
    "activation",
    "apoz",
    "random",
)


@dataclass
class GroupRanking:
    group: int
    order: np.ndarray  # channel indices of the group, least important first
    error: np.ndarray  # error[m]: estimated damage after removing order[:m]; error[0] = 0


def _channel_positions(trace: Trace, group: ChannelGroup, space: int) -> list[np.ndarray]:
    """Indices of the group's channels within ``space`` (one array per segment of the group there)."""
    return [seg.start + np.arange(group.size) for seg in trace.segments[space] if seg.group == group.id]


def _member_channel_values(
    trace: Trace,
    group: ChannelGroup,
    inits: Mapping[str, np.ndarray],
    node_inputs: Mapping[str, list[str]],
    roles=("producer", "consumer"),
):
    """For each param member of the group: (node, [size, ...] array of that member's weights per channel)."""
    out = []
    for m in trace.members:
        if m.kind != "param" or m.role not in roles:
            continue
        name = node_inputs[m.node][m.input_index]
        if name not in inits:
            continue
        w = np.moveaxis(np.asarray(inits[name], np.float64), m.axis, 0)
        if w.ndim == 1:
            continue  # biases and per-channel constants say little about importance
        size = trace.spaces[m.space].size
        for pos in _channel_positions(trace, group, m.space):
            rows = np.stack(
                [w[weight_positions([p], size, m.outer, m.inner, m.groups)].reshape(-1) for p in pos]
            )
            out.append((m.node, rows))
    return out


def _curve(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(scores, kind="stable")
    s = scores[order] / max(scores.mean(), 1e-30)
    return order, np.concatenate([[0.0], np.cumsum(s) / len(s)])


def _per_layer_sum(rows_by_layer, fn) -> np.ndarray:
    total = None
    for _, rows in rows_by_layer:
        v = fn(rows)
        v = v / max(v.mean(), 1e-30)
        total = v if total is None else total + v
    return total


def magnitude_scores(rows_by_layer, p: int = 2) -> np.ndarray:
    return _per_layer_sum(rows_by_layer, lambda r: np.linalg.norm(r, ord=p, axis=1))


def fpgm_scores(rows_by_layer) -> np.ndarray:
    """Filter Pruning via Geometric Median: a channel near the others' median is the most replaceable."""

    def dist(rows):
        sq = (rows**2).sum(1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * rows @ rows.T, 0.0)
        return np.sqrt(d2).sum(1)

    return _per_layer_sum(rows_by_layer, dist)


# -- structured OBS ------------------------------------------------------------------------------

# Exactly redundant channels (dead on the calibration data, or linear combinations of others: a scaled
# duplicate through a positively homogeneous activation) cost nothing to remove when the consumers are
# compensated exactly; the dampened OBS prices them at ~λ·‖w‖² and can rank a live channel first. They go
# first, found with an almost undampened H⁻¹, where H has enough rows per feature to tell (with fewer rows
# nearly every channel is a combination of the others on the calibration data). A consumer with fewer rows
# (a Flatten → Gemm reads one per sample) is tested on its input channels instead: channel j's map, over
# every position the consumer reads, a combination of the others' — then it is one at every position, and
# folding it into them is exact for any weights.
FREE_DAMP = 1e-9  # λ = FREE_DAMP·mean diag H: numerical only
FREE_COST = 1e-8  # removal cost (over consumer energy) below which a channel counts as exactly redundant
FREE_ROWS = 4  # calibration rows per feature a consumer's H needs for the exact test


@dataclass
class _Exact:
    """The exact-redundancy test of one consumer: a least-squares problem min ‖W X − W' X_A‖² on the Gram
    matrix ``h`` of X, channel j owning rows ``feats[j]`` of X; ``w`` [blocks, out, rows]."""

    h: np.ndarray
    w: np.ndarray
    feats: list[np.ndarray]
    energy: float
    features: bool  # True: X is the consumer's input features (W its weights); False: its input channels


@dataclass
class _Consumer:
    w: np.ndarray  # [blocks, out, features] (float64, compensated as channels go)
    hinv: np.ndarray  # [blocks, features, features]
    feats: list[np.ndarray]  # per group channel: feature indices inside every block
    energy: float
    exact: _Exact | None = None  # the exact test, where the calibration data can tell (see FREE_ROWS)


def _channel_test(h: np.ndarray, feats: list[np.ndarray], b: int | None) -> _Exact | None:
    """The exact test on the consumer's input channels: features in blocks of ``b`` per channel (a conv's
    taps, a Flatten's positions), G_cc' = Σ_t H[c·b + t, c'·b + t] over every position read;
    W = diag(G_cc)^-½, so a channel's removal costs the share of its energy the others cannot reproduce.
    None where a group channel's features are not whole blocks."""
    if not b or h.shape[-1] % b:
        return None
    chans = []
    for f in feats:
        c = np.unique(f // b)
        whole = (c[:, None] * b + np.arange(b)).reshape(-1)
        if len(f) != len(whole) or not np.array_equal(np.sort(f), whole):
            return None
        chans.append(c)
    n = h.shape[-1] // b
    g = h.reshape(h.shape[0], n, b, n, b).diagonal(axis1=2, axis2=4).sum(-1)  # [blocks, C, C]
    diag = np.diagonal(g, axis1=1, axis2=2)
    scale = np.where(diag > 0, 1.0 / np.sqrt(np.maximum(diag, 1e-300)), 0.0)
    w = scale[:, :, None] * np.eye(n)[None]
    return _Exact(g, w, chans, 1.0, features=False)


def woodfisher_inverse(x: np.ndarray, lam: np.ndarray | float, block: int = 64) -> np.ndarray:
    """(λI + (2/n)·Σ_i x_i x_iᵀ)⁻¹ by the Woodbury recursion over the n rows of x ([groups, n, d]).

    Starting from F₀⁻¹ = I/λ, each block X_b of rows (rank-1 when ``block`` = 1, as in WoodFisher) updates
        F⁻¹ ← F⁻¹ − F⁻¹X_bᵀ ((n/2)·I + X_b F⁻¹ X_bᵀ)⁻¹ X_b F⁻¹,
    which costs O(n·d²) and never inverts a d×d matrix.
    """
    g, n, d = x.shape
    lam = np.broadcast_to(np.asarray(lam, np.float64).reshape(-1), (g,))
    finv = np.eye(d)[None] / lam[:, None, None]
    for lo in range(0, n, block):
        xb = x[:, lo : lo + block]  # [g, b, d]
        fx = np.matmul(finv, np.swapaxes(xb, 1, 2))  # F⁻¹ X_bᵀ  [g, d, b]
        inner = (n / 2.0) * np.eye(xb.shape[1])[None] + np.matmul(xb, fx)
        finv = finv - np.matmul(fx, np.linalg.solve(inner, np.swapaxes(fx, 1, 2)))
    return finv


def woodfisher_hessian(x: np.ndarray, damp: float, rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(H, H⁻¹) of a row sample x [groups, n, d]: H = (2/n)·XᵀX and the Woodbury inverse of H + λI,
    λ dampened as for ``obs`` (see :func:`_obs_consumer`)."""
    d = x.shape[2]
    h = row_hessian(x)
    shrink = d / rows if rows else 0.0
    lam = (damp + shrink) * np.maximum(np.mean(np.diagonal(h, axis1=1, axis2=2), axis=1), 1e-12) + 1e-12
    return h, woodfisher_inverse(x, lam)


def _obs_consumer(data: RankData, group: ChannelGroup, member) -> _Consumer | None:
    """The OBS view of one consumer of ``group``: its weights W [blocks, out/b, features], H⁻¹ at
    λ = (damp + features/rows)·mean(diag H), each channel's features, and the exact-redundancy test."""
    layer, trace = data.layers[member.node], data.trace
    h, rows, hinv = data.hessians[member.node], data.rows.get(member.node), data.inverses.get(member.node)
    damp, w_stored = data.damp, data.inits[layer.weight]
    w = layer.matrix(w_stored).astype(np.float64)  # [blocks, out/b, features]
    size = trace.spaces[member.space].size
    feats: list[list[int]] = [[] for _ in range(group.size)]
    for pos in _channel_positions(trace, group, member.space):
        for j, p in enumerate(pos):
            cols = weight_positions([p], size, member.outer, member.inner, member.groups)
            if layer.op == "Conv":  # a channel's features: its kernel taps
                k = int(np.prod(layer.kernel))
                cols = (cols[:, None] * k + np.arange(k)).reshape(-1)
            feats[j].extend(cols.tolist())
    taps = int(np.prod(layer.kernel)) if layer.op == "Conv" else 1
    block = taps * member.inner if member.outer == 1 else None  # consecutive features of one input channel
    energy = float(np.sum(np.matmul(w, h) * w))  # Σ w H wᵀ by BLAS (a 3-operand einsum loops: 1 s on a head)
    if energy <= 0:
        return None
    eye = np.eye(h.shape[-1])
    # Few calibration rows per feature make H low-rank, and OBS would then "compensate" almost any
    # removal inside the calibration subspace; dampening grows with features/rows to prevent that.
    shrink = h.shape[-1] / rows if rows else 0.0
    lam = (damp + shrink) * np.mean(np.diagonal(h, axis1=1, axis2=2), axis=1)[:, None, None]
    if hinv is None:
        hinv = np.linalg.inv(h + (lam + 1e-12) * eye)
    feats = [np.array(sorted(set(f))) for f in feats]
    if rows and rows >= FREE_ROWS * h.shape[-1]:
        exact = _Exact(h, w, feats, energy, features=True)
    else:
        exact = _channel_test(h, feats, block)
    return _Consumer(w, hinv, feats, energy, exact)


def _block_cost(c: _Consumer, f: np.ndarray) -> float:
    """OBS error of zeroing features F (with optimal compensation): Σ_rows w_F ((H⁻¹)_FF)⁻¹ w_Fᵀ."""
    sub = c.hinv[:, f[:, None], f[None, :]]
    wf = c.w[:, :, f]
    return float(np.sum(wf * np.swapaxes(np.linalg.solve(sub, np.swapaxes(wf, 1, 2)), 1, 2)))


def _remove(c: _Consumer, f: np.ndarray) -> None:
    """w ← w − w_F ((H⁻¹)_FF)⁻¹ (H⁻¹)_F:  and  H⁻¹ ← H⁻¹ − (H⁻¹)_:F ((H⁻¹)_FF)⁻¹ (H⁻¹)_F:."""
    sub_inv = np.linalg.inv(c.hinv[:, f[:, None], f[None, :]])
    rows = c.hinv[:, f, :]  # [b, |F|, d]
    c.w -= np.matmul(np.matmul(c.w[:, :, f], sub_inv), rows)
    c.hinv -= np.matmul(np.matmul(c.hinv[:, :, f], sub_inv), rows)
    c.w[:, :, f] = 0.0


def _single_costs(c: _Consumer, cand: np.ndarray) -> np.ndarray:
    """Block cost of every candidate channel at once (channels with one feature: w²/[H⁻¹]_ff)."""
    lengths = {c.feats[j].size for j in cand}
    if lengths == {1}:
        f = np.array([c.feats[j][0] for j in cand])
        diag = np.maximum(c.hinv[:, f, f], 1e-30)  # [b, n]
        return np.sum(c.w[:, :, f] ** 2 / diag[:, None, :], axis=(0, 1))
    return np.array([_block_cost(c, c.feats[j]) if c.feats[j].size else 0.0 for j in cand])


def _exact_fit(e: _Exact, gone: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(alive rows A, H_AA⁻¹ at ``FREE_DAMP``, W_A = W H_{:,A} H_AA⁻¹): the test's least squares solved on
    the rows left. Solved afresh from H each time: downdating an almost singular H⁻¹ loses the small costs."""
    keep = np.setdiff1d(np.arange(e.h.shape[-1]), gone)
    h_aa = e.h[:, keep[:, None], keep[None, :]]
    lam = FREE_DAMP * np.mean(np.diagonal(e.h, axis1=1, axis2=2), axis=1)[:, None, None] + 1e-300
    inv = np.linalg.inv(h_aa + lam * np.eye(len(keep)))
    return keep, inv, np.matmul(np.matmul(e.w, e.h[:, :, keep]), inv)


def free_channels(consumers: list[_Consumer], alive: np.ndarray) -> list[int]:
    """Exactly redundant channels: removed one at a time, cheapest first, while the removal (with each
    consumer's exact test refit on what is left, ``_exact_fit``) costs less than ``FREE_COST``; none unless
    every consumer has an exact test (``_Consumer.exact``).

    One at a time, because two exact duplicates of each other are each free only while the other stays.
    Takes them out of ``consumers`` (and ``alive``) too: a consumer tested on its features keeps the exactly
    refit weights, one tested on its channels gets OBS's compensation.
    """
    if not consumers or any(c.exact is None for c in consumers):
        return []
    tests = [c.exact for c in consumers]
    out: list[int] = []
    gone = [np.array([], int) for _ in consumers]
    fits = [_exact_fit(e, g) for e, g in zip(tests, gone, strict=True)]
    while alive.sum() > 1:
        cand = np.flatnonzero(alive)
        costs = np.zeros(len(cand))
        for e, (keep, inv, w_a) in zip(tests, fits, strict=True):
            view = _Consumer(w_a, inv, [np.searchsorted(keep, e.feats[j]) for j in cand], e.energy)
            costs += _single_costs(view, np.arange(len(cand))) / e.energy
        if costs.min() > FREE_COST:
            break
        j = int(cand[np.argmin(costs)])
        alive[j] = False
        out.append(j)
        gone = [np.union1d(g, e.feats[j]) for e, g in zip(tests, gone, strict=True)]
        fits = [_exact_fit(e, g) for e, g in zip(tests, gone, strict=True)]
    for c, e, g, (keep, _, w_a) in zip(consumers, tests, gone, fits, strict=True):
        if g.size:
            removed = np.concatenate([c.feats[j] for j in out])
            _remove(c, removed)
            if e.features:
                c.w[:, :, keep] = w_a
    return out


def obs_ranking(group: ChannelGroup, consumers: list[_Consumer], chunks: int = 64) -> GroupRanking:
    """Greedy structured OBS: repeatedly drop the cheapest channels (a chunk at a time), compensating.

    A chunk is removed jointly (its features form one block F), so its price includes the interactions
    between its channels; chunks are ~1/64 of the group, which keeps big groups fast. Exactly redundant
    channels (``free_channels``) come first, at no cost.
    """
    alive = np.ones(group.size, bool)
    order: list[int] = free_channels(consumers, alive)
    error = [0.0] * (len(order) + 1)
    step = max(1, group.size // chunks)
    while alive.sum() > 1:
        cand = np.flatnonzero(alive)
        costs = sum(_single_costs(c, cand) / c.energy for c in consumers)
        take = cand[np.argsort(costs, kind="stable")[: min(step, len(cand) - 1)]]
        err = 0.0
        for c in consumers:
            f = np.concatenate([c.feats[j] for j in take])
            if f.size:
                err += _block_cost(c, f) / c.energy
                _remove(c, f)
        alive[take] = False
        # spread the chunk's joint error over its channels in order of their single prices
        start = error[-1]
        share = np.sort(costs[np.isin(cand, take)])
        share = share / share.sum() if share.sum() > 0 else np.full(len(take), 1.0 / len(take))
        for j, part in zip(take, np.cumsum(share), strict=True):
            order.append(int(j))
            error.append(start + max(err, 0.0) * float(part))
    order.append(int(np.flatnonzero(alive)[0]))
    error.append(np.inf)  # removing the last channel empties the group: never allowed
    return GroupRanking(group.id, np.array(order), np.array(error))


@dataclass
class RankData:
    """What the criteria read: the trace and weights; per consumer layer its input Hessian H (rows: the
    rows summed into it; inverses: H⁻¹ for ``woodfisher``); BN scales γ/√(σ²+ε) by producer; channel
    statistics by tensor (``activation``, ``apoz``); OBS dampening λ = damp·mean(diag H)."""

    trace: Trace
    inits: Mapping[str, np.ndarray]
    node_inputs: Mapping[str, list[str]]
    layers: Mapping[str, LinearLayer] = field(default_factory=dict)
    hessians: Mapping[str, np.ndarray] = field(default_factory=dict)
    rows: Mapping[str, int] = field(default_factory=dict)
    inverses: Mapping[str, np.ndarray] = field(default_factory=dict)
    bn_scales: Mapping[str, np.ndarray] = field(default_factory=dict)
    channel_stats: Mapping = field(default_factory=dict)
    damp: float = 0.01

    @classmethod
    def of(cls, model: onnx.ModelProto, trace: Trace, **stats) -> RankData:
        """The data of ``model`` (weights, node inputs, linear layers) plus the given statistics (None:
        none)."""
        return cls(
            trace,
            initializer_dict(model),
            {n.name: list(n.input) for n in model.graph.node},
            linear_layers(model),
            **{k: v for k, v in stats.items() if v is not None},
        )


def _obs_group(g: ChannelGroup, data: RankData) -> GroupRanking | None:
    consumers = []
    for m in data.trace.members_of(g.id):
        if m.role == "consumer" and m.kind == "param" and m.node in data.layers and m.node in data.hessians:
            c = _obs_consumer(data, g, m)
            if c is not None:
                consumers.append(c)
    return obs_ranking(g, consumers) if consumers else None


def _bn_scores(g: ChannelGroup, data: RankData) -> np.ndarray | None:
    vals = [
        np.abs(data.bn_scales[n])[pos]
        for n, r in g.members
        if r == "producer" and n in data.bn_scales
        for pos in _producer_positions(data.trace, g, n)
    ]
    return sum(v / max(v.mean(), 1e-30) for v in vals) if vals else None


def _activation_scores(criterion: str):
    def scores(g: ChannelGroup, data: RankData) -> np.ndarray | None:
        vals = []
        for tensor, cs in data.channel_stats.items():
            view = data.trace.views.get(tensor)
            if view is None or not view.plain:
                continue
            for pos in _channel_positions(data.trace, g, view.space):
                vals.append(cs.mean_abs[pos] if criterion == "activation" else 1.0 - cs.apoz[pos] + 1e-6)
        return sum(v / max(v.mean(), 1e-30) for v in vals) if vals else None

    return scores


def _fpgm_scores(g: ChannelGroup, data: RankData) -> np.ndarray | None:
    members = _member_channel_values(data.trace, g, data.inits, data.node_inputs, roles=("producer",))
    return fpgm_scores(members) if members else None


# criterion → per-channel scores of a group (None: no data for it, fall back to magnitude)
SCORERS = {
    "bn-scale": _bn_scores,
    "activation": _activation_scores("activation"),
    "apoz": _activation_scores("apoz"),
    "fpgm": _fpgm_scores,
}
MAGNITUDE_FALLBACK_SILENT = ("magnitude", "magnitude-l1", "obs", "woodfisher", "fpgm")


def rank_groups(
    criterion: str, groups: list[ChannelGroup], data: RankData, seed: int = 0
) -> tuple[dict[int, GroupRanking], list[str]]:
    """A ranking for every group under ``criterion``; returns (rankings, warnings about fallbacks).

    ``obs`` / ``woodfisher``: greedy structured OBS over the group's consumers (``obs_ranking``); the
    score criteria: the removal order of their scores, lowest first (``_curve``); a group without the
    data its criterion needs is ranked by weight magnitude."""
    rng = np.random.default_rng(seed)
    rankings: dict[int, GroupRanking] = {}
    warnings: list[str] = []
    for g in groups:
        scores = None
        if criterion in ("obs", "woodfisher"):
            ranking = _obs_group(g, data)
            if ranking is not None:
                rankings[g.id] = ranking
                continue
            warnings.append(f"group {g.id}: no consumer statistics for {criterion}, ranked by magnitude")
        if criterion == "random":
            scores = rng.random(g.size)
        elif criterion in SCORERS:
            scores = SCORERS[criterion](g, data)
        if scores is None:
            if criterion not in MAGNITUDE_FALLBACK_SILENT:
                warnings.append(f"group {g.id}: no data for '{criterion}', ranked by magnitude")
            members = _member_channel_values(data.trace, g, data.inits, data.node_inputs)
            scores = (
                magnitude_scores(members, p=1 if criterion == "magnitude-l1" else 2)
                if members
                else rng.random(g.size)
            )
        order, err = _curve(np.asarray(scores, np.float64))
        err[-1] = np.inf
        rankings[g.id] = GroupRanking(g.id, order, err)
    return rankings, warnings


def _producer_positions(trace: Trace, group: ChannelGroup, node: str) -> list[np.ndarray]:
    spaces = {m.space for m in trace.members if m.node == node and m.role == "producer"}
    return [p for s in spaces for p in _channel_positions(trace, group, s)]
