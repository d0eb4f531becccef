"""The stages of `compress`, each a function of its inputs returning a small dataclass.

    load → trace → select → collect_statistics → rank → sensitivity → allocate → guard → apply
         → meet_latency → refit → sparsify → verify → int8

``pipeline.compress`` calls them in this order; ``Run`` carries what every stage shares (options, the user
metric, progress bars, warnings, stage timers). A stage reads only its arguments and returns its result.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx

from .allocate import (
    GroupChoice,
    allocate_to_budget,
    allocate_uniform,
    fit_to_target,
    plan_from_widths,
    search_allocation,
)
from .calibration.augment import DEFAULT_MIN_SIDE, image_input
from .calibration.collect import Wanted, collect_split_statistics
from .calibration.readers import CalibrationSet, load_calibration
from .channels import ChannelGroup, Trace
from .costs import ModelCost, model_cost, param_slots
from .criteria import FREE_ROWS, GroupRanking, RankData, rank_groups, woodfisher_hessian
from .errors import InputError, InternalError, TargetUnreachableError
from .fidelity import classifier_outputs, compare, run_all
from .latency_table import LATENCY_ROUND_TO, LatencyTable, build_table, latency_feeds
from .layers import LinearLayer, initializer_dict, linear_layers
from .metrics import Metric
from .modelio import load_model, require_runnable
from .options import DATA_CRITERIA, CompressOptions
from .passes.normalize import NormalizeReport, normalize
from .passes.prune_channels import prune_channels
from .passes.reconstruct import RefitInputs, compensate_locally, reconstruct
from .passes.sparsify import SparsifyOptions, sparsify
from .passes.staged import validation_halves
from .sensitivity import Trials, guard_deep_cuts, measured_rankings, metric_measure
from .shapes import Shape, graph_inputs, static_batch
from .sparsity import Pattern
from .timing import Timer
from .tracer import trace_channels

Plan = dict[int, np.ndarray]  # group id → kept channel indices of the group


@dataclass
class Run:
    """What every stage shares: the options, the user's metric, progress bars, warnings and timers."""

    opts: CompressOptions
    metric: Metric | None = None
    progress: Callable | None = None  # progress(label, total) → advance(i[, n]) (summary.progress_factory)
    warnings: list[str] = field(default_factory=list)
    timer: Timer = field(default_factory=Timer)

    def bar(self, label: str, total: int | None = None):
        return self.progress(label, total) if self.progress else None

    def stage_bar(self, label: str):
        """A bar for passes that report (stage, i, n)."""
        bar = self.bar(label)
        return (lambda _stage, i, n: bar(i, n)) if bar else None


# -- load ------------------------------------------------------------------------------------------


@dataclass
class Loaded:
    model: onnx.ModelProto  # normalized
    norm: NormalizeReport
    calib: CalibrationSet | None


def load(run: Run, path: Path) -> Loaded:
    """Read, check and normalize the model; read the calibration data (statistics + held-out rows)."""
    opts = run.opts
    with run.timer("load_normalize"):
        original = load_model(path)
        require_runnable(original, path)
        model, norm = normalize(original)
    calib = None
    if opts.calib:
        with run.timer("load_calibration"):
            calib = load_calibration(
                opts.calib,
                model,
                samples=opts.calib_samples,
                preprocess=opts.preprocess,
                input_size=opts.input_size,
                seed=opts.seed,
            )
            run.warnings.extend(calib.warnings)
            require_finite_outputs(model, calib)
    else:
        run.warnings.append("no --calib: data-free criteria only, no reconstruction, no fidelity check")
    return Loaded(model, norm, calib)


def require_finite_outputs(model: onnx.ModelProto, calib: CalibrationSet, samples: int = 16) -> None:
    """Refuse (exit 2) a model that computes NaN or infinite outputs on the first calibration samples: its
    statistics, refit and INT8 ranges would all be NaN."""
    names = [o.name for o in model.graph.output]
    batch = next(calib.batches("calib", samples))
    for name, values in zip(names, run_all(model, [batch]), strict=True):
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise InputError(
                f"the model computes NaN or infinite values in output '{name}' on the "
                f"calibration data (first {len(next(iter(batch.values())))} samples)"
            )


# -- trace -----------------------------------------------------------------------------------------


@dataclass
class Traced:
    trace: Trace
    shapes: dict[str, Shape]  # the cost probes' input shapes ({}: the model's own, batch 1)
    base: ModelCost
    layers: dict[str, LinearLayer]
    inits: dict[str, np.ndarray]


def trace_model(run: Run, loaded: Loaded) -> Traced:
    """Channel groups and the dense cost at one sample (or the batch a static-batch model fixes)."""
    opts, calib = run.opts, loaded.calib
    shapes = dict(opts.input_shapes)
    if calib is not None and not shapes:
        shapes = {k: (calib.fixed_batch or 1, *v.shape[1:]) for k, v in calib.calib.items()}
    with run.timer("trace"):
        trace = trace_channels(loaded.model, shapes or None)
    with run.timer("cost"):
        base = model_cost(loaded.model, shapes or None)
    counted = base.macs if opts.metric == "macs" else base.params
    if opts.target > 1.0 and opts.metric != "latency" and not counted:
        what = "MACs" if opts.metric == "macs" else opts.metric
        raise TargetUnreachableError(f"target unreachable: the model has no {what} to reduce (0 counted)")
    return Traced(trace, shapes, base, linear_layers(loaded.model), initializer_dict(loaded.model))


# -- select ----------------------------------------------------------------------------------------


@dataclass
class Scope:
    """The groups that may shrink, why the others may not, and how they are ranked."""

    groups: list[ChannelGroup]
    skipped: dict[int, str]
    criterion: str
    measured: bool  # sensitivity curves are measured (else the criterion's estimate alone)


def select(run: Run, loaded: Loaded, traced: Traced) -> Scope:
    opts = run.opts
    criterion = opts.criterion
    if loaded.calib is None and criterion in DATA_CRITERIA:
        run.warnings.append(f"criterion '{criterion}' needs --calib: using magnitude")
        criterion = "magnitude"
    exclude = re.compile(opts.exclude) if opts.exclude else None
    eligible, skipped = [], {}
    for g in traced.trace.groups:
        if not g.prunable:
            continue
        hit = next((n for n, _ in g.members if exclude and exclude.search(n)), None)
        if hit:
            skipped[g.id] = f"excluded by --exclude (node '{hit}')"
            continue
        eligible.append(g)
    if opts.target == 1.0 and opts.metric != "latency":  # e.g. --sparsity alone: no channel statistics needed
        skipped.update({g.id: "--target 1x: no channel pruning asked for" for g in eligible})
        eligible = []
    measured = bool(
        loaded.calib is not None
        and opts.sensitivity != "estimated"
        and opts.allocation != "uniform"
        and eligible
    )
    return Scope(eligible, skipped, criterion, measured)


# -- statistics ------------------------------------------------------------------------------------


@dataclass
class HalfStats:
    """Half A's Hessians and half B's inputs: the trials compensate on one half and measure on the other."""

    hessians: dict[str, np.ndarray]
    rows: dict[str, int]
    feeds: list[dict[str, np.ndarray]]


@dataclass
class LayerStats:
    """Per consumer layer: input Hessian H = Σ x xᵀ and its row count (and H⁻¹ for woodfisher); per tapped
    tensor: channel statistics; the refit's sample count. ``release`` frees the Hessians."""

    hessians: dict[str, np.ndarray] | None = None
    rows: dict[str, int] | None = None
    inverses: dict[str, np.ndarray] = field(default_factory=dict)
    channels: dict | None = None
    refit_samples: int = 0
    half: HalfStats | None = None

    def release(self) -> None:
        self.hessians = self.inverses = None


def collect_statistics(run: Run, loaded: Loaded, traced: Traced, scope: Scope) -> LayerStats:
    """One onnxruntime pass over the calibration set (and its mosaics): what the criterion and the trials
    read."""
    opts, calib = run.opts, loaded.calib
    if calib is None or scope.criterion not in DATA_CRITERIA:
        return LayerStats(refit_samples=opts.refit_samples)
    _add_mosaics(run, calib)
    with run.timer("calibrate"):
        wanted, axes = _tapped(traced, scope)
        halves = None
        # photo-like calibration (shared sources or mosaics) gets disjoint halves for the trials
        if scope.measured and wanted and (calib.groups is not None or calib.mosaics):
            halves = sensitivity_halves(calib, calib.n_statistics() - calib.n_calib(), opts.seed)
        if halves is not None and calib.mosaics:  # the whole set's mosaics: each half's, from its own images
            calib.mosaics = {
                k: np.concatenate([h.mosaics[k] for h in halves if h.mosaics]) for k in calib.mosaics
            }
        parts = [h.batches("statistics", 16) for h in halves] if halves else [calib.batches("statistics", 16)]
        request = Wanted(
            {n: traced.layers[n] for n in wanted},
            axes,
            dtype=np.float32 if opts.stats_dtype == "float32" else np.float64,
            sample_rows=opts.woodfisher_rows if scope.criterion == "woodfisher" else 0,
            seed=opts.seed,
        )
        every = collect_split_statistics(
            loaded.model, parts, request, progress=run.bar("calibration", calib.n_statistics())
        )
        out = LayerStats()
        if halves:  # half A's Hessians price the sensitivity trials; the whole set's: A + B
            a = every[0].hessians | every[0].samples
            out.half = HalfStats(
                {n: acc.hessian() for n, acc in a.items()},
                {n: acc.samples for n, acc in a.items()},
                [
                    {k: v.copy() for k, v in b.items()}
                    for b in halves[0].first("holdout", opts.sensitivity_samples)
                ],
            )
            every[0].merge(every.pop())
            del halves, a  # their arrays and mosaics are no longer needed
        stats = every.pop()
        out.hessians = {n: h.hessian() for n, h in stats.hessians.items()}
        out.rows = {n: h.samples for n, h in stats.hessians.items()}
        out.refit_samples = determined_samples(stats.hessians, calib.n_statistics(), opts.refit_samples)
        stats.hessians.clear()  # the sums are no longer needed
        for n, sample in stats.samples.items():
            out.hessians[n], out.inverses[n] = woodfisher_hessian(sample.rows, opts.damp, sample.samples)
            out.rows[n] = sample.samples
        out.channels = stats.channels
    return out


def _add_mosaics(run: Run, calib: CalibrationSet) -> None:
    """Synthetic 2x2 mosaics for the statistics: ``--calib-mosaics`` of them, by default one per calibration
    image for photo-sized image inputs."""
    opts = run.opts
    if opts.calib_mosaics is None:
        if image_input(calib.calib, DEFAULT_MIN_SIDE):
            calib.add_mosaics(calib.n_calib(), opts.seed)
    elif opts.calib_mosaics:
        warning = calib.add_mosaics(opts.calib_mosaics, opts.seed)
        if warning:
            run.warnings.append(warning)


def _tapped(traced: Traced, scope: Scope) -> tuple[set[str], dict[str, int]]:
    """(consumer layers whose input Hessians are summed, tensors whose channel statistics are taken →
    axis)."""
    trace, layers = traced.trace, traced.layers
    wanted = {
        m.node
        for g in scope.groups
        for m in trace.members_of(g.id)
        if m.role == "consumer" and m.node in layers
    }
    if scope.criterion not in ("activation", "apoz"):
        return wanted, {}
    ids = {g.id for g in scope.groups}
    axes = {
        name: view.axis
        for name, view in trace.views.items()
        if view.plain
        and any(s.group in ids for s in trace.segments[view.space])
        and any(name == layers[c].input for c in wanted)
    }
    return set(), axes


def sensitivity_halves(calib: CalibrationSet, mosaics: int, seed: int) -> list[CalibrationSet] | None:
    """Two group-disjoint halves of the calibration sources (each: ``calib`` its samples, ``holdout`` the
    other half's), each with its share of ``mosaics`` built from its own images; None when a half would be
    empty or smaller than the model's static batch.

    Measured on the samples the compensation was fitted to, a trial looks repaired even where the
    compensation does not generalize, and the allocator spends the budget on the wrong groups; fitting on
    half A and measuring on half B prices what it does on new inputs. The statistics pass reads the halves as
    two streams (``collect_split_statistics``), so half A's Hessians cost no second pass.
    """
    side = (
        validation_halves([calib.n_calib()], calib.groups)[0]
        if calib.groups is not None
        else np.arange(calib.n_calib()) % 2
    )
    if side.min() == side.max():
        return None
    a, b = ({k: v[side == s] for k, v in calib.calib.items()} for s in (0, 1))
    halves = [
        replace(calib, calib=a, holdout=b, groups=None, mosaics={}),
        replace(calib, calib=b, holdout=a, groups=None, mosaics={}),
    ]  # shared arrays: no second copy
    if calib.fixed_batch and min(h.n_calib() for h in halves) < calib.fixed_batch:
        return None
    first = round(mosaics * halves[0].n_calib() / calib.n_calib())
    for half, count in zip(halves, (first, mosaics - first), strict=True):
        if count:
            half.add_mosaics(count, seed)
    return halves


def determined_samples(sums, n_samples: int, least: int) -> int:
    """Calibration samples the refit reads: at least ``least``, and enough that each refit half has
    ``FREE_ROWS`` feature rows per weight of every consumer (a Flatten → Gemm reads one row per sample),
    so a removed channel that is a combination of kept ones is folded back exactly; ``sums``: the
    consumers' ``HessianSum`` over ``n_samples`` statistics samples. Capped by the caller at the
    calibration set."""
    need = least
    for acc in sums.values():
        per_sample = acc.n / max(n_samples, 1)
        if per_sample > 0:
            need = max(need, math.ceil(2 * FREE_ROWS * (acc.xx.shape[-1] + 1) / per_sample))
    return need


# -- rank, sensitivity -----------------------------------------------------------------------------


def rank(
    run: Run, loaded: Loaded, traced: Traced, scope: Scope, stats: LayerStats
) -> dict[int, GroupRanking]:
    """Each eligible group's removal order and error curve under the criterion."""
    data = RankData(
        traced.trace,
        traced.inits,
        {n.name: list(n.input) for n in loaded.model.graph.node},
        traced.layers,
        stats.hessians or {},
        stats.rows or {},
        stats.inverses or {},
        loaded.norm.bn_scales or {},
        stats.channels or {},
        run.opts.damp,
    )
    with run.timer("score"):
        rankings, warnings = rank_groups(scope.criterion, scope.groups, data, seed=run.opts.seed)
    run.warnings.extend(warnings)
    return rankings


@dataclass
class Compensation:
    """OBS compensation of a pruned copy from input Hessians (``compensate_locally``): what the refit repairs
    anyway no longer counts as damage. Returns the layers it changed."""

    model: onnx.ModelProto
    traced: Traced
    hessians: dict[str, np.ndarray]
    rows: dict[str, int]

    def __call__(self, plan: Plan, pruned: onnx.ModelProto) -> list[str]:
        k_in, k_out = self.traced.trace.layer_kept(self.traced.layers, plan)
        return compensate_locally(self.model, pruned, self.hessians, self.rows, k_in, k_out)


def searching(run: Run, loaded: Loaded) -> bool:
    """Whether ``--search-evals`` tunes the DP by measured damage."""
    opts = run.opts
    return loaded.calib is not None and opts.search_evals > 1 and opts.allocation == "dp"


def make_trials(run: Run, loaded: Loaded, traced: Traced, scope: Scope, stats: LayerStats) -> Trials | None:
    """The damage of a plan measured end to end (sensitivity curves, guard, search); compensated on half A and
    measured on half B where there are halves, else both on the first calibration samples."""
    opts, calib = run.opts, loaded.calib
    if stats.half is not None:
        feeds = stats.half.feeds
        comp = Compensation(loaded.model, traced, stats.half.hessians, stats.half.rows)
    elif calib is not None:
        feeds = calib.first("calib", opts.sensitivity_samples) or None
        comp = Compensation(loaded.model, traced, stats.hessians, stats.rows) if stats.hessians else None
    else:
        return None
    if feeds is None or not (scope.measured or searching(run, loaded)):
        return None
    model = loaded.model
    measure = metric_measure(run.metric, [o.name for o in model.graph.output], classifier_outputs(model))
    return Trials(model, traced.trace, scope.groups, feeds, comp, measure)


@dataclass
class Curves:
    """Each eligible group's ranking (removal order, error curve), the measured (channels removed, damage)
    points behind it, and the trials that measure more."""

    rankings: dict[int, GroupRanking]
    trials: Trials | None
    points: dict[int, list[tuple[int, float]]] = field(default_factory=dict)


def sensitivity(run: Run, scope: Scope, curves: Curves) -> None:
    """Error curves through the measured damage of trial cuts (their points added to ``curves.points``)."""
    if not scope.measured:
        return
    with run.timer("sensitivity"):
        curves.rankings = measured_rankings(
            curves.trials,
            scope.groups,
            curves.rankings,
            mode=run.opts.sensitivity,
            points=curves.points,
            progress=run.bar("sensitivity", len(scope.groups)),
        )


# -- allocate --------------------------------------------------------------------------------------


@dataclass
class CostModel:
    """The exact cost a plan keeps, in the unit of ``--metric``: MACs and params from the traced spaces,
    latency from the measured table."""

    metric: str
    trace: Trace
    node_macs: dict[str, int]
    param_sizes: dict
    table: LatencyTable | None
    base: float  # the dense model's

    def __call__(self, plan: Plan) -> float:
        if self.metric == "macs":
            return self.trace.predict_macs(self.node_macs, plan)
        if self.metric == "params":
            return self.trace.predict_params(self.param_sizes, plan)
        return self.table.predict({s: len(k) for s, k in self.trace.kept_channels(plan).items()})


def round_to(opts: CompressOptions, pattern: Pattern | None) -> int:
    """Channel multiple of every kept width: ``--round-to`` (default 1, latency 16), times M for N:M."""
    step = opts.round_to or (LATENCY_ROUND_TO if opts.metric == "latency" else 1)
    if pattern is not None and pattern.semi_structured:  # N:M groups must tile the pruned channel counts
        step = math.lcm(step, pattern.m)
    return step


def latency_batches(opts: CompressOptions, model: onnx.ModelProto) -> tuple[int, ...]:
    fixed = static_batch(graph_inputs(model))
    return opts.latency_batches or ((fixed,) if fixed else (1, 32))


def cost_model(run: Run, loaded: Loaded, traced: Traced, scope: Scope, step: int) -> CostModel:
    """The cost the allocator meets; for ``--metric latency`` the table is measured here."""
    opts, model, base = run.opts, loaded.model, traced.base
    table = None
    if opts.metric == "latency":
        with run.timer("latency_table"):
            feeds = latency_feeds(model, traced.shapes, latency_batches(opts, model)[0])
            table = build_table(
                model,
                traced.trace,
                {g.id for g in scope.groups},
                feeds,
                threads=opts.threads,
                round_to=step,
                progress=run.bar("latency table"),
            )
    dense = table.dense_ms if table is not None else base.macs if opts.metric == "macs" else base.params
    return CostModel(
        opts.metric, traced.trace, {n.name: n.macs or 0 for n in base.nodes}, param_slots(model), table, dense
    )


class Allocator:
    """budget → plan: the ``--allocation`` over the eligible groups at an exact cost (``CostModel``), the
    DP's weights searched by measured damage with ``--search-evals``. The guard re-plans with raised curves
    (``rerank``); the latency loop re-plans at other budgets."""

    def __init__(
        self,
        opts: CompressOptions,
        choices: list[GroupChoice],
        cost: CostModel,
        trials: Trials | None,
        search: bool,
    ):
        self.opts, self.choices, self.cost, self.trials = opts, choices, cost, trials
        self.search = search and trials is not None and bool(choices)
        self.searches: list[dict] = []
        self.floor = self.cost_of({c.group: int(c.widths(max_options=10**9)[-1]) for c in choices})
        self.budget = cost.base / opts.target

    def cost_of(self, widths: dict[int, int]) -> float:
        return self.cost(plan_from_widths(self.choices, widths))

    def damage(self, widths: dict[int, int]) -> float:
        return self.trials.damage(plan_from_widths(self.choices, widths))

    def propose(self, budget: float, weights: dict[int, float] | None = None) -> dict[int, int]:
        opts = self.opts
        return allocate_to_budget(
            self.choices,
            self.cost_of,
            self.cost.base,
            budget,
            self.floor,
            opts.metric,
            opts.allocation,
            weights,
        )

    def plan(self, budget: float) -> Plan:
        opts = self.opts
        if opts.target <= 1.0:  # nothing to remove (e.g. --sparsity alone): keep every channel
            return {}
        if opts.allocation == "uniform":
            widths, _ = fit_uniform(
                self.choices, self.cost_of, budget, self.floor, self.cost.base, opts.metric
            )
        elif self.search:
            widths, record = search_allocation(
                [c.group for c in self.choices],
                lambda w: self.propose(budget, w),
                self.damage,
                opts.search_evals,
                opts.seed,
            )
            self.searches.append(record)
        else:
            widths = self.propose(budget)
        return plan_from_widths(self.choices, widths)

    def rerank(self, rankings: dict[int, GroupRanking]) -> None:
        self.choices[:] = [dataclasses.replace(c, ranking=rankings[c.group]) for c in self.choices]


def allocate(
    run: Run, loaded: Loaded, scope: Scope, curves: Curves, cost: CostModel, step: int
) -> tuple[Allocator, Plan]:
    """The allocator over the eligible groups and its plan at ``base / target``."""
    opts, model = run.opts, loaded.model
    with run.timer("allocate"):
        controlled = controlled_costs(scope.groups, cost)
        first_conv = next((n.name for n in model.graph.node if n.op_type == "Conv"), None)
        choices = []
        for g in scope.groups:
            min_keep = 1
            if first_conv and any(n == first_conv and r == "producer" for n, r in g.members):
                min_keep = math.ceil(g.size * (1 - opts.first_conv_cap))
            min_keep = max(min_keep, min(step, g.size))
            choices.append(
                GroupChoice(g.id, g.size, min_keep, step, controlled[g.id] / g.size, curves.rankings[g.id])
            )
        allocator = Allocator(opts, choices, cost, curves.trials, searching(run, loaded))
        return allocator, allocator.plan(allocator.budget)


def controlled_costs(groups: list[ChannelGroup], cost: CostModel) -> dict[int, float]:
    """Cost each group controls: what keeping one channel of it (others full) saves, scaled to the group."""
    out = {}
    for g in groups:
        saved = cost.base - cost({g.id: np.array([0])})
        out[g.id] = max(saved * g.size / max(g.size - 1, 1), 0.0)
    return out


def fit_uniform(choices, cost_of, budget, floor, base, metric):
    """Uniform ratio: bisection on the common pruned fraction until the exact cost meets the budget."""
    if floor > budget * (1 + 1e-9):
        return fit_to_target(lambda s: {}, cost_of, base, budget, floor, metric)
    lo, hi = 0.0, 1.0
    best = allocate_uniform(choices, hi)
    for _ in range(40):
        mid = (lo + hi) / 2
        widths = allocate_uniform(choices, mid)
        if cost_of(widths) <= budget:
            hi, best = mid, widths
        else:
            lo = mid
    return best, cost_of(best)


def guard(
    run: Run, scope: Scope, curves: Curves, allocator: Allocator, plan: Plan
) -> tuple[Plan, dict | None]:
    """Measure every cut past a group's trials to its last channels; raise the curves it beats and re-plan."""
    if not (scope.measured and plan):
        return plan, None
    rankings = curves.rankings

    def replan() -> Plan:  # the allocator reads the rankings the guard raised
        allocator.rerank(rankings)
        return allocator.plan(allocator.budget)

    with run.timer("guard"):
        return guard_deep_cuts(
            curves.trials, scope.groups, rankings, curves.points, plan, replan, progress=run.bar("guard")
        )


@dataclass
class Replanner:
    """The latency loop's view of allocate and apply (``latency_table.Planner``)."""

    loaded: Loaded
    traced: Traced
    allocator: Allocator

    @property
    def floor(self) -> float:
        return self.allocator.floor

    def plan(self, budget: float) -> Plan:
        return self.allocator.plan(budget)

    def apply(self, plan: Plan) -> onnx.ModelProto:
        return prune_channels(self.loaded.model, self.traced.trace, plan)


# -- apply, refit, sparsify, verify ----------------------------------------------------------------


def apply(run: Run, loaded: Loaded, traced: Traced, plan: Plan) -> onnx.ModelProto:
    with run.timer("prune"):
        return prune_channels(loaded.model, traced.trace, plan)


def check_budget(
    run: Run, traced: Traced, allocator: Allocator, pruned: onnx.ModelProto, scope: Scope, plan: Plan
) -> ModelCost:
    """The pruned model's cost, recounted from the graph; it must meet the budget the allocator promised."""
    opts = run.opts
    with run.timer("cost"):
        after = model_cost(pruned, traced.shapes or None)
    if allocator.cost.table is None:
        real = after.macs if opts.metric == "macs" else after.params
        if real > allocator.budget * (1 + 1e-6):
            raise InternalError(
                f"pruned {opts.metric} {real} exceed the budget {allocator.budget:.0f} the allocator promised"
            )
    off_block = [g.id for g in scope.groups if g.id in plan and len(plan[g.id]) % LATENCY_ROUND_TO]
    if off_block and opts.metric != "latency":
        run.warnings.append(
            f"{len(off_block)} pruned group(s) keep widths that are not multiples of {LATENCY_ROUND_TO}: "
            "onnxruntime's CPU convolutions are blocked by 16 channels, so fewer MACs can run slower "
            f"(--round-to {LATENCY_ROUND_TO} or --metric latency keep the speed)"
        )
    return after


def refit_feeds(calib: CalibrationSet, samples: int):
    """The calibration batches the refit and SparseGPT read."""
    return iter(calib.first("calib", min(samples, calib.n_calib()), 32))


def refit(
    run: Run, loaded: Loaded, traced: Traced, stats: LayerStats, plan: Plan, pruned: onnx.ModelProto
) -> dict[str, str]:
    """Least-squares refit of every changed layer, stage by stage (``reconstruct``); with
    ``--no-reconstruct`` OBS's own compensation from the Hessians. Returns layer → what was done."""
    opts, calib, trace = run.opts, loaded.calib, traced.trace
    if not plan:
        return {}
    if calib is not None and opts.reconstruct:
        stats.release()  # the refit reads activations: free the dense Hessians for it
        with run.timer("reconstruct"):
            kept = trace.kept_channels(plan)
            kept_in, kept_out = trace.layer_kept(traced.layers, plan)
            shrunk = {s for s in kept if len(kept[s]) < trace.spaces[s].size}
            changed = {m.node for m in trace.members if m.space in shrunk}
            inputs = RefitInputs(kept_out, kept_in, trace.input_units(traced.layers), calib.groups)
            return reconstruct(
                loaded.model,
                pruned,
                changed,
                lambda: refit_feeds(calib, stats.refit_samples),
                inputs,
                ridge=opts.ridge,
                progress=run.stage_bar("reconstruction"),
            )
    if stats.hessians:  # --no-reconstruct: still OBS's own compensation (no calibration pass needed)
        with run.timer("compensate"):
            comp = Compensation(loaded.model, traced, stats.hessians, stats.rows)
            return {n: "obs compensation" for n in comp(plan, pruned)}
    return {}


def sparsify_stage(
    run: Run, loaded: Loaded, scope: Scope, pruned: onnx.ModelProto, pattern: Pattern | None
) -> tuple[onnx.ModelProto, dict | None]:
    """N:M or unstructured sparsity on the pruned model (SparseGPT with calibration data, else magnitude)."""
    opts, calib = run.opts, loaded.calib
    if pattern is None:
        return pruned, None
    with run.timer("sparsify"):
        how = "magnitude" if scope.criterion.startswith("magnitude") or calib is None else "sparsegpt"
        if calib is None:
            run.warnings.append("no --calib: --sparsity uses magnitude masks without compensation")
        feeds, groups = None, None
        if calib is not None:  # SparseGPT's Hessians also read the mosaics
            n_real = min(opts.refit_samples, calib.n_calib())
            feeds = (
                (lambda: refit_feeds(calib, opts.refit_samples))
                if how != "sparsegpt"
                else (
                    lambda: itertools.chain(
                        refit_feeds(calib, opts.refit_samples), calib.batches("mosaics", 32)
                    )
                )
            )
            groups = calib.groups_with_mosaics(n_real) if how == "sparsegpt" else calib.groups
        return sparsify(
            pruned,
            feeds,
            SparsifyOptions(pattern=pattern, criterion=how),
            groups,
            progress=run.stage_bar("sparsity"),
        )


@dataclass
class Verified:
    fidelity: dict
    dense_out: list[np.ndarray] | None = None  # held-out outputs: the INT8 report compares against them too
    pruned_out: list[np.ndarray] | None = None


def verify(run: Run, loaded: Loaded, pruned: onnx.ModelProto) -> Verified:
    """Fidelity of the pruned model to the dense one on the held-out calibration rows."""
    calib, model = loaded.calib, loaded.model
    if calib is None or not calib.n_holdout():
        return Verified({})
    with run.timer("verify"):
        dense_out = run_all(model, calib.batches("holdout", 16))
        pruned_out = run_all(pruned, calib.batches("holdout", 16))
        names = [o.name for o in model.graph.output]
        return Verified(
            compare(dense_out, pruned_out, names, classifier_outputs(model), run.metric),
            dense_out,
            pruned_out,
        )
