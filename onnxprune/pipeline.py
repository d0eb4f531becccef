"""`compress`: load → normalize → trace → calibrate → score → allocate → prune → reconstruct → verify → report.

Each stage is a plain function call; this module only chains them and times them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx

from . import __version__
from .allocate import (
    GroupChoice,
    allocate_to_budget,
    allocate_uniform,
    fit_to_target,
    plan_from_widths,
    search_allocation,
)
from .calibration.augment import DEFAULT_MIN_SIDE, image_input
from .calibration.collect import collect_split_statistics
from .calibration.readers import CalibrationSet, load_calibration
from .costs import model_cost, param_slots
from .criteria import CRITERIA, FREE_ROWS, rank_groups, woodfisher_hessian
from .errors import InputError, QualityGateError, TargetUnreachableError
from .fidelity import classifier_outputs, compare, headline, run_all
from .latency_table import LATENCY_ROUND_TO, build_table, latency_feeds, meet_speedup
from .layers import initializer_dict, linear_layers
from .metrics import Metric, load_metric
from .modelio import load_model, output_folder, require_runnable, write_outputs
from .passes.normalize import normalize
from .passes.prune_channels import prune_channels
from .passes.reconstruct import compensate_locally, reconstruct, validation_halves
from .passes.sparsify import sparsify
from .quantize import quantize_model
from .sensitivity import Trials, guard_deep_cuts, measured_rankings, metric_measure
from .shapes import Shape, graph_inputs, static_batch
from .sparsity import sparsity_option
from .tracer import trace_channels

ALLOCATIONS = ("dp", "global", "uniform")
METRICS = ("macs", "params", "latency")
DATA_CRITERIA = ("obs", "woodfisher", "activation", "apoz")


@dataclass
class CompressOptions:
    target: float = 2.0
    metric: str = "macs"
    calib: str | None = None
    calib_samples: int = 256
    calib_mosaics: int | None = None  # synthetic 2x2 mosaics for the statistics (None: one per calibration image)
    criterion: str = "obs"
    allocation: str = "dp"
    reconstruct: bool = True
    round_to: int | None = None  # None: 1 for macs/params, LATENCY_ROUND_TO for latency
    max_drop: float | None = None
    metric_fn: str | None = None  # --metric-fn: a shipped metric's name or file.py:function (metrics.load_metric)
    metric_options: str | None = None  # --metric-options key=value,...
    exclude: str | None = None
    seed: int = 0
    input_shapes: dict[str, Shape] = field(default_factory=dict)
    stats_dtype: str = "float64"
    preprocess: str | None = None
    input_size: int | None = None
    first_conv_cap: float = 0.5
    ridge: float = 1e-3  # reconstruction: λ = ridge·mean(diag G), pulling the refit toward the pruned weights
    damp: float = 0.01  # OBS: λ = damp·mean(diag H)
    sensitivity: str = "scaled"  # allocation curves: criterion curve at the measured level ("scaled"), "measured", "estimated"
    sensitivity_samples: int = 32
    search_evals: int = 0  # SPDY-style search of the DP weights by the whole plan's measured damage (0: off)
    woodfisher_rows: int = 2048  # `woodfisher`: input rows sampled per consumer for the Woodbury inverse
    refit_samples: int = 256  # calibration samples the least-squares refit reads (two ORT passes per stage)
    sparsity: str | None = None  # "2:4" / "N:M" (N zeros in every M input channels) or a fraction "0.5"
    int8: bool = True  # also write <stem>.pruned.int8.onnx (QAT-ready QDQ; needs calib)
    quant_preset: str = "ort"
    calib_method: str = "minmax"
    threads: int = 0  # --metric latency: onnxruntime intra-op threads of every measurement (0: one per core)
    latency_batches: tuple[int, ...] = ()  # table measured at the first, speedup checked at each; () = (1, 32) or the fixed batch


def parse_target(text: str) -> float:
    """'2x' / '2' / '1.5X' → 2.0 / 2.0 / 1.5 (the cost divisor)."""
    try:
        value = float(str(text).strip().lower().rstrip("x"))
    except ValueError:
        raise InputError(f"bad --target '{text}': expected a factor like 2x or 1.5x") from None
    if not value >= 1.0 or math.isinf(value):
        raise InputError(f"bad --target '{text}': the factor must be ≥ 1 (2x halves the cost)")
    return value


def _validate(opts: CompressOptions) -> None:
    if opts.metric not in METRICS:
        raise InputError(f"unknown --metric '{opts.metric}' (choose from {', '.join(METRICS)})")
    if opts.criterion not in CRITERIA:
        raise InputError(f"unknown --criterion '{opts.criterion}' (choose from {', '.join(CRITERIA)})")
    if opts.allocation not in ALLOCATIONS:
        raise InputError(f"unknown --allocation '{opts.allocation}' (choose from {', '.join(ALLOCATIONS)})")
    if opts.round_to is not None and opts.round_to < 1:
        raise InputError("--round-to must be ≥ 1")
    if opts.calib_samples < 1:
        raise InputError("--calib-samples must be ≥ 1")
    if opts.calib_mosaics is not None and opts.calib_mosaics < 0:
        raise InputError(f"--calib-mosaics must be ≥ 0 (0: none), got {opts.calib_mosaics}")
    if opts.search_evals < 0:
        raise InputError(f"--search-evals must be ≥ 0 (0: no search), got {opts.search_evals}")
    sparsity_option(opts.sparsity)
    if opts.exclude:
        try:
            re.compile(opts.exclude)
        except re.error as exc:
            raise InputError(f"bad --exclude regex '{opts.exclude}': {exc}") from None


class Timer:
    """Wall time per pipeline stage: ``with timer("prune"): ...`` adds to ``times["prune"]``."""

    def __init__(self):
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = round(self.times.get(name, 0.0) + time.perf_counter() - start, 3)
            _release_freed_memory()


def _release_freed_memory() -> None:
    """Hand freed heap memory back to the OS between stages (glibc keeps it, so a stage's temporaries
    would stay in the process's resident set through the later stages). No-op off glibc."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _sensitivity_halves(calib: CalibrationSet, mosaics: int, seed: int) -> list[CalibrationSet] | None:
    """Two group-disjoint halves of the calibration sources (each: ``calib`` its samples, ``holdout`` the
    other half's), each with its share of ``mosaics`` built from its own images; None when a half would be
    empty or smaller than the model's static batch.

    The sensitivity trials measure each group's damage after OBS compensation. Measured on the photos the
    compensation was fitted to, it looks repaired even where it does not generalize (a few channels of a
    late layer: 95% → 85% agreement on new photos), and the allocator spends the budget on the wrong
    groups. Fitting on half A and measuring on half B prices what the compensation does on new inputs
    (measured: MobileNetV2 1.5x 34.0% → 49.8% on unseen photos, BENCHMARKS.md issue 4, session 6). The
    statistics pass reads the halves as two streams (``collect_split_statistics``), so half A's Hessians
    cost no second pass and the whole set's are their sum.
    """
    side = validation_halves([calib.n_calib()], calib.groups)[0] if calib.groups is not None else \
        np.arange(calib.n_calib()) % 2
    if side.min() == side.max():
        return None
    a, b = ({k: v[side == s] for k, v in calib.calib.items()} for s in (0, 1))
    halves = [replace(calib, calib=a, holdout=b, groups=None, mosaics={}),
              replace(calib, calib=b, holdout=a, groups=None, mosaics={})]  # shared arrays: no second copy
    if calib.fixed_batch and min(h.n_calib() for h in halves) < calib.fixed_batch:
        return None
    first = round(mosaics * halves[0].n_calib() / calib.n_calib())
    for half, count in zip(halves, (first, mosaics - first), strict=True):
        if count:
            half.add_mosaics(count, seed)
    return halves


def compress(model_path: str | os.PathLike, outdir: str | os.PathLike, opts: CompressOptions,
             log: Callable[[str], None] = lambda s: None, progress=None) -> dict:
    """Prune ``model_path`` to ``opts.target`` and write ``<stem>.pruned.onnx`` (+ its INT8 copy
    ``<stem>.pruned.int8.onnx``) + ``<stem>.report.json`` into ``outdir``: all of them, or (on any failure)
    none."""
    _validate(opts)
    metric = load_metric(opts.metric_fn, opts.metric_options) if opts.metric_fn else None
    with output_folder(outdir, protect=(model_path,)):
        return _compress(Path(model_path), outdir, opts, progress, metric)


def _compress(path: Path, outdir: str | os.PathLike, opts: CompressOptions, progress, metric: Metric | None) -> dict:
    timer = Timer()
    warnings: list[str] = []
    with timer("load_normalize"):
        original = load_model(path)
        require_runnable(original, path)
        model, norm = normalize(original)
    with timer("trace"):
        calib = None
        if opts.calib:
            calib = load_calibration(opts.calib, model, samples=opts.calib_samples, preprocess=opts.preprocess,
                                     input_size=opts.input_size, seed=opts.seed)
            warnings.extend(calib.warnings)
            _require_finite_outputs(model, calib)
        else:
            warnings.append("no --calib: data-free criteria only, no reconstruction, no fidelity check")
        shapes = dict(opts.input_shapes)
        if calib is not None and not shapes:
            # one sample per cost probe, or the batch a static-batch model fixes
            shapes = {k: (calib.fixed_batch or 1, *v.shape[1:]) for k, v in calib.calib.items()}
        trace = trace_channels(model, shapes or None)
        base = model_cost(model, shapes or None)
    counted = base.macs if opts.metric == "macs" else base.params
    if opts.target > 1.0 and opts.metric != "latency" and not counted:
        what = "MACs" if opts.metric == "macs" else opts.metric
        raise TargetUnreachableError(f"target unreachable: the model has no {what} to reduce (0 counted)")
    node_macs = {n.name: n.macs or 0 for n in base.nodes}
    param_sizes = param_slots(model)
    criterion = opts.criterion
    if calib is None and criterion in DATA_CRITERIA:
        warnings.append(f"criterion '{criterion}' needs --calib: using magnitude")
        criterion = "magnitude"

    # -- which groups may shrink, and how far --------------------------------------------------
    exclude = re.compile(opts.exclude) if opts.exclude else None
    first_conv = next((n.name for n in model.graph.node if n.op_type == "Conv"), None)
    eligible = []
    skipped: dict[int, str] = {}
    for g in trace.groups:
        if not g.prunable:
            continue
        hit = next((n for n, _ in g.members if exclude and exclude.search(n)), None)
        if hit:
            skipped[g.id] = f"excluded by --exclude (node '{hit}')"
            continue
        eligible.append(g)
    if opts.target == 1.0 and opts.metric != "latency":  # e.g. --sparsity alone: no channel statistics needed
        for g in eligible:
            skipped[g.id] = "--target 1x: no channel pruning asked for"
        eligible = []

    # -- statistics and scores -----------------------------------------------------------------
    layers = linear_layers(model)
    inits = initializer_dict(model)
    node_inputs = {n.name: list(n.input) for n in model.graph.node}
    hessians = channel_stats = rows = half_hessians = half_rows = half_feeds = None
    refit_samples = opts.refit_samples
    inverses: dict[str, np.ndarray] = {}
    measured = bool(calib is not None and opts.sensitivity != "estimated" and opts.allocation != "uniform" and eligible)
    halves = None
    if calib is not None and criterion in DATA_CRITERIA:
        if opts.calib_mosaics is None:  # default: one per calibration image, for photo-sized image inputs
            if image_input(calib.calib, DEFAULT_MIN_SIDE):
                calib.add_mosaics(calib.n_calib(), opts.seed)
        elif opts.calib_mosaics:
            warning = calib.add_mosaics(opts.calib_mosaics, opts.seed)
            if warning:
                warnings.append(warning)
        with timer("calibrate"):
            wanted = {m.node for g in eligible for m in trace.members_of(g.id) if m.role == "consumer" and m.node in layers}
            axes = {}
            if criterion in ("activation", "apoz"):
                for name, view in trace.views.items():
                    if view.plain and any(s.group in {g.id for g in eligible} for s in trace.segments[view.space]) \
                            and any(name == layers[c].input for c in wanted):
                        axes[name] = view.axis
                wanted = set()
            # photo-like calibration (shared sources or mosaics); Fashion-MNIST's 256 distinct items: 2x 90.74 → 90.14%
            if measured and wanted and (calib.groups is not None or calib.mosaics):
                halves = _sensitivity_halves(calib, calib.n_statistics() - calib.n_calib(), opts.seed)
            if halves is not None and calib.mosaics:  # the whole set's mosaics: each half's, from its own images
                calib.mosaics = {k: np.concatenate([h.mosaics[k] for h in halves if h.mosaics]) for k in calib.mosaics}
            dtype = np.float32 if opts.stats_dtype == "float32" else np.float64
            parts = [h.batches("statistics", 16) for h in halves] if halves else [calib.batches("statistics", 16)]
            every = collect_split_statistics(
                model, parts, {n: layers[n] for n in wanted}, axes, dtype=dtype,
                progress=progress("calibration", calib.n_statistics()) if progress else None,
                sample_rows=opts.woodfisher_rows if criterion == "woodfisher" else 0, seed=opts.seed)
            if halves:  # half A's Hessians price the sensitivity trials (below); the whole set's: A + B
                half_hessians = {n: a.hessian() for n, a in (every[0].hessians | every[0].samples).items()}
                half_rows = {n: a.samples for n, a in (every[0].hessians | every[0].samples).items()}
                every[0].merge(every.pop())
                half_feeds = [{k: v.copy() for k, v in b.items()}
                              for b in halves[0].first("holdout", opts.sensitivity_samples)]
                halves = None  # their arrays and mosaics (~0.3 GB on EfficientNet-Lite0) are no longer needed
            stats = every.pop()
            hessians = {n: h.hessian() for n, h in stats.hessians.items()}
            rows = {n: h.samples for n, h in stats.hessians.items()}
            refit_samples = _determined_samples(stats.hessians, calib.n_statistics(), opts.refit_samples)
            stats.hessians.clear()  # the sums: no longer needed (~0.3 GB on EfficientNet-Lite0)
            for n, sample in stats.samples.items():
                hessians[n], inverses[n] = woodfisher_hessian(sample.rows, opts.damp, sample.samples)
                rows[n] = sample.samples
            channel_stats = stats.channels
    with timer("score"):
        rankings, rank_warnings = rank_groups(criterion, trace, eligible, inits, node_inputs, layers=layers,
                                              hessians=hessians, bn_scales=norm.bn_scales, channel_stats=channel_stats,
                                              seed=opts.seed, damp=opts.damp, rows=rows, inverses=inverses)
        warnings.extend(rank_warnings)

    def compensator(try_plan, pruned_try) -> list[str]:
        """Damage is measured after OBS compensation from the dense Hessians (``compensate_locally``): what the
        refit repairs anyway no longer counts, so the curves follow what reconstruction leaves."""
        k_in, k_out = trace.layer_kept(layers, try_plan)
        return compensate_locally(model, pruned_try, hessians, rows, k_in, k_out)

    # Trials (sensitivity, --search-evals) compensate and measure on disjoint halves when there are any.
    trial_feeds = trial_comp = None
    if half_hessians is not None:  # compensate from one half of the sources, measure on the other
        trial_feeds = half_feeds

        def trial_comp(try_plan, pruned_try):
            k_in, k_out = trace.layer_kept(layers, try_plan)
            return compensate_locally(model, pruned_try, half_hessians, half_rows, k_in, k_out)
    elif calib is not None:
        trial_feeds = calib.first("calib", opts.sensitivity_samples) or None
        trial_comp = compensator if hessians else None
    points: dict[int, list[tuple[int, float]]] = {}
    searching = calib is not None and opts.search_evals > 1 and opts.allocation == "dp"
    trials = None
    if trial_feeds is not None and (measured or searching):
        measure = metric_measure(metric, [o.name for o in model.graph.output], classifier_outputs(model))
        trials = Trials(model, trace, eligible, trial_feeds, trial_comp, measure)
    if measured:
        with timer("sensitivity"):
            rankings = measured_rankings(trials, eligible, rankings, mode=opts.sensitivity, points=points,
                                         progress=progress("sensitivity", len(eligible)) if progress else None)

    # -- allocation ----------------------------------------------------------------------------
    pattern = sparsity_option(opts.sparsity)
    round_to = opts.round_to or (LATENCY_ROUND_TO if opts.metric == "latency" else 1)
    if pattern is not None and pattern.semi_structured:  # N:M groups must tile the pruned channel counts
        round_to = math.lcm(round_to, pattern.m)
    table = None
    fixed = static_batch(graph_inputs(model))
    latency_batches = opts.latency_batches or ((fixed,) if fixed else (1, 32))
    if opts.metric == "latency":
        with timer("latency_table"):
            lat_feeds = latency_feeds(model, shapes, latency_batches[0])
            table = build_table(model, trace, {g.id for g in eligible}, lat_feeds, threads=opts.threads,
                                round_to=round_to, progress=progress("latency table", None) if progress else None)
    with timer("allocate"):
        metric_base = table.dense_ms if table is not None else base.macs if opts.metric == "macs" else base.params

        def exact_cost(plan) -> float:
            if opts.metric == "macs":
                return trace.predict_macs(node_macs, plan)
            if opts.metric == "params":
                return trace.predict_params(param_sizes, plan)
            return table.predict({s: len(k) for s, k in trace.kept_channels(plan).items()})

        controlled = _controlled(trace, eligible, exact_cost, metric_base)
        choices = []
        for g in eligible:
            min_keep = 1
            if first_conv and any(n == first_conv and r == "producer" for n, r in g.members):
                min_keep = math.ceil(g.size * (1 - opts.first_conv_cap))
            min_keep = max(min_keep, min(round_to, g.size))
            choices.append(GroupChoice(g.id, g.size, min_keep, round_to, controlled[g.id] / g.size, rankings[g.id]))

        def cost_of(widths):
            return exact_cost(plan_from_widths(choices, widths))

        floor = cost_of({c.group: int(c.widths(max_options=10**9)[-1]) for c in choices})

        def allocate_to(budget: float) -> dict[int, np.ndarray]:
            if opts.target <= 1.0:  # nothing to remove (e.g. --sparsity alone): keep every channel
                return {}
            if opts.allocation == "uniform":
                widths, _ = _fit_uniform(choices, cost_of, budget, floor, metric_base, opts.metric)
            else:
                def propose(weights=None):  # ``weights``: the DP's per-group multipliers (the search's)
                    return allocate_to_budget(choices, cost_of, metric_base, budget, floor, opts.metric,
                                              opts.allocation, weights)

                if searching:
                    widths, search_record = search_allocation([c.group for c in choices], propose, plan_damage,
                                                              opts.search_evals, opts.seed)
                    searches.append(search_record)
                else:
                    widths = propose()
            return plan_from_widths(choices, widths)

        searches: list[dict] = []
        searching = searching and trials is not None and bool(choices)

        def plan_damage(widths) -> float:
            return trials.damage(plan_from_widths(choices, widths))

        budget = metric_base / opts.target
        plan = allocate_to(budget)
    guard = None
    if measured and plan:
        def replan():  # the choices read the rankings the guard raised
            choices[:] = [dataclasses.replace(c, ranking=rankings[c.group]) for c in choices]
            return allocate_to(budget)

        with timer("guard"):
            plan, guard = guard_deep_cuts(trials, eligible, rankings, points, plan, replan,
                                          progress=progress("guard", None) if progress else None)
    trials = None  # its dense values (every group's start) are no longer needed

    # -- prune, (latency: measure and tighten), reconstruct, verify -----------------------------
    with timer("prune"):
        pruned = prune_channels(model, trace, plan)
    speed = None
    if table is not None:
        with timer("latency_check"):
            plan, pruned, speed = meet_speedup(
                model, plan, pruned, allocate_to, lambda p: prune_channels(model, trace, p), budget,
                opts.target, latency_batches, opts.threads, shapes, floor_ms=floor)
            speed["table"] = table.summary()
    with timer("prune"):
        after = model_cost(pruned, shapes or None)
    if table is None:
        real = after.macs if opts.metric == "macs" else after.params
        if real > budget * (1 + 1e-6):
            raise AssertionError(f"pruned {opts.metric} {real} exceed the budget {budget:.0f} the allocator promised")
    off_block = [g.id for g in eligible if g.id in plan and len(plan[g.id]) % LATENCY_ROUND_TO]
    if off_block and opts.metric != "latency":
        warnings.append(f"{len(off_block)} pruned group(s) keep widths that are not multiples of {LATENCY_ROUND_TO}: "
                        "onnxruntime's CPU convolutions are blocked by 16 channels, so fewer MACs can run slower "
                        f"(--round-to {LATENCY_ROUND_TO} or --metric latency keep the speed)")
    refit: dict[str, str] = {}

    def refit_feeds(samples=opts.refit_samples):  # the calibration batches the refit and SparseGPT read
        return iter(calib.first("calib", min(samples, calib.n_calib()), 32))

    half_hessians = None  # only the trials read them (~0.3 GB on EfficientNet-Lite0)
    if calib is not None and opts.reconstruct and plan:
        hessians = inverses = None  # the refit reads activations: free the dense Hessians for it
        with timer("reconstruct"):
            kept = trace.kept_channels(plan)
            kept_in, kept_out = trace.layer_kept(layers, plan)
            shrunk = {s for s in kept if len(kept[s]) < trace.spaces[s].size}
            changed = {m.node for m in trace.members if m.space in shrunk}
            bar = progress("reconstruction", None) if progress else None
            refit = reconstruct(model, pruned, kept_out, changed, lambda: refit_feeds(refit_samples),
                                ridge=opts.ridge,
                                progress=(lambda _stage, i, n: bar(i, n)) if bar else None, kept_in=kept_in,
                                groups=calib.groups, in_units=trace.input_units(layers))
    elif hessians and plan:  # --no-reconstruct: still OBS's own compensation (no calibration pass needed)
        with timer("compensate"):
            refit = {n: "obs compensation" for n in compensator(plan, pruned)}
    sparse_report = None
    if pattern is not None:
        with timer("sparsify"):
            how = "magnitude" if criterion.startswith("magnitude") or calib is None else "sparsegpt"
            if calib is None:
                warnings.append("no --calib: --sparsity uses magnitude masks without compensation")
            bar = progress("sparsity", None) if progress else None
            feeds, groups = None, None
            if calib is not None:  # SparseGPT's Hessians also read the mosaics (measured: +4–6 pt on new photos)
                n_real = min(opts.refit_samples, calib.n_calib())
                feeds = refit_feeds if how != "sparsegpt" else \
                    lambda: itertools.chain(refit_feeds(), calib.batches("mosaics", 32))
                groups = calib.groups_with_mosaics(n_real) if how == "sparsegpt" else calib.groups
            pruned, sparse_report = sparsify(
                pruned, feeds, pattern=pattern, criterion=how, groups=groups,
                progress=(lambda _stage, i, n: bar(i, n)) if bar else None)
    fidelity = {}
    dense_out = pruned_out = None  # holdout outputs: the INT8 report compares against them too
    if calib is not None and calib.n_holdout():
        with timer("verify"):
            names = [o.name for o in model.graph.output]
            dense_out = run_all(model, calib.batches("holdout", 16))
            pruned_out = run_all(pruned, calib.batches("holdout", 16))
            fidelity = compare(dense_out, pruned_out, names, classifier_outputs(model), metric)

    # -- write: every output at once, after every check passed --------------------------------
    out = Path(outdir)
    stem = path.name[:-5] if path.name.endswith(".onnx") else path.name
    pruned_path, int8_path = out / f"{stem}.pruned.onnx", out / f"{stem}.pruned.int8.onnx"
    int8 = int8_report = None
    if opts.int8 and calib is None:
        warnings.append("no --calib: no INT8 output (it needs calibration data)")
    elif opts.int8:
        with timer("int8"):
            int8, int8_report = quantize_model(pruned, calib, preset=opts.quant_preset, calib_method=opts.calib_method,
                                               dense_reference=model, latency_runs=20, dense_outputs=dense_out,
                                               metric=metric,
                                               model_outputs=pruned_out,
                                               progress=(lambda stage: progress(f"int8: {stage}", None)) if progress else None)
            int8_report = {"output": str(int8_path), **int8_report}
    report = {
        "model": str(path),
        "output": str(pruned_path),
        "target": opts.target,
        "metric": opts.metric,
        "criterion": criterion,
        "allocation": opts.allocation,
        "search": searches[-1] if searches else None,
        "guard": guard,
        "reconstruct": opts.reconstruct and bool(refit),
        "calibration": None if calib is None else {"source": calib.source, "samples": calib.n_calib(),
                                                    "mosaics": calib.n_statistics() - calib.n_calib(),
                                                    "holdout": calib.n_holdout()},
        "input_shapes": base.input_shapes,
        "dense": {"macs": base.macs, "params": base.params},
        "pruned": {"macs": after.macs, "params": after.params},
        "achieved": {"macs": base.macs / max(after.macs, 1), "params": base.params / max(after.params, 1)},
        "latency": speed,
        "groups": _group_rows(trace, plan, skipped),
        "refit_layers": refit,
        "sparsity": sparse_report,
        "int8": int8_report,
        "fidelity": fidelity,
        "normalization": norm.summary(),
        "warnings": warnings,
        "timings_s": timer.times,
        "versions": _versions(),
    }
    gate = None
    if opts.max_drop is not None and fidelity:
        key, value = headline(fidelity)
        drop = 1.0 - value
        report["quality_gate"] = gate = {"metric": key, "value": value, "max_drop": opts.max_drop,
                                         "passed": drop <= opts.max_drop}
    outputs = [(pruned_path, pruned), *([(int8_path, int8)] if int8 is not None else []),
               (out / f"{stem}.report.json", json.dumps(report, indent=2))]
    write_outputs(outputs, protect=(path,))
    if gate is not None and not gate["passed"]:
        raise QualityGateError(f"quality gate failed: {gate['metric']} {gate['value']:.4f} dropped by "
                               f"{1 - gate['value']:.4f} > --max-drop {opts.max_drop}")
    return report


def _require_finite_outputs(model: onnx.ModelProto, calib: CalibrationSet, samples: int = 16) -> None:
    """Refuse (exit 2) a model that computes NaN or infinite outputs on the first calibration samples: its
    statistics, refit and INT8 ranges would all be NaN."""
    names = [o.name for o in model.graph.output]
    batch = next(calib.batches("calib", samples))
    for name, values in zip(names, run_all(model, [batch]), strict=True):
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise InputError(f"the model computes NaN or infinite values in output '{name}' on the "
                             f"calibration data (first {len(next(iter(batch.values())))} samples)")


def _determined_samples(sums, n_samples: int, least: int) -> int:
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


def _controlled(trace, groups, exact_cost, base: float) -> dict[int, float]:
    """Cost each group controls: what keeping one channel of it (others full) saves, scaled to the whole group."""
    out = {}
    for g in groups:
        saved = base - exact_cost({g.id: np.array([0])})
        out[g.id] = max(saved * g.size / max(g.size - 1, 1), 0.0)
    return out


def _fit_uniform(choices, cost_of, budget, floor, base, metric):
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


def _group_rows(trace, plan, skipped) -> list[dict]:
    rows = []
    for g in trace.groups:
        kept = np.asarray(plan.get(g.id, np.arange(g.size)))
        reason = "; ".join(g.reasons) if g.reasons else skipped.get(g.id) or (None if g.size > 1 else "single channel")
        rows.append({"id": g.id, "channels": g.size, "kept": int(len(kept)),
                     "pruned_indices": sorted(set(range(g.size)) - set(kept.tolist())),
                     "members": [{"node": n, "role": r} for n, r in g.members],
                     "prunable": g.prunable and g.id not in skipped, "reason": reason})
    return rows


def _versions() -> dict:
    import onnxruntime

    return {"onnxprune": __version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__}


__all__ = ["CompressOptions", "CalibrationSet", "compress", "parse_target"]
