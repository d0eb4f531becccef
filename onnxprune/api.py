"""The Python API: ``onnxprune.compress(model, target=..., calib=..., **options)``.

    import onnxprune

    result = onnxprune.compress("model.onnx", target="2x", calib="data/", metric="latency")
    result.pruned            # onnx.ModelProto: the pruned model
    result.int8              # its INT8 QDQ copy (None with int8=False or without calib)
    result.report["fidelity"], result.report["achieved"]

The options are the fields of ``CompressOptions`` (the CLI's long options, with underscores for dashes).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from .options import CompressOptions, parse_target
from .pipeline import compress as run_compress
from .pipeline import output_paths


@dataclass
class CompressResult:
    """What ``compress`` made: the pruned model, its INT8 copy (None where none was made), the report (as
    ``<stem>.report.json``) and the files written (empty when no ``outdir`` was given)."""

    pruned: onnx.ModelProto
    int8: onnx.ModelProto | None
    report: dict
    paths: dict[str, Path] = field(default_factory=dict)


def compress(
    model: str | os.PathLike | onnx.ModelProto,
    *,
    target: float | str = 2.0,
    calib: str | None = None,
    outdir: str | os.PathLike | None = None,
    progress=None,
    **options,
) -> CompressResult:
    """Prune ``model`` (a path or a ModelProto) to ``target`` (a factor: 2.0 or "2x") with calibration data
    ``calib`` (as ``--calib``: .npz/.npy, an image folder or file.py:function). With ``outdir`` the files
    are written there as by the CLI; without, they go to a temporary folder removed before returning.
    Raises ``errors.OnnxPruneError`` subclasses (their ``exit_code`` is the CLI's)."""
    opts = CompressOptions(target=parse_target(str(target)), calib=calib, **options)
    with tempfile.TemporaryDirectory(prefix="onnxprune-") as tmp:
        path = Path(model) if not isinstance(model, onnx.ModelProto) else _saved(model, Path(tmp) / "in")
        out = Path(outdir) if outdir is not None else Path(tmp) / "out"
        report = run_compress(path, out, opts, progress=progress)
        pruned = onnx.load(report["output"])
        int8 = onnx.load(report["int8"]["output"]) if report.get("int8") else None
        paths = {}
        if outdir is not None:
            pruned_path, int8_path, report_path = output_paths(path, out)
            paths = {"pruned": pruned_path, "report": report_path, **({"int8": int8_path} if int8 else {})}
    return CompressResult(pruned, int8, report, paths)


def _saved(model: onnx.ModelProto, folder: Path) -> Path:
    folder.mkdir()
    path = folder / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=model.ByteSize() > 2**31 - 1)
    return path
