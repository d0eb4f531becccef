"""`compress`: the stages of ``stages`` in order, then every output written at once.

load → trace → select → collect_statistics → rank → sensitivity → allocate → guard → apply
     → meet_latency → refit → sparsify → verify → int8 → report
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from . import stages
from ._version import versions
from .calibration.readers import CalibrationSet
from .errors import QualityGateError
from .fidelity import headline
from .latency_table import SpeedCheck, meet_speedup
from .metrics import load_metric
from .modelio import output_folder, write_outputs
from .options import CompressOptions, parse_target, validate
from .quantize import Known, QuantizeOptions, quantize_model
from .sparsity import sparsity_option
from .stages import Replanner, Run


def compress(
    model_path: str | os.PathLike,
    outdir: str | os.PathLike,
    opts: CompressOptions,
    log: Callable[[str], None] = lambda s: None,
    progress=None,
) -> dict:
    """Prune ``model_path`` to ``opts.target`` and write ``<stem>.pruned.onnx`` (+ its INT8 copy
    ``<stem>.pruned.int8.onnx``) + ``<stem>.report.json`` into ``outdir``: all of them, or (on any failure)
    none. Returns the report."""
    validate(opts)
    metric = load_metric(opts.metric_fn, opts.metric_options) if opts.metric_fn else None
    with output_folder(outdir, protect=(model_path,)):
        return _compress(Path(model_path), Path(outdir), Run(opts, metric, progress))


def _compress(path: Path, outdir: Path, run: Run) -> dict:
    loaded = stages.load(run, path)
    traced = stages.trace_model(run, loaded)
    scope = stages.select(run, loaded, traced)
    stats = stages.collect_statistics(run, loaded, traced, scope)
    rankings = stages.rank(run, loaded, traced, scope, stats)
    curves = stages.Curves(rankings, stages.make_trials(run, loaded, traced, scope, stats))
    stages.sensitivity(run, scope, curves)
    pattern = sparsity_option(run.opts.sparsity)
    step = stages.round_to(run.opts, pattern)
    cost = stages.cost_model(run, loaded, traced, scope, step)
    allocator, plan = stages.allocate(run, loaded, scope, curves, cost, step)
    plan, guarded = stages.guard(run, scope, curves, allocator, plan)
    allocator.trials = curves.trials = stats.half = None  # the dense values of every group's start: freed
    pruned = stages.apply(run, loaded, traced, plan)
    plan, pruned, speed = meet_latency(run, loaded, traced, allocator, plan, pruned)
    after = stages.check_budget(run, traced, allocator, pruned, scope, plan)
    refit = stages.refit(run, loaded, traced, stats, plan, pruned)
    pruned, sparse_report = stages.sparsify_stage(run, loaded, scope, pruned, pattern)
    verified = stages.verify(run, loaded, pruned)
    pruned_path, int8_path, report_path = output_paths(path, outdir)
    int8, int8_report = int8_stage(run, loaded, pruned, verified, int8_path)
    report = {
        "model": str(path),
        "output": str(pruned_path),
        "target": run.opts.target,
        "metric": run.opts.metric,
        "criterion": scope.criterion,
        "allocation": run.opts.allocation,
        "search": allocator.searches[-1] if allocator.searches else None,
        "guard": guarded,
        "reconstruct": run.opts.reconstruct and bool(refit),
        "calibration": calibration_summary(loaded.calib),
        "input_shapes": traced.base.input_shapes,
        "dense": {"macs": traced.base.macs, "params": traced.base.params},
        "pruned": {"macs": after.macs, "params": after.params},
        "achieved": {
            "macs": traced.base.macs / max(after.macs, 1),
            "params": traced.base.params / max(after.params, 1),
        },
        "latency": speed,
        "groups": group_rows(traced.trace, plan, scope.skipped),
        "refit_layers": refit,
        "sparsity": sparse_report,
        "int8": int8_report,
        "fidelity": verified.fidelity,
        "normalization": loaded.norm.summary(),
        "warnings": run.warnings,
        "timings_s": run.timer.times,
        "versions": versions(),
    }
    return write_report(
        run, path, report, [(pruned_path, pruned), *([(int8_path, int8)] if int8 else [])], report_path
    )


def output_paths(model_path: Path, outdir: Path) -> tuple[Path, Path, Path]:
    """(``<stem>.pruned.onnx``, ``<stem>.pruned.int8.onnx``, ``<stem>.report.json``) in ``outdir``."""
    stem = model_path.name[:-5] if model_path.name.endswith(".onnx") else model_path.name
    return outdir / f"{stem}.pruned.onnx", outdir / f"{stem}.pruned.int8.onnx", outdir / f"{stem}.report.json"


def meet_latency(
    run: Run,
    loaded: stages.Loaded,
    traced: stages.Traced,
    allocator: stages.Allocator,
    plan: stages.Plan,
    pruned: onnx.ModelProto,
):
    """``--metric latency``: measure the pruned model beside the dense one and re-allocate until the
    measured speedup meets the target (``latency_table.meet_speedup``). Returns (plan, pruned, report)."""
    table = allocator.cost.table
    if table is None:
        return plan, pruned, None
    opts, model = run.opts, loaded.model
    check = SpeedCheck(opts.target, stages.latency_batches(opts, model), opts.threads, traced.shapes)
    with run.timer("latency_check"):
        plan, pruned, speed = meet_speedup(
            model, Replanner(loaded, traced, allocator), (plan, pruned), allocator.budget, check
        )
    speed["table"] = table.summary()
    return plan, pruned, speed


def int8_stage(
    run: Run, loaded: stages.Loaded, pruned: onnx.ModelProto, verified: stages.Verified, int8_path: Path
) -> tuple[onnx.ModelProto | None, dict | None]:
    """The pruned model as INT8 QDQ (onnxruntime's quantizer), compared with the dense and pruned outputs."""
    opts = run.opts
    if not opts.int8:
        return None, None
    if loaded.calib is None:
        run.warnings.append("no --calib: no INT8 output (it needs calibration data)")
        return None, None
    bar = run.progress
    with run.timer("int8"):
        qopts = QuantizeOptions(opts.quant_preset, opts.calib_method, latency_runs=20, metric=run.metric)
        known = Known(loaded.model, verified.dense_out, verified.pruned_out)
        int8, report = quantize_model(
            pruned,
            loaded.calib,
            qopts,
            known,
            progress=(lambda stage: bar(f"int8: {stage}", None)) if bar else None,
        )
    return int8, {"output": str(int8_path), **report}


def write_report(run: Run, path: Path, report: dict, models: list, report_path: Path) -> dict:
    """Check the ``--max-drop`` gate, write the models and the report atomically; a failed gate still writes
    them (the report says why) and then exits 4."""
    gate = None
    if run.opts.max_drop is not None and report["fidelity"]:
        key, value = headline(report["fidelity"])
        report["quality_gate"] = gate = {
            "metric": key,
            "value": value,
            "max_drop": run.opts.max_drop,
            "passed": 1.0 - value <= run.opts.max_drop,
        }
    write_outputs([*models, (report_path, json.dumps(report, indent=2))], protect=(path,))
    if gate is not None and not gate["passed"]:
        raise QualityGateError(
            f"quality gate failed: {gate['metric']} {gate['value']:.4f} dropped by "
            f"{1 - gate['value']:.4f} > --max-drop {run.opts.max_drop}"
        )
    return report


def calibration_summary(calib: CalibrationSet | None) -> dict | None:
    if calib is None:
        return None
    return {
        "source": calib.source,
        "samples": calib.n_calib(),
        "mosaics": calib.n_statistics() - calib.n_calib(),
        "holdout": calib.n_holdout(),
    }


def group_rows(trace, plan, skipped) -> list[dict]:
    """Per group of the trace: channels, kept, pruned indices, members, and why it was not pruned."""
    rows = []
    for g in trace.groups:
        kept = np.asarray(plan.get(g.id, np.arange(g.size)))
        reason = (
            "; ".join(g.reasons)
            if g.reasons
            else skipped.get(g.id) or (None if g.size > 1 else "single channel")
        )
        rows.append(
            {
                "id": g.id,
                "channels": g.size,
                "kept": int(len(kept)),
                "pruned_indices": sorted(set(range(g.size)) - set(kept.tolist())),
                "members": [{"node": n, "role": r} for n, r in g.members],
                "prunable": g.prunable and g.id not in skipped,
                "reason": reason,
            }
        )
    return rows


__all__ = ["CompressOptions", "CalibrationSet", "compress", "parse_target"]
