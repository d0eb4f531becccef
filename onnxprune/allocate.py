"""Allocation: how many channels each group keeps so that the model meets a cost target.

Costs couple neighbouring groups (a conv's MACs depend on its input and output widths), so every
allocator proposes widths against a *linearized* saving and the exact cost of the proposal is then
predicted by the tracer or the latency table (``cost_of``); the requested saving is tightened until the
exact cost meets
the budget. ``dp`` is SPDY-style: minimize Σ_g e_g(k_g) subject to Σ_g saving_g(k_g) ≥ S by dynamic
programming over discretized savings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from .criteria import GroupRanking
from .errors import TargetUnreachableError


@dataclass
class GroupChoice:
    """What the allocator may do with one group."""

    group: int
    size: int
    min_keep: int
    multiple: int
    saving_per_channel: float  # linearized cost saved per removed channel
    ranking: GroupRanking

    def widths(self, max_options: int = 48) -> np.ndarray:
        """Allowed kept widths (multiples of ``multiple``, ≥ min_keep, the full width always included)."""
        lo = max(self.min_keep, 1)
        ks = np.arange(self.size, lo - 1, -1)
        ks = ks[(ks % self.multiple == 0) | (ks == self.size)]
        if len(ks) > max_options:
            pick = np.unique(np.round(np.linspace(0, len(ks) - 1, max_options)).astype(int))
            ks = ks[pick]
        return ks

    def error(self, keep: int) -> float:
        return float(self.ranking.error[self.size - keep])


def plan_from_widths(choices: list[GroupChoice], widths: dict[int, int]) -> dict[int, np.ndarray]:
    """Keep the most important channels: drop the first (size − k) of each ranking's order."""
    plan = {}
    for c in choices:
        k = widths.get(c.group, c.size)
        if k < c.size:
            plan[c.group] = np.sort(c.ranking.order[c.size - k :])
    return plan


def allocate_uniform(choices: list[GroupChoice], fraction: float) -> dict[int, int]:
    """Every group keeps the same fraction of its channels (rounded to its multiple, within its bounds)."""
    out = {}
    for c in choices:
        ks = c.widths(max_options=10**9)
        target = c.size * (1.0 - fraction)
        out[c.group] = int(ks[np.argmin(np.abs(ks - target))])
    return out


def allocate_global(choices: list[GroupChoice], saving: float) -> dict[int, int]:
    """One global ranking: remove channels in order of their (per-group normalized) marginal error."""
    widths = {c.group: c.size for c in choices}
    events = []
    for c in choices:
        ks = c.widths(max_options=10**9)
        for prev, k in zip(ks[:-1], ks[1:], strict=True):
            marginal = (c.error(int(k)) - c.error(int(prev))) / max(prev - k, 1)
            events.append((marginal, c.group, int(k), (prev - k) * c.saving_per_channel))
    events.sort(key=lambda e: (e[0], e[1], -e[2]))
    got = 0.0
    for _, gid, k, gain in events:
        if got >= saving:
            break
        if k < widths[gid]:
            widths[gid] = k
            got += gain
    return widths


def allocate_dp(
    choices: list[GroupChoice], saving: float, buckets: int = 2000, weights: Mapping[int, float] | None = None
) -> dict[int, int]:
    """Min Σ c_g·error_g subject to Σ linearized saving ≥ ``saving`` (knapsack over discretized savings).

    best[t] is the least error reaching saving bucket t (bucket ``buckets`` means "at least the target";
    gains round to the nearest bucket, so "at least" holds to half a bucket per group). Among plans of equal
    error the one that saves less wins: a flat (or zero) error curve must not make removals beyond the
    target look free. ``weights``: the per-group multipliers c_g (default 1) that ``search_allocation`` tunes.
    """
    top = buckets
    unit = max(saving, 1e-9) / top
    best = np.full(top + 1, np.inf)
    best[0] = 0.0
    saved = np.zeros(top + 1)  # linearized saving of each bucket's plan (for the tie-break)
    trail = []
    for c in choices:
        ks = c.widths()
        errs = np.array([c.error(int(k)) for k in ks]) * (weights.get(c.group, 1.0) if weights else 1.0)
        lin = (c.size - ks) * c.saving_per_channel
        # nearest bucket, not floor: flooring every group's gain loses up to a bucket per group, so a plan
        # that
        # meets the saving exactly (a lossless one) looked short of it; the caller checks the exact cost
        # anyway
        gains = np.minimum(np.floor(lin / unit + 0.5).astype(int), top)
        new = np.full(top + 1, np.inf)
        new_saved = np.zeros(top + 1)
        choice = np.zeros(top + 1, int)
        source = np.zeros(top + 1, int)
        for i, (e, g, s_lin) in enumerate(zip(errs, gains, lin, strict=True)):
            if not np.isfinite(e):
                continue
            if g < top:  # bucket t < top comes from exactly t − g
                cand, cand_saved = best[: top - g] + e, saved[: top - g] + s_lin
                t = np.arange(g, top)
                better = (cand < new[t]) | ((cand == new[t]) & (cand_saved < new_saved[t]))
                new[t[better]], new_saved[t[better]] = cand[better], cand_saved[better]
                choice[t[better]], source[t[better]] = i, t[better] - g
            lo = max(0, top - g)  # the saturated bucket collects every source from top − g up
            low = best[lo:].min()
            if not np.isfinite(low):
                continue
            ties = np.flatnonzero(best[lo:] == low) + lo
            j = int(ties[np.argmin(saved[ties])])
            if low + e < new[top] or (low + e == new[top] and saved[j] + s_lin < new_saved[top]):
                new[top], new_saved[top], choice[top], source[top] = low + e, saved[j] + s_lin, i, j
        trail.append((c, ks, choice, source))
        best, saved = new, new_saved
    if not np.isfinite(best[top]):
        return {c.group: int(c.widths(max_options=10**9)[-1]) for c in choices}  # as far as allowed
    widths, t = {}, top
    for c, ks, choice, source in reversed(trail):
        widths[c.group] = int(ks[choice[t]])
        t = source[t]
    return widths


def fill_budget(
    choices: list[GroupChoice],
    widths: dict[int, int],
    cost_of: Callable[[dict[int, int]], float],
    budget: float,
) -> dict[int, int]:
    """Give channels back while the exact cost stays within ``budget``: a plan that meets the target with
    room to spare is as good as the target allows only once no group can grow by one allowed step.

    Steps go greedily by error removed per linearized cost added (then the cheaper step): channels that
    cost damage come back first, free ones (a flat error curve) last, so the plan ends at the target
    instead of past it. A step that does not fit never will (later steps only add cost), so its group stops.
    """
    widths = dict(widths)
    ladders = {c.group: c.widths(max_options=10**9)[::-1] for c in choices}  # allowed widths, ascending
    by_id = {c.group: c for c in choices}
    open_groups = {c.group for c in choices}
    while open_groups:
        best = None
        for gid in open_groups:
            c, ladder = by_id[gid], ladders[gid]
            k = widths.get(gid, c.size)
            up = ladder[ladder > k]
            if not len(up):
                continue
            step = int(up[0])
            added = max((step - k) * c.saving_per_channel, 1e-30)
            key = (-(c.error(k) - c.error(step)) / added, added)
            if best is None or key < best[0]:
                best = (key, gid, step)
        if best is None:
            break
        _, gid, step = best
        trial = {**widths, gid: step}
        if cost_of(trial) <= budget * (1 + 1e-9):
            widths = trial
        else:
            open_groups.discard(gid)
    return widths


def fit_to_target(
    propose: Callable[[float], dict[int, int]],
    cost_of: Callable[[dict[int, int]], float],
    base_cost: float,
    budget: float,
    floor_cost: float,
    metric: str,
) -> tuple[dict[int, int], float]:
    """Tighten the requested linearized saving until the exact cost meets ``budget``."""

    def fmt(v: float) -> str:
        return f"{v:.3f} ms" if metric == "latency" else f"{v:,.0f}"

    if floor_cost > budget * (1 + 1e-9):
        raise TargetUnreachableError(
            f"target unreachable: {metric} can go down to {fmt(floor_cost)} at most "
            f"({base_cost / max(floor_cost, 1e-12):.2f}x), the target needs {fmt(budget)} "
            f"({base_cost / budget:.2f}x)"
        )
    saving = base_cost - budget
    best, previous, boost = None, None, 1.0
    for _ in range(40):
        widths = propose(saving)
        cost = cost_of(widths)
        if cost <= budget * (1 + 1e-9):
            best = (widths, cost)
            break
        # an overshoot smaller than the proposer's resolution leaves its answer unchanged: step up faster
        boost = boost * 2.0 if widths == previous else 1.0
        previous = widths
        saving += max(cost - budget, 1e-6 * base_cost) * 1.05 * boost
    if best is None:
        raise TargetUnreachableError(
            f"could not meet the {metric} target {fmt(budget)}; best reached {fmt(cost)}"
        )
    return best


def allocate_to_budget(
    choices: list[GroupChoice],
    cost_of: Callable[[dict[int, int]], float],
    base_cost: float,
    budget: float,
    floor_cost: float,
    metric: str,
    allocation: str = "dp",
    weights: Mapping[int, float] | None = None,
) -> dict[int, int]:
    """Widths whose exact cost meets ``budget`` and lies as close to it as the widths allow: ``allocation``'s
    proposal (``dp``: ``allocate_dp`` with ``weights``; ``global``: ``allocate_global``) tightened until the
    exact cost meets the budget (``fit_to_target``), then filled back up to it (``fill_budget``)."""

    def propose(saving):
        if allocation == "dp":
            return allocate_dp(choices, saving, weights=weights)
        return allocate_global(choices, saving)

    widths, _ = fit_to_target(propose, cost_of, base_cost, budget, floor_cost, metric)
    return fill_budget(choices, widths, cost_of, budget)


def search_allocation(
    groups: list[int],
    propose: Callable[[dict[int, float]], dict[int, int]],
    damage: Callable[[dict[int, int]], float],
    evals: int,
    seed: int = 0,
    step: float = 1.0,
) -> tuple[dict[int, int], dict]:
    """SPDY-style search: tune the per-group weights c_g of the DP objective Σ c_g·e_g(k_g) by the real
    damage.

    The error curves are per group, measured or estimated one group at a time, and damages do not add up;
    so each candidate c (log c_g perturbed by N(0, ``step``²) on a random subset of groups, the subset
    shrinking from half the groups to one over the search) is turned into widths by ``propose`` (the DP at
    the budget) and scored by ``damage`` (the whole plan applied, end to end). Starts at c = 1, keeps the
    best: never worse than the plain DP on what ``damage`` measures. Returns (widths, search record).
    """
    rng = np.random.default_rng(seed)
    log_c = np.zeros(len(groups))
    widths = propose({g: 1.0 for g in groups})
    best, seen = damage(widths), {}
    seen[tuple(sorted(widths.items()))] = best
    record = {"evaluations": 1, "initial_damage": best, "accepted": 0}
    for i in range(1, evals):
        share = 0.5 * (1.0 - i / evals)
        picked = rng.choice(len(groups), max(1, int(round(share * len(groups)))), replace=False)
        cand = log_c.copy()
        cand[picked] += rng.normal(0.0, step, len(picked))
        cand_widths = propose(dict(zip(groups, np.exp(cand), strict=True)))
        key = tuple(sorted(cand_widths.items()))
        if key not in seen:
            seen[key] = damage(cand_widths)
            record["evaluations"] += 1
        if seen[key] < best:
            best, log_c, widths = seen[key], cand, cand_widths
            record["accepted"] += 1
    record["damage"] = best
    return widths, record
