"""Measured sensitivity (SPDY-style): how much each group's pruning actually hurts the model's outputs.

Layer-local error estimates (OBS) say how well a consumer can absorb a removal, not how the damage
propagates to the outputs; early high-resolution groups look cheap locally and are not. So each group is
pruned *alone* (in its ranking order) to a few widths, its consumers get the compensation the pipeline
will give them anyway (``compensate``: OBS's update from the dense Hessians; sliced alone, a group's
damage is mostly what that update repairs), and the dense-vs-pruned output damage is measured on a few
calibration batches; the allocator then uses these end-to-end curves:

    damage = mean KL(softmax(dense) ‖ softmax(pruned))  for classifier outputs,
             mean over components of 1 − R²_c             otherwise (``fidelity.component_r2``: each
                                                            component's error over its own spread),
    summed over outputs.

A plan that cuts a group past its deepest trial to its last quarter is checked there (``guard_deep_cuts``):
the curve beyond the trials is an extrapolation, and it is raised wherever the measurement says it was too
low.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx

from .calibration.collect import downstream_cut, suffix_model, tapped_session
from .channels import ChannelGroup, Trace
from .criteria import GroupRanking
from .fidelity import classifier_outputs, component_r2, is_classifier, mean_kl, run_all
from .passes.prune_channels import prune_channels

Feeds = Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]]  # one batch, or batches
Measure = Callable[[list[np.ndarray], list[np.ndarray]], float]  # (dense outputs, pruned outputs) -> damage

# Measured damage at or below this is float32 noise (a relative output error of 1e-5), not damage.
QUIET = 1e-10
# Where a group measures QUIET at every fraction, it is measured at these as well (until one is not quiet).
QUIET_FRACTIONS = (0.75, 0.9)


def output_damage(
    dense: list[np.ndarray], other: list[np.ndarray], classifier: Sequence[bool] | None = None
) -> float:
    """Summed over outputs: KL for class scores (``classifier`` per output, see ``fidelity.compare``), else
    the
    mean over the output's components of their standardized squared error 1 − R²_c."""
    total = 0.0
    for a, b, scores in zip(
        dense, other, classifier if classifier is not None else [True] * len(dense), strict=True
    ):
        if is_classifier(a.shape, scores):
            total += mean_kl(a.astype(np.float64), b.astype(np.float64))
        else:
            total += float(np.mean(1.0 - component_r2(a, b)))
    return total


def metric_measure(metric, names: Sequence[str], classifier: Sequence[bool]) -> Measure | None:
    """The damage trials price when the user's ``--metric-fn`` is a shipped metric with a smooth stand-in
    (``metrics.DAMAGE``: a detector's box IoU and score error on the anchors that carry detections): that
    stand-in for the output it reads, ``output_damage`` for the others. None for any other metric."""
    if metric is None or metric.damage is None:
        return None
    used = metric.options.get("output") or names[0]

    def measure(dense: list[np.ndarray], other: list[np.ndarray]) -> float:
        rest = [(a, b, c) for n, a, b, c in zip(names, dense, other, classifier, strict=True) if n != used]
        total = metric.damage(
            dict(zip(names, dense, strict=True)), dict(zip(names, other, strict=True)), **metric.options
        )
        return total + (output_damage(*map(list, zip(*rest, strict=True))) if rest else 0.0)

    return measure


def as_batches(feeds: Feeds) -> list[Mapping[str, np.ndarray]]:
    return [feeds] if isinstance(feeds, Mapping) else list(feeds)


def group_starts(
    model: onnx.ModelProto, trace: Trace, groups: Sequence[ChannelGroup], feeds: Feeds
) -> dict[int, tuple]:
    """Per group, where a trial model pruning it alone starts to differ from the dense one, for
    ``Trials.run``'s
    ``start``: the nodes of every space holding the group's channels (pruning and compensation edit only
    those) and all below them, and the dense values on ``feeds`` that they read. One dense pass for all
    groups; a trial then runs only its suffix (the upstream part of every trial is the dense model)."""
    cuts = {}
    for g in groups:
        nodes = {m.node for m in trace.members_of(g.id)}
        cut = downstream_cut(model, nodes)
        if cut is not None:
            cuts[g.id] = cut
    values = [dict(b) for b in as_batches(feeds)]
    taps = sorted({t for _, reads in cuts.values() for t in reads} - set(values[0]))
    if taps:
        sess, needed = tapped_session(model, taps)
        for v in values:
            v.update(zip(taps, sess.run(taps, {k: x for k, x in v.items() if k in needed}), strict=True))
    return {gid: (cut, values) for gid, cut in cuts.items()}


class Trials:
    """Trials of ``model`` pruned on ``feeds`` against its dense outputs there, computed once and shared by
    the
    sensitivity curves, the guard and the search: ``compensate(plan, pruned)`` edits each trial model in place
    before it runs, ``measure`` replaces ``output_damage``; a single group's trial runs from its start
    (``group_starts``, found for ``groups`` on first use)."""

    def __init__(
        self,
        model: onnx.ModelProto,
        trace: Trace,
        groups: Sequence[ChannelGroup],
        feeds: Feeds,
        compensate: Callable[[dict, onnx.ModelProto], object] | None = None,
        measure: Measure | None = None,
    ):
        self.model, self.trace, self.groups = model, trace, groups
        self.compensate, self.measure = compensate, measure
        self.feeds = as_batches(feeds)
        self.dense, self.scores = run_all(model, self.feeds), classifier_outputs(model)
        self._starts: dict[int, tuple] | None = None

    def damage(self, plan: dict) -> float:
        """The damage of ``plan``; one group's plan runs from that group's start."""
        start = None
        if len(plan) == 1:
            if self._starts is None:
                self._starts = group_starts(self.model, self.trace, self.groups, self.feeds)
            start = self._starts.get(next(iter(plan)))
        return self.run(plan, start)

    def run(self, plan: dict, start: tuple | None = None) -> float:
        """Output damage of the model pruned by ``plan`` (and compensated in place) against the dense outputs.
        ``start``: (the cut below which the trial model is the dense one, ``collect.downstream_cut``; the
        dense
        values it reads, per batch): only the nodes downstream of the plan's edits run."""
        pruned = prune_channels(self.model, self.trace, plan, infer=False)
        if self.compensate is not None:
            self.compensate(plan, pruned)
        if start is None:
            out = run_all(pruned, self.feeds)
        else:
            cut, values = start
            out = run_all(suffix_model(pruned, cut, values[0]), [{t: v[t] for t in cut[1]} for v in values])
        return (
            self.measure(self.dense, out)
            if self.measure is not None
            else output_damage(self.dense, out, self.scores)
        )


def measured_rankings(
    trials: Trials,
    groups: list[ChannelGroup],
    rankings: Mapping[int, GroupRanking],
    fractions: tuple[float, ...] | None = None,
    mode: str = "measured",
    progress: Callable[[int], None] | None = None,
    points: dict[int, list[tuple[int, float]]] | None = None,
) -> dict[int, GroupRanking]:
    """Rankings with the same channel order and an error curve from measured damage (``trials``): interpolated
    (``measured``) or the criterion's own curve rescaled to the measured level (``scaled``). ``points``
    receives each group's measured (channels removed, damage) pairs."""
    # the rescaled curve needs only its level: two points do; an interpolated curve needs three
    fractions = fractions or ((0.25, 0.5) if mode == "scaled" else (0.25, 0.5, 0.75))
    out: dict[int, GroupRanking] = {}
    for g in groups:
        r = rankings[g.id]
        xs, ys = [0.0], [0.0]
        # a group that shows no damage where it is measured (its removals are exactly redundant there) is
        # measured further out, so that its level comes from damage, never from numerical noise
        for f in (*fractions, *(f for f in QUIET_FRACTIONS if f > max(fractions))):
            if f > max(fractions) and max(ys) > QUIET:
                break
            removed = min(int(round(f * g.size)), g.size - 1)
            if removed <= 0 or removed / g.size in xs:
                continue
            ys.append(trials.damage({g.id: np.sort(r.order[removed:])}))
            xs.append(removed / g.size)
            if points is not None:
                points.setdefault(g.id, []).append((removed, ys[-1]))
        xs.append(1.0)
        ys.append(max(ys[-1] * 2.0, ys[-1] + 1e-9) if len(ys) > 1 else 1.0)  # emptying the group: worst
        curve = np.interp(np.arange(g.size + 1) / g.size, xs, np.maximum.accumulate(ys))
        if (
            mode == "scaled"
        ):  # the criterion's curve shape, at the measured level (mean ratio over the points)
            est = r.error[:-1]
            # only points with damage set the level: a quiet point would scale the whole curve to zero and
            # make every removal of the group look free; with none the criterion's own curve stands
            ratios = [
                y / est[int(round(x * g.size))]
                for x, y in zip(xs[1:-1], ys[1:-1], strict=True)
                if est[int(round(x * g.size))] > 0 and y > QUIET
            ]
            curve = np.append(est * (float(np.mean(ratios)) if ratios else 1.0), np.inf)
        curve[-1] = np.inf
        out[g.id] = GroupRanking(g.id, r.order, curve)
        if progress:
            progress(1)
    return out


# A measured damage more than this fraction above the curve's prediction raises the curve.
GUARD_TOLERANCE = 0.1
# The guard checks cuts that keep less than this fraction of a group: where a criterion's shape, extrapolated
# past the trials, says least (the last channels of a branch feeding one small output component).
GUARD_BELOW = 0.25


def raised_curve(error: np.ndarray, deepest: int, removed: int, damage: float) -> np.ndarray:
    """``error`` (damage after m removals, monotone) made to pass no lower than ``damage`` at ``removed``
    removals: the shortfall δ = damage − error[removed] is added in full from ``removed`` on and ramped in
    linearly from the deepest earlier measurement ``deepest`` (where the curve stays as it was);
    ``error[-1]`` (the emptied group) stays."""
    out = error.astype(float).copy()
    delta = damage - out[removed]
    if delta <= 0:
        return out
    m = np.arange(len(out) - 1)
    ramp = np.clip((m - deepest) / max(removed - deepest, 1), 0.0, 1.0)
    out[:-1] = np.maximum.accumulate(out[:-1] + delta * ramp)
    return out


def guard_deep_cuts(
    trials: Trials,
    groups: Sequence[ChannelGroup],
    rankings: dict[int, GroupRanking],
    points: dict[int, list[tuple[int, float]]],
    plan: Mapping[int, np.ndarray],
    allocate: Callable[[], Mapping[int, np.ndarray]],
    rounds: int = 3,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict, dict]:
    """No group is cut to its last channels unless measured damage supports it.

    A plan may cut a group past its deepest sensitivity trial, where its curve is the criterion's shape
    extrapolated — and a criterion's shape says least about the last channels (a branch feeding one small
    output component looks cheap locally). Each group cut past its trials to fewer than ``GUARD_BELOW`` of
    its channels is measured alone at its planned width (the same trial as the curves', ``trials``); where
    the damage exceeds the curve's prediction by more than ``GUARD_TOLERANCE``, the curve is raised through
    the measurement (``raised_curve``) in ``rankings`` and ``allocate()`` (which reads ``rankings``) plans
    again. Up to ``rounds`` rounds; every measurement is added to ``points``.

    Single-group damages do not add up, so a re-plan is only a proposal: each plan the rounds made is
    measured whole (``trials.damage``) and the least damaging one is kept. Returns the plan and
    {"measurements": one record each, "plans": the whole-plan damages (first: the plan given), "kept": the
    index of the plan kept, "unverified": the groups the kept plan cuts that deep past their measurements}."""
    records: list[dict] = []
    plan = dict(plan)
    plans = [plan]
    for rnd in range(rounds):
        raised = False
        for g in groups:
            if g.id not in plan:
                continue
            removed = g.size - len(plan[g.id])
            deepest = max((m for m, _ in points.get(g.id, [])), default=0)
            if removed <= deepest or len(plan[g.id]) >= GUARD_BELOW * g.size:
                continue
            damage = trials.damage({g.id: np.asarray(plan[g.id])})
            points.setdefault(g.id, []).append((removed, damage))
            r = rankings[g.id]
            predicted = float(r.error[removed])
            low = damage > predicted * (1 + GUARD_TOLERANCE) + QUIET
            records.append(
                {
                    "round": rnd,
                    "group": g.id,
                    "kept": len(plan[g.id]),
                    "channels": g.size,
                    "predicted": predicted,
                    "measured": damage,
                    "raised": bool(low),
                }
            )
            if low:
                rankings[g.id] = GroupRanking(g.id, r.order, raised_curve(r.error, deepest, removed, damage))
                raised = True
            if progress:
                progress(1)
        if not raised:
            break
        plan = dict(allocate())
        plans.append(plan)
    damages = [trials.damage(p) for p in plans] if len(plans) > 1 else []
    kept = int(np.argmin(damages)) if damages else 0
    plan = plans[kept]
    unverified = [
        g.id
        for g in groups
        if g.id in plan
        and len(plan[g.id]) < GUARD_BELOW * g.size
        and g.size - len(plan[g.id]) > max((m for m, _ in points.get(g.id, [])), default=0)
    ]
    return plan, {"measurements": records, "plans": damages, "kept": kept, "unverified": unverified}
