"""Generalization inside the calibration domain: calibrate on most calibration photos, score on the rest.

    python -m benchmarks.unseen_photos [--models effnet mnv2] [--targets 1.5] [--photos 26 51 0]
        [--configs obs+dp+reconstruct] [--folds 1] [--extra "--search-evals 32"]

The zoo's calibration files hold 12 views of each of 391 photos and a ``groups`` key (the photo of each
row): 138 earlier photos (textures, text, microscopy, street scenes) first, then 253 object-centred gcompris
photos. Every 4th photo (``--folds``: which of the four offsets, photo index % 4; a near-duplicate group —
stereo or flow pair — goes with its first photo) is held back; compress calibrates on the first 256 rows
(view-major) of the others (``--photos N``: only the first N of them; 0 = all 293; ``--calib-rows``: other
than 256), exactly as a user would, through the CLI. The pruned model is then scored against the dense one on

* **unseen photos**: all 12 views of the held-back photos, split into the held-back earlier photos (34–35
  photos, 408–420 crops) and the held-back gcompris photos (62–64 photos);
* **seen photos, other views**: 256 views of the calibration photos that compress did not read.

A model that generalizes scores alike on both; the gap between them is what the compressor memorized of
its calibration photos. Configs are those of ``benchmarks.compress_zoo`` plus the sparsity ones below
(run them with ``--targets 1``: sparsity alone, no channel pruning).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

from benchmarks.common import MODELS, compress_cmd, machine, quality_text, run_batched
from benchmarks.compress_zoo import CONFIGS

SPARSITY_CONFIGS = {
    "sparsegpt 2:4": ["--sparsity", "2:4"],
    "magnitude 2:4": ["--sparsity", "2:4", "--criterion", "magnitude"],
    "sparsegpt 0.5": ["--sparsity", "0.5"],
    "magnitude 0.5": ["--sparsity", "0.5", "--criterion", "magnitude"],
}
ALL_CONFIGS = {**CONFIGS, **SPARSITY_CONFIGS}
CALIB_ROWS = 256
HOLD_EVERY = 4  # photos with id % 4 == fold are held back
EARLIER_PHOTOS = 138  # the calibration photos before the gcompris ones


def group_anchors(calib: Path, n_photos: int) -> np.ndarray:
    """For each photo index of a zoo calibration file, the index of the first photo of its near-duplicate
    group (stereo pairs, flow pairs, ...: ``group`` in the zoo's manifest), so that a fold holds back
    whole groups: a held-back photo's twin must not calibrate."""
    manifest = calib.parent / "manifest.json"
    if not manifest.exists():
        sys.exit(f"{manifest} not found: rebuild the zoo (python models/build_zoo.py)")
    m = json.loads(manifest.read_text())
    ids = [v.split(":")[0] for v in m["datasets"][calib.stem]["views"][:n_photos]]
    group = {Path(e["file"]).stem: e["group"] for e in m["photos"]["calib"]}
    first: dict[str, int] = {}
    return np.array([first.setdefault(group[pid], i) for i, pid in enumerate(ids)])


def split_rows(
    groups: np.ndarray,
    photos: int,
    fold: int = 1,
    calib_rows: int = CALIB_ROWS,
    anchors: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(calibration rows, seen-photo rows compress does not read, unseen-photo rows) of a view-major file.
    A photo is held back when its group's first photo (``anchors``; default: itself) has index % 4 == fold."""
    anchors = np.arange(groups.max() + 1) if anchors is None else anchors
    held = anchors % HOLD_EVERY == fold
    unseen = np.flatnonzero(held[groups])
    kept_photos = [g for g in dict.fromkeys(groups.tolist()) if not held[g]]
    if photos:
        kept_photos = kept_photos[:photos]
    seen = np.flatnonzero(np.isin(groups, kept_photos))
    return seen[:calib_rows], seen[calib_rows : calib_rows + CALIB_ROWS], unseen


def score(key: str, pruned: onnx.ModelProto, x: np.ndarray, ref: np.ndarray) -> str:
    """Quality of ``pruned`` on ``x`` against the dense logits ``ref`` (run once per split, not per
    config)."""
    return quality_text(key, run_batched(pruned, {"input": x}, 64)[0], ref, None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=["effnet", "mnv2"], choices=["effnet", "mnv2"])
    ap.add_argument("--targets", nargs="+", type=float, default=[1.5])
    ap.add_argument("--photos", nargs="+", type=int, default=[0], help="calibration photos used (0: all 293)")
    ap.add_argument("--configs", nargs="+", default=["obs+dp+reconstruct"], choices=list(ALL_CONFIGS))
    ap.add_argument(
        "--extra", default="", help="more compress options for every config, e.g. '--search-evals 32'"
    )
    ap.add_argument(
        "--calib-rows",
        type=int,
        default=CALIB_ROWS,
        help="calibration rows given to compress (--calib-samples); the next 256 are the seen views",
    )
    ap.add_argument(
        "--folds",
        nargs="+",
        type=int,
        default=[1],
        choices=range(HOLD_EVERY),
        help="held-back photos: (index of the first photo of their group) %% 4 == fold",
    )
    args = ap.parse_args()
    print(f"Machine: {machine()}\n")
    print(
        "| model | target | config | fold | calibration photos | unseen photos, first 138 | "
        "unseen photos, gcompris | seen photos, other views |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for key in args.models:
        model, calib, _ = MODELS[key]
        if not model.exists():
            print(f"| {key} | — | — | — | — | not built (python models/build_zoo.py) | |")
            continue
        with np.load(calib) as z:
            if "groups" not in z.files:
                sys.exit(
                    f"{calib} has no 'groups' key: rebuild it (python models/build_zoo.py --only calib_sets)"
                )
            x, groups = z["input"], z["groups"]
        dense = onnx.load(str(model))
        anchors = group_anchors(calib, int(groups.max()) + 1)
        for fold, photos in ((f, p) for f in args.folds for p in args.photos):
            cal, seen, unseen = split_rows(groups, photos, fold, args.calib_rows, anchors)
            n_photos = len(np.unique(groups[cal]))
            parts = [unseen[groups[unseen] < EARLIER_PHOTOS], unseen[groups[unseen] >= EARLIER_PHOTOS], seen]
            refs = [run_batched(dense, {"input": x[rows]}, 64)[0] if len(rows) else None for rows in parts]
            with tempfile.TemporaryDirectory() as tmp:
                data = Path(tmp) / "calib.npz"
                np.savez(
                    data, input=x[np.concatenate([cal, seen])], groups=groups[np.concatenate([cal, seen])]
                )
                for target in args.targets:
                    for config in args.configs:
                        name = f"{config} {args.extra}".strip()
                        cmd = compress_cmd(
                            str(model),
                            "--calib",
                            str(data),
                            "--target",
                            f"{target}x",
                            "-o",
                            str(Path(tmp) / "out"),
                            "--json",
                            "--no-int8",
                            "--calib-samples",
                            str(len(cal)),
                            *ALL_CONFIGS[config],
                            *shlex.split(args.extra),
                        )
                        proc = subprocess.run(cmd, capture_output=True, text=True)
                        if proc.returncode:
                            print(
                                f"| {key} | {target}x | {name} | {fold} | {n_photos} | failed: "
                                f"{proc.stderr.strip()[-200:]} | | |"
                            )
                            continue
                        pruned = onnx.load(json.loads(proc.stdout)["output"])
                        cells = [
                            f"{score(key, pruned, x[rows], ref)} ({len(rows)} crops)" if len(rows) else "—"
                            for rows, ref in zip(parts, refs, strict=True)
                        ]
                        print(
                            f"| {key} | {target}x | {name} | {fold} | {n_photos} | {' | '.join(cells)} |",
                            flush=True,
                        )


if __name__ == "__main__":
    main()
