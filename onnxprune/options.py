"""What `compress` is asked to do: its options, their parsing and their validation."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from .criteria import CRITERIA
from .errors import InputError
from .shapes import Shape
from .sparsity import sparsity_option

ALLOCATIONS = ("dp", "global", "uniform")
METRICS = ("macs", "params", "latency")
DATA_CRITERIA = ("obs", "woodfisher", "activation", "apoz")
STATS_DTYPES = ("float64", "float32")


@dataclass
class CompressOptions:
    target: float = 2.0
    metric: str = "macs"
    calib: str | None = None
    calib_samples: int = 256
    calib_mosaics: int | None = (
        None  # synthetic 2x2 mosaics for the statistics (None: one per calibration image)
    )
    criterion: str = "obs"
    allocation: str = "dp"
    reconstruct: bool = True
    round_to: int | None = None  # None: 1 for macs/params, LATENCY_ROUND_TO for latency
    max_drop: float | None = None
    metric_fn: str | None = (
        None  # --metric-fn: a shipped metric's name or file.py:function (metrics.load_metric)
    )
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
    # allocation curves: the criterion's curve at the measured level ("scaled"), "measured", "estimated"
    sensitivity: str = "scaled"
    sensitivity_samples: int = 32
    search_evals: int = 0  # SPDY-style search of the DP weights by the whole plan's measured damage (0: off)
    woodfisher_rows: int = 2048  # `woodfisher`: input rows sampled per consumer for the Woodbury inverse
    refit_samples: int = 256  # calibration samples the least-squares refit reads (two ORT passes per stage)
    sparsity: str | None = None  # "2:4" / "N:M" (N zeros in every M input channels) or a fraction "0.5"
    int8: bool = True  # also write <stem>.pruned.int8.onnx (QAT-ready QDQ; needs calib)
    quant_preset: str = "ort"
    calib_method: str = "minmax"
    threads: int = 0  # --metric latency: onnxruntime intra-op threads of every measurement (0: one per core)
    latency_batches: tuple[
        int, ...
    ] = ()  # table measured at the first, speedup checked at each; () = (1, 32) or the fixed batch


def parse_target(text: str) -> float:
    """'2x' / '2' / '1.5X' → 2.0 / 2.0 / 1.5 (the cost divisor)."""
    try:
        value = float(str(text).strip().lower().rstrip("x"))
    except ValueError:
        raise InputError(f"bad --target '{text}': expected a factor like 2x or 1.5x") from None
    if not value >= 1.0 or math.isinf(value):
        raise InputError(f"bad --target '{text}': the factor must be ≥ 1 (2x halves the cost)")
    return value


def validate(opts: CompressOptions) -> None:
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
