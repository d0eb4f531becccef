"""Real, unlabelled photos for calibrating and evaluating the ImageNet models of the zoo.

Sources (all installed from package registries, nothing is downloaded at build time):

* scikit-image's bundled ``skimage/data`` images (only those shipped inside the wheel);
* Debian ``darknet``: ``/usr/share/darknet/data/*.jpg``;
* Debian ``opencv-doc``: sample images under ``/usr/share/doc/opencv-doc/examples``.

Only real photographs are used: logos, renders, drawings, paintings, synthetic test patterns,
disparity maps and tiny crops are left out by the explicit lists below. Near-duplicates (stereo
pairs, the two frames of a flow pair, ``graf1``/``graf3``...) share a *group*, and a group never
straddles the calibration/evaluation split.

Split: groups are ordered by the SHA-256 of their name and each is given, in that order, to the
side that has fewer photos so far (ties go to ``eval``): deterministic and balanced.

Views: every photo yields :data:`N_VIEWS` fixed 224x224 views (no randomness):
``center`` (the standard eval transform: resize shorter side to 256, center crop 224),
the four 224 corner crops of the same 256-resized image (``tl``, ``tr``, ``bl``, ``br``),
``zoom`` (shorter side to 320, center crop 224) and the horizontal flip of each of those six.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SKIMAGE_PHOTOS = [
    "astronaut.png", "brick.png", "camera.png", "chelsea.png", "clock_motion.png", "coffee.png",
    "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png",
    "motorcycle_left.png", "motorcycle_right.png", "page.png", "retina.jpg", "rocket.jpg", "text.png",
]
DARKNET_PHOTOS = ["dog.jpg", "eagle.jpg", "giraffe.jpg", "horses.jpg", "kite.jpg", "person.jpg"]
OPENCV_PHOTOS = [
    "data/aero1.jpg", "data/aero3.jpg", "data/aloeL.jpg", "data/aloeR.jpg", "data/apple.jpg",
    "data/baboon.jpg", "data/basketball1.png", "data/basketball2.png", "data/board.jpg",
    "data/box.png", "data/box_in_scene.png", "data/building.jpg", "data/butterfly.jpg",
    "data/chicky_512.png", "data/ela_original.jpg", "data/fruits.jpg", "data/graf1.png",
    "data/graf3.png", "data/home.jpg", "data/left.jpg", "data/right.jpg", "data/left01.jpg",
    "data/right01.jpg", "data/leuvenA.jpg", "data/leuvenB.jpg", "data/licenseplate_motion.jpg",
    "data/messi5.jpg", "data/orange.jpg", "data/pca_test1.jpg", "data/rubberwhale1.png",
    "data/rubberwhale2.png", "data/squirrel_cls.jpg", "data/stuff.jpg", "data/sudoku.png",
    "data/text_defocus.jpg", "data/text_motion.jpg",
    "text/scenetext01.jpg", "text/scenetext02.jpg", "text/scenetext03.jpg", "text/scenetext04.jpg",
    "text/scenetext05.jpg", "text/scenetext06.jpg",
    "text/scenetext_segmented_word01.jpg", "text/scenetext_segmented_word02.jpg",
    "text/scenetext_segmented_word03.jpg", "text/scenetext_segmented_word04.jpg",
    "text/scenetext_segmented_word05.jpg",
    "hfs/data/000.jpg", "hfs/data/001.jpg", "hfs/data/002.jpg", "reg/home.png",
]
# photo id -> group name, for near-duplicate sets that must stay on one side of the split
GROUPS = {
    "skimage-motorcycle_left": "motorcycle", "skimage-motorcycle_right": "motorcycle",
    "opencv-aero1": "aero", "opencv-aero3": "aero",
    "opencv-aloel": "aloe", "opencv-aloer": "aloe",
    "opencv-basketball1": "basketball", "opencv-basketball2": "basketball",
    "opencv-box": "box", "opencv-box_in_scene": "box",
    "opencv-graf1": "graf", "opencv-graf3": "graf",
    "opencv-left": "stereo_books", "opencv-right": "stereo_books",
    "opencv-left01": "chessboard", "opencv-right01": "chessboard",
    "opencv-leuvena": "leuven", "opencv-leuvenb": "leuven",
    "opencv-rubberwhale1": "rubberwhale", "opencv-rubberwhale2": "rubberwhale",
    "opencv-text_defocus": "text_blur", "opencv-text_motion": "text_blur",
}

DARKNET_DIR = Path("/usr/share/darknet/data")
OPENCV_DIR = Path("/usr/share/doc/opencv-doc/examples")
VIEW_NAMES = ["center", "tl", "tr", "bl", "br", "zoom"]
N_VIEWS = 2 * len(VIEW_NAMES)
CROP = 224

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


@dataclass(frozen=True)
class Photo:
    id: str          # e.g. "skimage-chelsea" (unique, lower case)
    source: str      # skimage | darknet | opencv
    path: Path
    group: str

    @property
    def file_name(self) -> str:
        return self.id + self.path.suffix.lower()


def skimage_data_dir() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-image is not installed (pip install scikit-image)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def collect() -> list[Photo]:
    """All photos, in a fixed order. Missing sources are an error (with the install hint)."""
    sources = [
        ("skimage", skimage_data_dir(), SKIMAGE_PHOTOS, "pip install scikit-image"),
        ("darknet", DARKNET_DIR, DARKNET_PHOTOS, "apt-get install darknet"),
        ("opencv", OPENCV_DIR, OPENCV_PHOTOS, "apt-get install opencv-doc"),
    ]
    photos, missing = [], []
    for source, root, names, hint in sources:
        for name in names:
            p = root / name
            if not p.is_file():
                missing.append(f"{p} ({hint})")
                continue
            pid = f"{source}-{Path(name).stem.lower()}"
            if source == "opencv" and not name.startswith("data/"):
                pid = f"{source}-{name.split('/')[0]}-{Path(name).stem.lower()}"
            photos.append(Photo(pid, source, p, GROUPS.get(pid, pid)))
    if missing:
        raise SystemExit("missing photo files:\n  " + "\n  ".join(missing))
    ids = [p.id for p in photos]
    assert len(set(ids)) == len(ids), "duplicate photo ids"
    return photos


def split(photos: list[Photo]) -> tuple[list[Photo], list[Photo]]:
    """Deterministic, group-disjoint, balanced calib/eval split (see module doc)."""
    groups: dict[str, list[Photo]] = {}
    for p in photos:
        groups.setdefault(p.group, []).append(p)
    order = sorted(groups, key=lambda g: hashlib.sha256(g.encode()).hexdigest())
    calib: list[Photo] = []
    ev: list[Photo] = []
    for g in order:
        (calib if len(calib) < len(ev) else ev).extend(groups[g])
    key = lambda p: p.id  # noqa: E731
    return sorted(calib, key=key), sorted(ev, key=key)


def load_rgb(path: Path):
    from PIL import Image
    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im)
        return im.convert("RGB")


def _resize_shorter(img, size: int, resample):
    """torchvision ``Resize(size)`` on a PIL image: shorter side -> size, long side truncated."""
    w, h = img.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    return img.resize((nw, nh), resample)


def _center_box(w: int, h: int, c: int = CROP) -> tuple[int, int, int, int]:
    top, left = int(round((h - c) / 2.0)), int(round((w - c) / 2.0))
    return left, top, left + c, top + c


def views(img, resample) -> list[tuple[str, object]]:
    """The :data:`N_VIEWS` deterministic 224x224 views of one RGB PIL image."""
    from PIL import Image
    r = _resize_shorter(img, 256, resample)
    w, h = r.size
    c = CROP
    boxes = {
        "center": _center_box(w, h),
        "tl": (0, 0, c, c), "tr": (w - c, 0, w, c),
        "bl": (0, h - c, c, h), "br": (w - c, h - c, w, h),
    }
    out = [(name, r.crop(box)) for name, box in boxes.items()]
    z = _resize_shorter(img, 320, resample)
    out.append(("zoom", z.crop(_center_box(*z.size))))
    out += [(name + "_flip", im.transpose(Image.FLIP_LEFT_RIGHT)) for name, im in list(out)]
    assert [n for n, _ in out][: len(VIEW_NAMES)] == VIEW_NAMES and len(out) == N_VIEWS
    return out


def to_tensor(img, preprocess: str) -> np.ndarray:
    """HWC uint8 RGB image -> CHW float32 normalized for ``imagenet`` or ``effnet``."""
    x = np.asarray(img, dtype=np.float32)
    if preprocess == "imagenet":       # torchvision: ToTensor + Normalize(mean, std)
        x = (x / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    elif preprocess == "effnet":       # EfficientNet-Lite (TF): (x - 127) / 128
        x = (x - 127.0) / 128.0
    else:
        raise ValueError(preprocess)
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def resample_for(preprocess: str):
    from PIL import Image
    # torchvision's eval transform resizes bilinearly; the TF EfficientNet-Lite eval pipeline
    # resizes bicubically.
    return Image.BICUBIC if preprocess == "effnet" else Image.BILINEAR


def build_array(photos: list[Photo], preprocess: str) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Stack all views of all photos: float32 [len(photos)*N_VIEWS, 3, 224, 224] + (id, view) rows."""
    arr = np.empty((len(photos) * N_VIEWS, 3, CROP, CROP), np.float32)
    rows: list[tuple[str, str]] = []
    resample = resample_for(preprocess)
    i = 0
    for p in photos:
        for vname, im in views(load_rgb(p.path), resample):
            arr[i] = to_tensor(im, preprocess)
            rows.append((p.id, vname))
            i += 1
    return arr, rows


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
