"""`onnxprune bench`: side-by-side latency of several ONNX models, measured in one process.

Why interleaved: on a shared or thermally throttling machine the speed drifts over seconds. Timing
model A for a while and then model B charges that drift to whichever ran in the slow stretch.
Here every model is loaded and warmed up first, then each *round* runs every model once, and round
r starts at model r mod n (A B C, B C A, C A B, ...), so slow stretches hit all models alike and
every model takes every position in a round in turn (none is always first after a pause). The
ratios between models are what this measures best; absolute numbers are those of this machine at
this moment. Each run follows another model's run, so caches are not warm with the model's own
data as in a loop over one model: for sub-millisecond models that costs some speed, most for the fastest.

Sessions are created with intra-op spinning off. With spinning on, the idle session's threads
busy-wait after each run and steal the cores of the session that runs next, so a ratio would depend
on which session was created first.

Per model the run times (ms) give p50/p90/p99, min, mean and a throughput of batch / p50.
``--repeats R`` repeats the interleaved rounds R times on the same sessions; the table then shows the
median and the min of the R per-repeat p50s (p90/p99/min are over all runs).

The onnxruntime backend lives here; ``onnxprune.tensorrt_backend`` plugs into the same loop
(``onnxprune.backends.run_bench`` picks one)
(:func:`bench_models`) with engines instead of sessions.
"""

from __future__ import annotations

import functools
import gc
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
from onnx import helper

from .errors import InputError
from .latency import ort_session
from .memory import peak_rss_growth, release_freed_memory
from .shapes import Shape, declared_shape, graph_inputs, resolve_input_shapes

MIN_ROUNDS = 5  # a time budget never cuts a measurement below this many rounds


class ModelSkipped(InputError):
    """A model cannot be measured in this configuration (e.g. its batch is fixed to another size).

    ``bench`` shows it as a skipped row; :func:`compare_latency` lets it through (exit 2).
    """


# ---- statistics and schedule (pure) -------------------------------------------------------------


@dataclass
class LatencyStats:
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    mean_ms: float
    throughput: float  # samples per second at the median: batch / p50
    runs: int
    batch: int
    threads: int

    def to_dict(self) -> dict:
        return asdict(self)


def latency_stats(times_ms: Sequence[float], *, batch: int = 1, threads: int = 0) -> LatencyStats:
    """Summary of run times in milliseconds.

    Percentiles interpolate linearly between order statistics (numpy's default), so p50 of an even
    count is the mean of the two middle runs; throughput = batch / p50 in samples per second.
    Raises ValueError on an empty sequence.
    """
    t = np.asarray(times_ms, dtype=np.float64)
    if t.size == 0:
        raise ValueError("no run times to summarize")
    p50, p90, p99 = (float(v) for v in np.percentile(t, [50, 90, 99]))
    return LatencyStats(
        p50,
        p90,
        p99,
        float(t.min()),
        float(t.mean()),
        batch * 1000.0 / p50 if p50 > 0 else float("inf"),
        int(t.size),
        batch,
        threads,
    )


def rotation(n_models: int, round_index: int) -> list[int]:
    """Order in which the models run in round ``round_index``: starts at model round_index mod n."""
    return [(round_index + i) % n_models for i in range(n_models)]


def interleave(
    runners: Sequence[Callable[[], float]], *, rounds: int, warmup: int = 0, budget_s: float | None = None
) -> list[list[float]]:
    """Run every runner once per round in :func:`rotation` order; each call returns its own time in ms.

    ``warmup`` untimed rounds come first (same rotation). With ``budget_s``, rounds stop once that many
    seconds have passed since the first timed round, but never before MIN_ROUNDS rounds. The garbage
    collector is paused meanwhile so that a collection is not charged to whichever model triggered it.
    Returns one list of times per runner, in round order.
    """
    n = len(runners)
    times: list[list[float]] = [[] for _ in range(n)]
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(warmup):
            for i in rotation(n, r):
                runners[i]()
        start = time.perf_counter()
        for r in range(rounds):
            if budget_s is not None and r >= MIN_ROUNDS and time.perf_counter() - start > budget_s:
                break
            for i in rotation(n, r):
                times[i].append(float(runners[i]()))
    finally:
        if was_enabled:
            gc.enable()
    return times


# ---- inputs ---------------------------------------------------------------------------------------


def shapes_at_batch(
    model: onnx.ModelProto, batch: int, input_shapes: Mapping[str, Shape] | None = None
) -> dict[str, Shape]:
    """Concrete input shapes with the leading (batch) dim set to ``batch``.

    ``input_shapes`` (only the names this model has are used) settle the other dynamic dims; their
    leading dim is replaced by ``batch`` too. A dim left dynamic is an InputError naming input and dim;
    a model whose leading dim is fixed to another size raises ModelSkipped.
    """
    names = {vi.name for vi in graph_inputs(model)}
    given = {k: v for k, v in (input_shapes or {}).items() if k in names}
    shapes = resolve_input_shapes(model, given)
    out: dict[str, Shape] = {}
    for vi in graph_inputs(model):
        dims, shape = declared_shape(vi), shapes[vi.name]
        if not shape:
            out[vi.name] = shape
        elif dims and isinstance(dims[0], int) and dims[0] > 0:
            if dims[0] != batch:
                raise ModelSkipped(f"input '{vi.name}' has a fixed batch of {dims[0]}, not {batch}")
            out[vi.name] = shape
        else:
            out[vi.name] = (batch, *shape[1:])
    return out


def random_feeds(model: onnx.ModelProto, shapes: Mapping[str, Shape], seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs in each input's dtype: floats ~ N(0, 1); integers in {0, 1} (valid token ids,
    segment ids and attention masks alike); bools by coin flip."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in graph_inputs(model):
        dtype = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        shape = shapes[vi.name]
        if np.issubdtype(dtype, np.floating):
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[vi.name] = rng.random(shape) < 0.5
        else:
            feeds[vi.name] = rng.integers(0, 2, shape).astype(dtype)
    return feeds


def feeds_for(
    model: onnx.ModelProto, batch: int, input_shapes: Mapping[str, Shape] | None, cache: dict
) -> dict[str, np.ndarray]:
    """Random feeds at ``batch``; models with the same input names, dtypes and shapes get the very same
    arrays (through ``cache``), models whose inputs differ get their own."""
    shapes = shapes_at_batch(model, batch, input_shapes)
    key = tuple((vi.name, vi.type.tensor_type.elem_type, shapes[vi.name]) for vi in graph_inputs(model))
    if key not in cache:
        cache[key] = random_feeds(model, shapes)
    return cache[key]


def check_input_shape_names(
    models: Sequence[onnx.ModelProto], input_shapes: Mapping[str, Shape] | None
) -> None:
    """Every ``--input-shape`` name must be an input of at least one model (a typo is exit 2, not ignored)."""
    known = {vi.name for m in models for vi in graph_inputs(m)}
    for name in input_shapes or {}:
        if name not in known:
            raise InputError(
                f"--input-shape names unknown input '{name}' (model inputs: {', '.join(sorted(known))})"
            )


# ---- the measurement loop -----------------------------------------------------------------------


@dataclass
class Prepared:
    """One model made ready at one batch by a backend."""

    run: Callable[[], float]  # one timed inference; returns its time in ms
    peak_mb: float | None  # memory growth while loading it and running it once
    extra: dict = field(default_factory=dict)  # backend details shown in the report
    close: Callable[[], None] = lambda: None


@dataclass
class BenchModel:
    name: str
    model: onnx.ModelProto
    size_mb: float


@dataclass
class BenchRow:
    model: str
    batch: int
    size_mb: float
    stats: LatencyStats | None = None  # over every timed run of every repeat
    p50_repeats_ms: list[float] = field(default_factory=list)
    peak_mb: float | None = None
    speedup: float | None = None  # first model's median p50 / this one's, same batch
    skipped: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def p50_median_ms(self) -> float | None:
        return statistics.median(self.p50_repeats_ms) if self.p50_repeats_ms else None

    def to_dict(self) -> dict:
        d = {
            "model": self.model,
            "batch": self.batch,
            "size_mb": self.size_mb,
            "peak_mb": self.peak_mb,
            "skipped": self.skipped,
            "stats": self.stats.to_dict() if self.stats else None,
            "p50_repeats_ms": self.p50_repeats_ms,
            "p50_median_ms": self.p50_median_ms,
            "p50_min_ms": min(self.p50_repeats_ms) if self.p50_repeats_ms else None,
            "speedup": self.speedup,
            "throughput": self.batch * 1000.0 / self.p50_median_ms if self.p50_median_ms else None,
        }
        return {**d, **self.extra}


Prepare = Callable[[BenchModel, int, dict[str, np.ndarray]], Prepared]


@dataclass
class BenchOptions:
    """How models are measured: the batches, onnxruntime intra-op ``threads`` (0: one per core), ``rounds``
    interleaved rounds after ``warmup`` ones, ``repeats`` times; dynamic dims from ``input_shapes``; the
    ``backend`` (``ort`` or ``tensorrt``) and TensorRT's ``sparse`` weights."""

    batches: Sequence[int] = (1,)
    threads: int = 0
    rounds: int = 30
    warmup: int = 5
    repeats: int = 1
    input_shapes: Mapping[str, Shape] | None = None
    backend: str = "ort"
    sparse: bool = False


def bench_models(
    models: Sequence[BenchModel],
    prepare: Prepare,
    opts: BenchOptions,
    progress: Callable[[str], None] | None = None,
) -> list[BenchRow]:
    """For each batch: prepare every model in turn (alone, so its memory growth is its own), then time
    them all with :func:`interleave` — warm-up once, then ``repeats`` × ``rounds`` rounds. Models that
    cannot run at a batch (ModelSkipped) become skipped rows. Rows come batch by batch, in model order.
    """
    batches, rounds, warmup, repeats = opts.batches, opts.rounds, opts.warmup, opts.repeats
    threads, input_shapes = opts.threads, opts.input_shapes
    rows: list[BenchRow] = []
    for batch in batches:
        cache: dict = {}
        batch_rows = [BenchRow(m.name, batch, m.size_mb) for m in models]
        ready: list[tuple[BenchRow, Prepared]] = []
        try:
            for m, row in zip(models, batch_rows, strict=True):
                if progress:
                    progress(f"batch {batch}: loading {m.name}")
                try:
                    prepared = prepare(m, batch, feeds_for(m.model, batch, input_shapes, cache))
                except ModelSkipped as exc:
                    row.skipped = str(exc)
                    continue
                row.peak_mb, row.extra = prepared.peak_mb, prepared.extra
                ready.append((row, prepared))
            per_repeat = []
            for rep in range(repeats if ready else 0):
                if progress:
                    progress(f"batch {batch}: repeat {rep + 1}/{repeats}, {rounds} rounds")
                # the sessions stay warm between repeats: warm-up rounds only before the first
                per_repeat.append(
                    interleave([p.run for _, p in ready], rounds=rounds, warmup=warmup if rep == 0 else 0)
                )
            for k, (row, _) in enumerate(ready):
                row.stats = latency_stats(
                    [t for rep in per_repeat for t in rep[k]], batch=batch, threads=threads
                )
                row.p50_repeats_ms = [latency_stats(rep[k]).p50_ms for rep in per_repeat]
        finally:
            for _, p in ready:
                p.close()
            del ready
            gc.collect()
            release_freed_memory()
        first = batch_rows[0].p50_median_ms
        for row in batch_rows:
            if first and row.p50_median_ms:
                row.speedup = first / row.p50_median_ms
        rows.extend(batch_rows)
    return rows


# ---- onnxruntime ---------------------------------------------------------------------------------


def ort_runner(session, feeds: Mapping[str, np.ndarray]) -> Callable[[], float]:
    """One ``session.run`` on fixed feeds, timed with the wall clock (ms)."""
    feeds = dict(feeds)

    def run() -> float:
        t0 = time.perf_counter()
        session.run(None, feeds)
        return (time.perf_counter() - t0) * 1e3

    return run


@functools.cache
def _onnxruntime_started() -> None:
    """Create and run one trivial session, so that onnxruntime's process-wide setup (environment,
    default logger, kernel registries) is not charged to the first model's memory."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "warm",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    ort_session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)).run(
        None, {"x": np.zeros(1, np.float32)}
    )


def ort_prepare(threads: int) -> Prepare:
    """Backend hook for :func:`bench_models`: an onnxruntime CPU session, created and run once while
    the memory growth is measured."""
    _onnxruntime_started()

    def prepare(m: BenchModel, batch: int, feeds: dict[str, np.ndarray]) -> Prepared:
        def load_and_run():
            session = ort_session(m.model, threads, spinning=False)  # see the module docstring
            session.run(None, feeds)
            return session

        try:
            session, peak = peak_rss_growth(load_and_run)
        except Exception as exc:  # onnxruntime's own errors: unsupported op, bad shapes, ...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelSkipped(f"onnxruntime cannot run it at batch {batch}: {first}") from None
        return Prepared(ort_runner(session, feeds), peak)

    return prepare


def compare_latency(
    models: Sequence[onnx.ModelProto],
    *,
    batch: int = 1,
    threads: int = 0,
    input_shapes: Mapping[str, tuple] | None = None,
    rounds: int = 30,
    warmup: int = 5,
    budget_s: float | None = None,
) -> list[LatencyStats]:
    """onnxruntime CPU latency of ``models`` measured side by side (one :func:`interleave` run).

    Every model gets random inputs at ``batch`` (shared when the models' inputs agree); ``input_shapes``
    settles dynamic non-batch dims. Returns one LatencyStats per model, in order. Raises InputError for
    an unresolved dynamic dim, ModelSkipped (an InputError) when a model cannot run at ``batch``.
    """
    check_input_shape_names(models, input_shapes)
    cache: dict = {}
    prepare = ort_prepare(threads)
    runners = []
    for i, m in enumerate(models, 1):
        try:
            feeds = feeds_for(m, batch, input_shapes, cache)
            runners.append(prepare(BenchModel(f"model {i}", m, 0.0), batch, feeds).run)
        except ModelSkipped as exc:
            raise ModelSkipped(f"model {i} of {len(models)}: {exc}") from None
    times = interleave(runners, rounds=rounds, warmup=warmup, budget_s=budget_s)
    return [latency_stats(t, batch=batch, threads=threads) for t in times]


# ---- the command --------------------------------------------------------------------------------


def parse_batches(spec: str, option: str = "--batch") -> list[int]:
    """ "1,8,32" → [1, 8, 32]; anything else (zero, negative, not a number) is an InputError naming
    ``option``."""
    try:
        batches = [int(b) for b in spec.split(",") if b.strip()]
        if not batches or any(b <= 0 for b in batches):
            raise ValueError
    except ValueError:
        raise InputError(
            f"bad {option} '{spec}': expected positive sizes separated by commas, e.g. 1,8,32"
        ) from None
    return list(dict.fromkeys(batches))
