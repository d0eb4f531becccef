"""The `onnxprune` command line: a thin click shell over the library functions."""

from __future__ import annotations

import contextlib
import json
import os
import sys

import click
from rich.console import Console

from ._version import __version__
from .backends import BACKENDS
from .calibration.readers import PREPROCESS
from .criteria import CRITERIA
from .errors import OnnxPruneError
from .options import ALLOCATIONS, METRICS, STATS_DTYPES
from .quantize import CALIB_METHODS, PRESETS
from .shapes import parse_input_shapes


def option(*decls: str, **kw):
    """``click.option`` that shows its default in the help when it has one."""
    return click.option(*decls, show_default="default" in kw and not kw.get("is_flag"), **kw)


def output_dir_option(what: str):
    """``-o/--output-dir``: the folder for the command's outputs (``what``)."""
    return option(
        "-o",
        "--output-dir",
        "outdir",
        default="out",
        type=click.Path(file_okay=False),
        help=f"Folder for {what}.",
    )


input_shape_option = click.option(
    "--input-shape",
    "input_shapes",
    multiple=True,
    metavar="NAME:DxDx..",
    help="Concrete shape for a dynamic input, e.g. input:1x3x224x224 (repeatable). Batch defaults to 1.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onnxprune")
def cli() -> None:
    """Structured pruning, reconstruction and INT8 QDQ for exported ONNX models."""


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@input_shape_option
@option(
    "--sparsity",
    metavar="N:M",
    help="Also report which linear weights have ≥ N zeros in every M "
    "along the reduction dimension (TensorRT layout), and the overall sparsity.",
)
@option("--json", "as_json", is_flag=True, help="Print the analysis as JSON instead of tables.")
def analyze(model: str, input_shapes: tuple[str, ...], sparsity: str | None, as_json: bool) -> None:
    """Layers, MACs and parameters of MODEL (after normalization)."""
    from .analyze import analyze_model, render_analysis

    result = analyze_model(model, parse_input_shapes(input_shapes), sparsity)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        render_analysis(Console(), result)


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@output_dir_option("<stem>.pruned.onnx and <stem>.report.json")
@option("--target", default="2x", help="Cost divisor, e.g. 2x halves the MACs.")
@option(
    "--metric",
    type=click.Choice(METRICS),
    default="macs",
    help="What --target divides. latency: measured onnxruntime CPU time on this machine (a per-layer "
    "latency table, then a side-by-side check of the pruned model; the budget tightens until it holds).",
)
@option(
    "--calib",
    metavar="PATH",
    help="Calibration data: .npz/.npy, an image folder, or file.py:function "
    "(runs that Python file: only use code you trust).",
)
@option("--calib-samples", default=256, help="Calibration samples; the next ones are held out.")
@option(
    "--calib-mosaics",
    type=int,
    metavar="N",
    help="Also feed the layer statistics N synthetic 2x2 mosaics "
    "of calibration-image crops (default: one per calibration image for image inputs of 64 px or more; 0: "
    "none).",
)
@option("--preprocess", type=click.Choice(PREPROCESS), help="Image-folder preprocessing.")
@option("--input-size", type=int, help="Image-folder crop size (default: the model's input size).")
@option("--criterion", type=click.Choice(CRITERIA), default="obs")
@option(
    "--allocation",
    type=click.Choice(ALLOCATIONS),
    default="dp",
    help="dp: least summed measured damage for the target (SPDY-style); global: one ranking of every "
    "channel by its error alone, blind to what it saves (a baseline, like global magnitude pruning); "
    "uniform: every group loses the same fraction.",
)
@option(
    "--search-evals",
    default=0,
    metavar="N",
    help="dp: after the DP, search its "
    "per-group weights by the whole plan's measured damage on calibration data (N evaluations; 0: off; "
    "with photo-like calibration each plan is compensated from one half of the sources, measured on the "
    "other).",
)
@option(
    "--no-reconstruct",
    is_flag=True,
    help="Skip the least-squares refit of the pruned layers on "
    "calibration data (obs/woodfisher still apply OBS's own compensation from the dense Hessians).",
)
@option(
    "--round-to",
    type=int,
    help="Keep every group's width a multiple of N (default 1; 16 with --metric "
    "latency: other widths fall off onnxruntime's 16-channel blocked CPU convolutions).",
)
@option(
    "--threads",
    default=0,
    help="--metric latency: onnxruntime threads of every measurement (0: one per core).",
)
@option(
    "--latency-batches",
    metavar="B1,B2..",
    help="--metric latency: the table is measured at the first "
    "batch size, the speedup checked at each (default 1,32; a model with a fixed batch: that batch).",
)
@option(
    "--max-drop",
    type=float,
    help="Fail (exit 4) if top-1 agreement (or the lowest per-component R² of other outputs) drops by more.",
)
@option(
    "--metric-fn",
    metavar="NAME|FILE.py:FN",
    help="Fidelity for the report and --max-drop: "
    "detection-f1, map-iou, map-pearson, or your function of (dense outputs, pruned outputs) -> number, "
    "1.0 = identical (runs that Python file: only use code you trust).",
)
@option("--metric-options", metavar="K=V,..", help="Options of --metric-fn, e.g. layout=yolov8,score=0.25.")
@option("--exclude", metavar="REGEX", help="Never prune groups touching nodes whose name matches.")
@option("--stats-dtype", type=click.Choice(STATS_DTYPES), default="float64")
@option(
    "--sparsity",
    metavar="N:M|FRACTION",
    help="Also sparsify the linear weights: '2:4' (2 zeros in every "
    "4 input channels, TensorRT layout) or an unstructured fraction like 0.5 (SparseGPT with --calib).",
)
@option(
    "--int8/--no-int8",
    default=True,
    help="Also write <stem>.pruned.int8.onnx: QAT-ready INT8 QDQ of the pruned model (needs --calib).",
)
@option("--quant-preset", type=click.Choice(list(PRESETS)), default="ort")
@option(
    "--calib-method",
    type=click.Choice(list(CALIB_METHODS)),
    default="minmax",
    help="INT8 activation range calibration.",
)
@option("--seed", default=0)
@input_shape_option
@option("--json", "as_json", is_flag=True, help="Print the report JSON instead of the summary.")
def compress(model, outdir, target, no_reconstruct, latency_batches, input_shapes, as_json, **fields) -> None:
    """Prune MODEL to --target with calibration-aware scores and reconstruction."""
    from .bench import parse_batches
    from .pipeline import CompressOptions, parse_target
    from .pipeline import compress as run
    from .summary import print_summary, progress_factory

    opts = CompressOptions(
        target=parse_target(target),
        reconstruct=not no_reconstruct,
        latency_batches=tuple(parse_batches(latency_batches, "--latency-batches")) if latency_batches else (),
        input_shapes=parse_input_shapes(input_shapes),
        **fields,  # the other options are CompressOptions' fields by name
    )
    console = Console(stderr=as_json)
    with progress_factory(console, enabled=not as_json) as progress:
        report = run(model, outdir, opts, progress=progress)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        print_summary(console, report)


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@option(
    "--calib",
    required=True,
    metavar="PATH",
    help="Calibration data: .npz/.npy, an image folder, or "
    "file.py:function (runs that Python file: only use code you trust).",
)
@output_dir_option("<stem>.int8.onnx and <stem>.int8.report.json")
@option("--calib-samples", default=256, help="Calibration samples; the next ones are held out.")
@option("--preprocess", type=click.Choice(PREPROCESS), help="Image-folder preprocessing.")
@option("--input-size", type=int, help="Image-folder crop size (default: the model's input size).")
@option(
    "--preset",
    type=click.Choice(list(PRESETS)),
    default="ort",
    help="ort: uint8 asymmetric activations for ORT CPU; tensorrt: symmetric int8, shared Add/Concat scales.",
)
@option(
    "--calib-method",
    type=click.Choice(list(CALIB_METHODS)),
    default="minmax",
    help="How onnxruntime's calibrator picks activation ranges.",
)
@option(
    "--max-drop",
    type=float,
    help="Keep the most sensitive layers in float until top-1 agreement (or "
    "the lowest per-component R² of other outputs) with the FP32 model drops by at most X; exit 4 if "
    "even that fails.",
)
@option(
    "--no-bias-correction", is_flag=True, help="Skip correcting the biases for the mean INT8 weight error."
)
@option(
    "--metric-fn",
    metavar="NAME|FILE.py:FN",
    help="Fidelity for the report and --max-drop (as for "
    "compress; runs that Python file: only use code you trust).",
)
@option("--metric-options", metavar="K=V,..", help="Options of --metric-fn.")
@option("--json", "as_json", is_flag=True, help="Print the report JSON instead of the summary.")
def quantize(
    model,
    calib,
    outdir,
    calib_samples,
    preprocess,
    input_size,
    preset,
    calib_method,
    max_drop,
    no_bias_correction,
    metric_fn,
    metric_options,
    as_json,
) -> None:
    """INT8 QDQ (QAT-ready) version of MODEL, calibrated on --calib."""
    from .metrics import load_metric
    from .quantize import QuantizeOptions, quantize_file
    from .summary import print_quantize_summary

    console = Console(stderr=True)
    status = None if as_json else console.status("quantizing")
    with status or contextlib.nullcontext():
        metric = load_metric(metric_fn, metric_options) if metric_fn else None
        opts = QuantizeOptions(
            preset, calib_method, max_drop=max_drop, bias_correction=not no_bias_correction
        )
        opts.metric = metric
        shown = (lambda stage: status.update(f"quantizing: {stage}")) if status else None
        report = quantize_file(
            model, outdir, calib, calib_samples, preprocess, input_size, opts, progress=shown
        )
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        print_quantize_summary(Console(), report)


@cli.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@option(
    "--batch",
    "batches",
    default="1",
    metavar="B[,B..]",
    help="Batch sizes to measure, comma-separated, e.g. 1,8,32.",
)
@option(
    "--threads", default=0, type=click.IntRange(min=0), help="onnxruntime intra-op threads (0: one per core)."
)
@option(
    "--rounds",
    default=30,
    type=click.IntRange(min=1),
    help="Timed rounds, each model once a round, rotating.",
)
@option("--warmup", default=5, type=click.IntRange(min=0), help="Untimed rounds first.")
@option(
    "--repeats", default=1, type=click.IntRange(min=1), help="Repeats of the rounds (median and min of p50s)."
)
@option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="ort",
    help="ort: onnxruntime CPU; tensorrt: engines built on the GPU (needs tensorrt and a CUDA GPU).",
)
@option(
    "--sparse",
    is_flag=True,
    help="TensorRT: build with SPARSE_WEIGHTS (automatic for models with 2:4 weights).",
)
@input_shape_option
@option("--json", "as_json", is_flag=True, help="Print the measurements as JSON instead of a table.")
def bench(models, batches, threads, rounds, warmup, repeats, backend, sparse, input_shapes, as_json) -> None:
    """Latency of MODELS side by side in one process, with ratios against the first model."""
    from .backends import run_bench
    from .bench import BenchOptions, parse_batches
    from .summary import print_bench

    console = Console(stderr=True)
    status = None if as_json else console.status("benchmarking")
    with status or contextlib.nullcontext():
        opts = BenchOptions(
            parse_batches(batches),
            threads,
            rounds,
            warmup,
            repeats,
            parse_input_shapes(input_shapes),
            backend,
            sparse,
        )
        report = run_bench(
            models, opts, progress=(lambda text: status.update(f"benchmarking: {text}")) if status else None
        )
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        out = Console()
        # piped into a file or a CI log, the wide table is kept whole instead of wrapped at 80 columns
        print_bench(out if out.is_terminal else Console(width=max(out.width, 150)), report)


def main(argv: list[str] | None = None) -> None:
    """Entry point: expected failures print one line and exit with the contract's code."""
    try:
        cli.main(args=argv, prog_name="onnxprune", standalone_mode=False)
    except OnnxPruneError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:  # usage errors: one line, exit 2 as click does
        click.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:
        if os.environ.get("ONNXPRUNE_DEBUG"):
            raise
        click.echo(
            f"error: unexpected {type(exc).__name__}: {' '.join(str(exc).split())} "
            "(set ONNXPRUNE_DEBUG=1 for a traceback)",
            err=True,
        )
        sys.exit(1)
    sys.exit(0)
