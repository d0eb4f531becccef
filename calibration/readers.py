"""Calibration data in, numpy feed dicts out.

``load_calibration(spec, model)`` reads one of

* ``data.npz``: one key per model input, axis 0 = samples (other keys, e.g. ``labels``, are ignored);
  an optional ``groups`` key (one integer or string per sample; a script's feed dicts may carry it too)
  names the source each sample came from (e.g. the photo several crops were cut from): the refit's two
  validation halves never share a group, and a warning says when the held-out slice shares groups with
  the calibration slice;
* ``data.npy``: one array, single-input models only;
* an image folder (``.jpg .jpeg .png .bmp .webp``, recursive, sorted by path), decoded with
  Pillow (optional: ``pip install 'onnxprune[images]'``) and preprocessed as ``imagenet``,
  ``effnet`` or ``raw``;
* ``path/to/file.py:function``: **imports and runs that file as Python code** (with the caller's
  privileges) and calls ``function()``, which returns an iterable of feed dicts (input name ->
  array with a leading batch axis); batches are concatenated, reading stops once enough samples
  are in.

The data is checked against the model's graph inputs (names, rank, static dims except axis 0,
dtype family), cast to the input dtypes, and split in file order (no shuffling) into a calibration
slice and a disjoint held-out slice for verification. Input files are only ever read.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import tokenize
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper
from onnxprune.calibration.augment import image_input, mosaics

from onnxprune.errors import InputError
from onnxprune.shapes import FLOAT_TYPES, declared_shape, graph_inputs, static_batch
from onnxprune.userfn import user_function

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
PREPROCESS = ("imagenet", "effnet", "raw")
_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)
_CROP_FRACTION = 0.875
GROUPS_KEY = "groups"  # optional .npz key: the source of each sample (see the module doc)


@dataclass
class CalibrationSet:
    calib: dict[str, np.ndarray]  # input name -> array, axis 0 = samples
    holdout: dict[str, np.ndarray]  # disjoint held-out slice for verification (same keys)
    source: str  # human description, e.g. "models/fmnist_calib.npz (npz, 512 samples)"
    warnings: list[str] = field(default_factory=list)
    fixed_batch: int | None = None  # the model's static axis 0, if any: batches() feed exactly that many
    groups: np.ndarray | None = None  # per calibration sample: its source (npz "groups"), or None
    mosaics: dict[str, np.ndarray] = field(default_factory=dict)  # synthetic: statistics and SparseGPT only

    def n_calib(self) -> int:
        return _count(self.calib)

    def n_statistics(self) -> int:
        return _count(self.calib) + _count(self.mosaics)

    def groups_with_mosaics(self, n_real: int) -> np.ndarray | None:
        """Group codes of the first ``n_real`` calibration samples followed by the mosaics (each its own
        group: a mosaic mixes sources), or None without groups."""
        if self.groups is None:
            return None
        codes = np.unique(self.groups[:n_real], return_inverse=True)[1].reshape(-1)
        start = int(codes.max()) + 1 if len(codes) else 0
        return np.concatenate([codes, start + np.arange(_count(self.mosaics))])

    def add_mosaics(self, count: int, seed: int = 0) -> str | None:
        """Add ``count`` mosaics of the calibration images (``calibration.augment``) for the statistics
        pass and SparseGPT; returns a warning instead when the model's input is not a single batch of
        images."""
        name = image_input(self.calib)
        if name is None:
            return (
                "--calib-mosaics needs a single image input ([N, C, H, W] or [N, H, W, C], float): none added"
            )
        if self.n_calib() < 2:
            return "--calib-mosaics needs at least 2 calibration images: none added"
        if self.fixed_batch:
            count -= count % self.fixed_batch
        self.mosaics = {name: mosaics(self.calib[name], count, np.random.default_rng(seed))} if count else {}
        return None

    def with_float_dtype(self, dtype) -> CalibrationSet:
        """A copy whose floating arrays are cast to ``dtype`` (e.g. to feed the float32 upcast of a
        float16 model)."""

        def cast(arrays):
            return {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in arrays.items()}

        return dataclasses.replace(
            self,
            calib=cast(self.calib),
            holdout=cast(self.holdout),
            mosaics=cast(self.mosaics),
            warnings=list(self.warnings),
        )

    def n_holdout(self) -> int:
        return _count(self.holdout)

    def batches(self, which: str = "calib", batch_size: int = 32) -> Iterator[dict[str, np.ndarray]]:
        """Consecutive slices of ``calib``, ``holdout``, ``mosaics`` or ``statistics`` (``calib``, then the
        mosaics);
        with a static model batch B, exactly B samples each (a final partial batch is dropped, see
        ``warnings``)."""
        if which not in ("calib", "holdout", "mosaics", "statistics"):
            raise ValueError(f"which must be 'calib', 'holdout', 'mosaics' or 'statistics', not {which!r}")
        parts = {
            "calib": [self.calib],
            "holdout": [self.holdout],
            "mosaics": [self.mosaics],
            "statistics": [self.calib, self.mosaics],
        }[which]
        step = self.fixed_batch or batch_size
        if step < 1:
            raise ValueError("batch_size must be >= 1")
        for data in parts:
            n = _count(data)
            stop = n - n % step if self.fixed_batch else n
            for i in range(0, stop, step):
                yield {k: v[i : i + step] for k, v in data.items()}

    def first(self, which: str, samples: int, batch: int | None = None) -> list[dict[str, np.ndarray]]:
        """The batches of ``batch`` samples (default all ``samples`` in one; with a static model batch B,
        whole batches of B) holding the first ``samples`` samples of ``which``: all it has when fewer, at
        least one batch where there is one."""
        step = self.fixed_batch or batch or max(samples, 1)
        return list(itertools.islice(self.batches(which, step), max(1, math.ceil(samples / step))))


def _count(arrays: Mapping[str, np.ndarray]) -> int:
    return len(next(iter(arrays.values()))) if arrays else 0


def load_calibration(
    spec: str,
    model: onnx.ModelProto,
    *,
    samples: int = 256,
    holdout: int = 256,
    preprocess: str | None = None,
    input_size: int | None = None,
    seed: int = 0,
) -> CalibrationSet:
    """Read ``spec`` (see the module doc) into a validated :class:`CalibrationSet`.

    ``calib`` = the first ``samples`` samples, ``holdout`` = up to ``holdout`` next ones. Without
    a surplus, the last ~20 % (at least 1) are held out instead, with a warning. A ``.py:function``
    spec RUNS USER CODE. ``seed`` is accepted for CLI symmetry; the split is deterministic file order.
    Every problem with the data raises :class:`InputError` (exit 2) with a one-line message.
    """
    del seed  # no shuffling: file order is the contract
    if samples < 1:
        raise InputError(f"--calib-samples must be at least 1, got {samples}")
    if holdout < 0:
        raise InputError(f"held-out sample count must be >= 0, got {holdout}")
    inputs = graph_inputs(model)
    if not inputs:
        raise InputError("model has no graph inputs to feed calibration data to")
    need = samples + holdout
    warnings: list[str] = []
    kind, path, func = _parse_spec(spec)
    if kind != "images" and (preprocess is not None or input_size is not None):
        warnings.append("--preprocess/--input-size apply to image folders only; ignored")
    groups = None
    if kind in ("npz", "npy"):
        arrays, source, groups = _read_array_file(path, kind, inputs, need)
    elif kind == "images":
        arrays, source = _read_images(path, inputs, need, preprocess, input_size, warnings)
    else:
        arrays, source = _read_script(spec, path, func, need)
        if GROUPS_KEY in arrays and GROUPS_KEY not in {vi.name for vi in inputs}:
            values = np.asarray(arrays.pop(GROUPS_KEY))
            groups = _checked_groups(values, len(values) if values.ndim else 0, _same_counts(arrays), spec)
    arrays, fixed_batch = _validate(arrays, inputs, warnings)
    n = _count(arrays)
    if holdout == 0:
        n_cal, n_hold = min(n, samples), 0
    elif n > samples:
        n_cal, n_hold = samples, min(n - samples, holdout)
    elif n == 1:
        n_cal, n_hold = 1, 0
        warnings.append("only 1 calibration sample: nothing held out, verification has no data")
    else:
        n_hold = min(max(1, n // 5), holdout)
        n_cal = n - n_hold
        warnings.append(
            f"only {n} samples for {samples} calibration + {holdout} held-out: calibrating on "
            f"the first {n_cal}, holding out the last {n_hold} for verification"
        )
    calib = {k: v[:n_cal] for k, v in arrays.items()}
    held = {k: v[n_cal : n_cal + n_hold] for k, v in arrays.items()}
    if groups is not None:
        shared = np.isin(groups[n_cal : n_cal + n_hold], groups[:n_cal]).sum()
        if shared:
            warnings.append(
                f"{shared} of {n_hold} held-out samples share a group with the calibration samples: "
                "the held-out fidelity overstates how the pruned model generalizes"
            )
        groups = groups[:n_cal]
    for name, m in (("calibration", n_cal), ("held-out", n_hold)):
        if fixed_batch and m % fixed_batch:
            warnings.append(
                f"model has a fixed batch of {fixed_batch}: the last {m % fixed_batch} "
                f"{name} samples do not fill a batch and are skipped"
            )
    return CalibrationSet(calib, held, source, warnings, fixed_batch, groups)


def _parse_spec(spec: str) -> tuple[str, str, str]:
    """-> (kind, path, function); kind in npz | npy | images | script."""
    raw = os.path.expanduser(str(spec))
    if not os.path.exists(raw) and ":" in raw:
        path, _, func = raw.rpartition(":")
        if path.lower().endswith(".py"):
            if not func.isidentifier():
                raise InputError(f"bad calibration script spec '{spec}': expected path/to/file.py:function")
            if not os.path.isfile(path):
                raise InputError(f"calibration script not found: {path}")
            return "script", path, func
    if not os.path.exists(raw):
        raise InputError(f"calibration data not found: {spec}")
    if os.path.isdir(raw):
        return "images", raw, ""
    ext = os.path.splitext(raw)[1].lower()
    if ext in (".npz", ".npy"):
        return ext[1:], raw, ""
    if ext == ".py":
        raise InputError(f"calibration script '{spec}' needs a function: pass {spec}:FUNCTION")
    raise InputError(
        f"unsupported calibration data '{spec}': expected a .npz or .npy file, an image folder, "
        "or file.py:function"
    )


def _read_array_file(
    path: str, kind: str, inputs, need: int
) -> tuple[dict[str, np.ndarray], str, np.ndarray | None]:
    names = [vi.name for vi in inputs]
    if kind == "npy" and len(inputs) != 1:
        raise InputError(
            f"a .npy file holds one array but the model has {len(inputs)} inputs "
            f"({', '.join(names)}): use a .npz with one key per input"
        )
    groups = None
    try:
        if kind == "npy":  # memory-mapped: only the samples used are read
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            parts = {names[0]: (arr, len(arr) if arr.ndim else 0)}
        else:
            with np.load(path, allow_pickle=False) as npz:
                _missing(inputs, npz.files)
                parts = {k: _npz_rows(npz, k, need) for k in names}
                if GROUPS_KEY in npz.files and GROUPS_KEY not in names:
                    groups = _npz_rows(npz, GROUPS_KEY, need)
    except (
        OSError,
        ValueError,
        EOFError,
        SyntaxError,
        tokenize.TokenError,
        zipfile.BadZipFile,
        zlib.error,
    ) as e:
        # not a zip, truncated, corrupt (bad CRC, undecodable deflate stream, garbled .npy header), object
        # arrays...
        raise InputError(f"cannot read {path} as .{kind}: {type(e).__name__}: {e}") from None
    n = _check_counts({k: c for k, (_, c) in parts.items()})
    if groups is not None:
        values, count = groups
        groups = _checked_groups(values, count, n, path)[:need]
    return (
        {k: np.array(v[:need] if v.ndim else v) for k, (v, _) in parts.items()},
        f"{path} ({kind}, {n} samples)",
        groups,
    )


def memory_budget() -> int:
    """Bytes of calibration data one read may take: 3/4 of the memory available now (8 GiB if unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 * 3 // 4
    except OSError:
        pass
    return 8 * 2**30


def _npz_rows(npz, key: str, rows: int) -> tuple[np.ndarray, int]:
    """(the first ``rows`` samples of ``npz[key]``, its full sample count) without decompressing the rest.

    A C-ordered .npy inside the zip holds its samples in order, so the first ones are a prefix of its
    data: only they are kept (a 1656-row calibration file read for 512 samples holds a third of the
    memory). The rest of the member is still decompressed, in chunks, and discarded: the zip's CRC-32
    is checked only at the end of a member, and corrupt data must not calibrate silently.
    Other layouts (Fortran order, object or 0-d arrays) are read whole.
    """
    with npz.zip.open(f"{key}.npy") as f:
        version = np.lib.format.read_magic(f)
        read_header = (
            np.lib.format.read_array_header_2_0 if version >= (2, 0) else np.lib.format.read_array_header_1_0
        )
        shape, fortran, dtype = read_header(f)
        whole = fortran or dtype.hasobject or not shape
        per_row = int(np.prod(shape[1:], dtype=object)) if shape else 1
        count = int(np.prod(shape, dtype=object)) if whole else min(rows, shape[0]) * per_row
        budget = memory_budget()
        if count * dtype.itemsize > budget:
            raise InputError(
                f"calibration array '{key}' declares shape {_fmt(shape)} of {dtype}: "
                f"{count * dtype.itemsize / 2**30:,.1f} GiB to read, too large for the "
                f"{budget / 2**30:,.1f} GiB of memory available"
            )
        if whole:
            whole = npz[key]
            return whole, len(whole) if whole.ndim else 0
        count = min(rows, shape[0])
        size = count * int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        data = f.read(size)
        if len(data) != size:
            raise EOFError(f"'{key}' is truncated")
        while f.read(1 << 24):  # to the end of the member: zipfile verifies its CRC-32 there
            pass
        return np.frombuffer(data, dtype).reshape((count, *shape[1:])), shape[0]


def _checked_groups(values: np.ndarray, count: int, n: int, where: str) -> np.ndarray:
    """The ``groups`` values if they are one integer or string per sample (``count`` of them, ``n``
    samples)."""
    if values.ndim != 1 or count != n or values.dtype.kind not in "iuUS":
        raise InputError(
            f"calibration '{GROUPS_KEY}' in {where} must hold one integer or string per sample "
            f"({n}), got {values.dtype} of shape {_fmt((count, *values.shape[1:]) if values.ndim else ())}"
        )
    return np.array(values)


def _missing(inputs, keys) -> None:
    missing = [vi.name for vi in inputs if vi.name not in keys]
    if missing:
        raise InputError(
            f"calibration data has no input {', '.join(repr(m) for m in missing)} (found keys: "
            f"{', '.join(keys) or 'none'}; model inputs: {', '.join(vi.name for vi in inputs)})"
        )


def _same_counts(arrays: Mapping[str, np.ndarray]) -> int:
    return _check_counts({k: (len(v) if np.ndim(v) else 0) for k, v in arrays.items()})


def _check_counts(counts: Mapping[str, int]) -> int:
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"'{k}' {c}" for k, c in counts.items())
        raise InputError(f"calibration inputs have different sample counts: {detail}")
    return next(iter(counts.values()), 0)


def _fmt(dims) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _family(dt: np.dtype) -> str:
    return {"f": "float", "i": "int", "u": "int", "b": "bool"}.get(dt.kind, "other")


def _validate(arrays, inputs, warnings: list[str]) -> tuple[dict[str, np.ndarray], int | None]:
    """Names, rank, static dims (not axis 0), dtype; returns the cast arrays and the static batch."""
    _missing(inputs, list(arrays))
    out: dict[str, np.ndarray] = {}
    for vi in inputs:
        name, arr = vi.name, np.asarray(arrays[vi.name])
        dims = declared_shape(vi)
        if arr.ndim == 0:
            raise InputError(f"calibration input '{name}' is a scalar: it needs a leading sample axis")
        if vi.type.tensor_type.HasField("shape"):
            bad = len(dims) != arr.ndim or any(
                isinstance(d, int) and d > 0 and d != s for d, s in zip(dims[1:], arr.shape[1:], strict=True)
            )
            if bad:
                raise InputError(
                    f"calibration input '{name}': expected shape {_fmt(dims)}, got {_fmt(arr.shape)}"
                )
        out[name] = arr = _cast(name, arr, vi.type.tensor_type.elem_type)
        if arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
            bad = np.logical_not(np.isfinite(arr.reshape(len(arr), -1)))
            first = int(np.flatnonzero(bad.any(axis=1))[0])
            what = "NaN" if np.isnan(arr[first]).any() else "infinite"
            raise InputError(f"calibration input '{name}' holds {what} values (first in sample {first})")
    n = _same_counts(out)
    if n == 0:
        raise InputError("calibration data is empty (0 samples)")
    return out, static_batch(inputs)


def _cast(name: str, arr: np.ndarray, elem_type: int) -> np.ndarray:
    try:
        want = np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:  # undefined or exotic element type: feed as given
        return arr
    got = arr.dtype
    fw, fg = _family(want), _family(got)
    if got == want or fw == "other":
        return arr
    if fw == fg == "float":
        return arr.astype(want)
    if fw in ("int", "bool") and fg in ("int", "bool"):
        info = np.iinfo(want) if fw == fg == "int" else None
        if info is not None and arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise InputError(f"calibration input '{name}': {got} values out of range for {want}")
        return arr.astype(want)
    raise InputError(
        f"calibration input '{name}': expected dtype {want}, got {got} ({fg} data for a {fw} input)"
    )


def _image_files(root: str) -> list[str]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files += [
            os.path.join(dirpath, f)
            for f in filenames
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTS)
        ]
    return sorted(files, key=lambda p: os.path.relpath(p, root).replace(os.sep, "/"))


def _read_images(root, inputs, need, preprocess, input_size, warnings) -> tuple[dict[str, np.ndarray], str]:
    if len(inputs) != 1:
        names = ", ".join(vi.name for vi in inputs)
        raise InputError(f"image folders feed single-input models only; this model has inputs {names}")
    vi = inputs[0]
    if preprocess is None:
        preprocess = "imagenet"
        warnings.append(
            "image folder: --preprocess not given, using imagenet (mean/std); "
            "EfficientNet-Lite style models need --preprocess effnet"
        )
    if preprocess not in PREPROCESS:
        raise InputError(f"unknown --preprocess '{preprocess}' (choose from {', '.join(PREPROCESS)})")
    dims = declared_shape(vi)
    if len(dims) != 4:
        raise InputError(f"image folders need a 4-D image input; '{vi.name}' has shape {_fmt(dims)}")
    if dims[1] in (1, 3):
        layout, channels, hw = "NCHW", dims[1], dims[2:4]
    elif dims[3] in (1, 3):
        layout, channels, hw = "NHWC", dims[3], dims[1:3]
    else:
        raise InputError(
            f"cannot tell the channel axis of '{vi.name}' {_fmt(dims)}: expected 1 or 3 "
            "channels at dim 1 (NCHW) or dim 3 (NHWC)"
        )
    elem = vi.type.tensor_type.elem_type
    if elem not in FLOAT_TYPES:
        raise InputError(
            f"image folders feed float inputs only; '{vi.name}' is "
            f"{onnx.TensorProto.DataType.Name(elem).lower()}: pass a .npz instead"
        )
    if input_size is None:
        h, w = hw
        if not (isinstance(h, int) and h > 0 and h == w):
            raise InputError(f"input '{vi.name}' {_fmt(dims)} has no static square size: pass --input-size")
        input_size = h
    if input_size < 1:
        raise InputError(f"--input-size must be positive, got {input_size}")
    try:
        from PIL import Image
    except ImportError:
        raise InputError("reading image folders needs Pillow: pip install 'onnxprune[images]'") from None
    files = _image_files(root)
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_EXTS)}) in folder {root}")
    out = np.empty((min(need, len(files)), input_size, input_size, channels), np.float32)
    n, bad = 0, []
    for f in files:
        if n == len(out):
            break
        try:
            out[n] = _preprocess(Image, f, preprocess, input_size, channels)
            n += 1
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            bad.append(f"{os.path.relpath(f, root)} ({type(e).__name__})")
    if bad:
        more = " ..." if len(bad) > 5 else ""
        warnings.append(f"skipped {len(bad)} unreadable image(s): {', '.join(bad[:5])}{more}")
    if n == 0:
        raise InputError(f"none of the {len(files)} images in {root} could be decoded")
    arr = out[:n] if layout == "NHWC" else np.ascontiguousarray(out[:n].transpose(0, 3, 1, 2))
    desc = (
        f"{root} (image folder, {len(files)} images, {preprocess} preprocessing, "
        f"{input_size}x{input_size} {layout})"
    )
    return {vi.name: arr}, desc


def _preprocess(Image, path: str, preprocess: str, size: int, channels: int) -> np.ndarray:
    """One image file -> float32 HWC array (size x size x channels)."""
    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im.convert("RGBA"))
        im = im.convert("L" if channels == 1 else "RGB")
    resample = Image.Resampling.BICUBIC if preprocess == "effnet" else Image.Resampling.BILINEAR
    if preprocess == "raw":
        im = im.resize((size, size), resample)
    else:  # torchvision Resize(round(size / 0.875)) + CenterCrop(size)
        short = round(size / _CROP_FRACTION)
        w, h = im.size
        nw, nh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        im = im.resize((nw, nh), resample)
        top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
        im = im.crop((left, top, left + size, top + size))
    x = np.asarray(im, dtype=np.float32).reshape(size, size, channels)
    if preprocess == "imagenet":
        mean, std = (_MEAN, _STD) if channels == 3 else (_MEAN.mean(), _STD.mean())
        return (x / 255.0 - mean) / std
    if preprocess == "effnet":
        return (x - 127.0) / 128.0
    return x / 255.0


def _read_script(spec: str, path: str, func: str, need: int) -> tuple[dict[str, np.ndarray], str]:
    """Import ``path`` as a module (RUNS ITS CODE) and concatenate the feed dicts ``func()`` yields."""
    chunks: dict[str, list[np.ndarray]] = {}
    total = 0
    try:
        with user_function(path, func, "calibration script") as fn:
            total = _read_feeds(spec, func, fn, need, chunks)
    except InputError:
        raise
    except (Exception, SystemExit) as e:
        raise InputError(f"calibration script {spec} raised {type(e).__name__}: {e}") from e
    if not chunks:
        raise InputError(f"calibration script {spec} yielded no data")
    try:
        arrays = {k: np.concatenate(v)[:need] for k, v in chunks.items()}
    except ValueError as e:
        raise InputError(f"{spec}: batches do not concatenate: {e}") from None
    return arrays, f"{spec} (script, {min(total, need)} samples read)"


def _read_feeds(spec: str, func: str, fn, need: int, chunks: dict[str, list[np.ndarray]]) -> int:
    """Collect the feed dicts ``fn()`` yields into ``chunks`` (per input, its arrays) until ``need`` samples;
    returns the samples read."""
    total = 0
    result = fn()
    if isinstance(result, Mapping):
        result = [result]
    try:
        it = iter(result)
    except TypeError:
        raise InputError(
            f"{spec}: {func}() returned {type(result).__name__}, expected an iterable of feed dicts"
        ) from None
    for i, feed in enumerate(it):
        if not isinstance(feed, Mapping):
            raise InputError(f"{spec}: item {i} is {type(feed).__name__}, expected a dict name -> array")
        if chunks and set(feed) != set(chunks):
            raise InputError(f"{spec}: item {i} has keys {sorted(feed)}, item 0 had {sorted(chunks)}")
        batch = {str(k): np.asarray(v) for k, v in feed.items()}
        if not batch:
            raise InputError(f"{spec}: item {i} is an empty dict, expected one array per model input")
        if any(v.ndim == 0 for v in batch.values()):
            raise InputError(f"{spec}: item {i} has a scalar value; arrays need a leading batch axis")
        count = _same_counts(batch)
        if count == 0:
            raise InputError(f"{spec}: item {i} holds no samples (a batch of 0)")
        total += count
        for k, v in batch.items():
            chunks.setdefault(k, []).append(v)
        if total >= need:
            break
    if hasattr(it, "close"):
        it.close()
    return total
