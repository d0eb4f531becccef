"""Measured onnxruntime latency: warm-up, then the median of repeated runs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx


@dataclass
class Latency:
    median_ms: float
    p90_ms: float
    runs: int
    threads: int


def ort_session(
    model: onnx.ModelProto,
    threads: int = 0,
    optimize: bool = True,
    spinning: bool = True,
    quiet: bool = False,
):
    """A CPU InferenceSession; ``threads`` 0 lets onnxruntime choose (one per core).

    ``spinning=False`` stops idle intra-op threads from busy-waiting after a run: needed when several
    sessions take turns in one process (a finished session's spinning threads steal cores from the next).
    ``quiet``: onnxruntime logs nothing, not even a failed run (for runs whose failure the caller handles).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 4 if quiet else 3
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def measure_latency(
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    *,
    runs: int = 50,
    warmup: int = 10,
    threads: int = 0,
    budget_s: float = 20.0,
    quiet: bool = False,
) -> Latency:
    """Median and 90th-percentile wall time of ``sess.run`` on ``feeds`` (stops early past ``budget_s``)."""
    sess = ort_session(model, threads, quiet=quiet)
    feeds = dict(feeds)
    for _ in range(warmup):
        sess.run(None, feeds)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < runs and (time.perf_counter() - start < budget_s or len(times) < 5):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return Latency(
        statistics.median(times), times[min(len(times) - 1, int(0.9 * len(times)))], len(times), threads
    )
