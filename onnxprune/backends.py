"""``onnxprune bench``: the models measured side by side on the backend asked for (onnxruntime here,
TensorRT through ``tensorrt_backend``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import onnx
import onnxruntime

from .bench import BenchModel, BenchOptions, bench_models, check_input_shape_names, ort_prepare
from .errors import InputError
from .modelio import load_model, require_runnable
from .tensorrt_backend import tensorrt_available, tensorrt_prepare, tensorrt_version

BACKENDS = ("ort", "tensorrt")


def run_bench(
    paths: Sequence[str], opts: BenchOptions, progress: Callable[[str], None] | None = None
) -> dict:
    """``onnxprune bench``: load the models (exit 2 on an unusable file), measure them, return the report."""
    backend, sparse, input_shapes = opts.backend, opts.sparse, opts.input_shapes

    if backend not in BACKENDS:
        raise InputError(f"unknown backend '{backend}' (ort or tensorrt)")
    if sparse and backend != "tensorrt":
        raise InputError("--sparse applies to --backend tensorrt only")
    versions = {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    if backend == "tensorrt":
        reason = tensorrt_available()
        if reason:
            raise InputError(f"--backend tensorrt: {reason}")
    models = [BenchModel(str(p), m, m.ByteSize() / 1e6) for p, m in ((p, load_model(p)) for p in paths)]
    for bm in models:
        require_runnable(bm.model, bm.name)
    check_input_shape_names([m.model for m in models], input_shapes)
    if backend == "tensorrt":
        prepare, versions["tensorrt"] = tensorrt_prepare(input_shapes, sparse), tensorrt_version()
    else:
        prepare = ort_prepare(opts.threads)
    rows = bench_models(models, prepare, opts, progress=progress)
    return {
        "backend": backend,
        "models": [m.name for m in models],
        "batches": list(opts.batches),
        "threads": opts.threads,
        "rounds": opts.rounds,
        "warmup": opts.warmup,
        "repeats": opts.repeats,
        "input_shapes": {k: list(v) for k, v in (input_shapes or {}).items()},
        "results": [r.to_dict() for r in rows],
        "versions": versions,
    }
