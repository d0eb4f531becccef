"""A real segmentation-style model for the zoo: PP-OCRv4's text detector (a DB net exported from Paddle, 1.17M
parameters, a text probability map [N, 1, H, W]) from the ``rapidocr-onnxruntime`` wheel, with real text.

    python -m models.text_zoo [--out models/cache] [--wheel PATH]

Data, 320 × 320 crops (BGR, (x / 255 − 0.5) / 0.5: rapidocr's preprocessing):

* pages: paragraphs of Debian's license texts (``/usr/share/common-licenses``) rendered with DejaVu fonts at
  14–30 px, dark ink on light paper, lines wrapped at random widths;
* scene text: crops of opencv-doc's scene-text photos (``examples/text``, ``examples/data/text_*``).

``text_calib.npz`` (128: 96 pages of GPL-3, LGPL-2.1, Apache-2.0, GFDL-1.3 in DejaVu Sans and Serif, 32 crops
of scenetext01–03 and text_defocus) and ``text_eval.npz`` (64: 48 pages of BSD, MPL-2.0, Artistic, CC0-1.0 in
DejaVu Sans Mono and Sans Condensed, 16 crops of scenetext04–06 and text_motion): no text, font or photo in
both. Deterministic (seeded). The wheel is fetched once with ``pip download --no-deps
rapidocr-onnxruntime==1.4.4 -d models/cache/wheels``.
"""

from __future__ import annotations

import argparse
import textwrap
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WHEEL = "rapidocr_onnxruntime-1.4.4-py3-none-any.whl"
MEMBER = "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"
SIDE = 320
LICENSES = Path("/usr/share/common-licenses")
FONTS = Path("/usr/share/fonts/truetype/dejavu")
PHOTOS = Path("/usr/share/doc/opencv-doc/examples")
SPLIT = {
    "calib": {
        "texts": ["GPL-3", "LGPL-2.1", "Apache-2.0", "GFDL-1.3"],
        "fonts": ["DejaVuSans.ttf", "DejaVuSerif.ttf"],
        "photos": [
            "text/scenetext01.jpg",
            "text/scenetext02.jpg",
            "text/scenetext03.jpg",
            "data/text_defocus.jpg",
        ],
        "pages": 96,
        "crops": 8,
        "seed": 1,
    },
    "eval": {
        "texts": ["BSD", "MPL-2.0", "Artistic", "CC0-1.0"],
        "fonts": ["DejaVuSansMono.ttf", "DejaVuSansCondensed.ttf"],
        "photos": [
            "text/scenetext04.jpg",
            "text/scenetext05.jpg",
            "text/scenetext06.jpg",
            "data/text_motion.jpg",
        ],
        "pages": 48,
        "crops": 4,
        "seed": 2,
    },
}


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 RGB → [3, H, W] float32 as rapidocr feeds its detector: BGR, (x / 255 − 0.5) / 0.5."""
    return ((rgb[:, :, ::-1].astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)


def render_page(words: list[str], font_path: Path, rng: np.random.Generator):
    """A SIDE × SIDE crop of a page: ``words`` wrapped at a random width, one random font size and ink."""
    from PIL import Image, ImageDraw, ImageFont

    size = int(rng.integers(14, 31))
    font = ImageFont.truetype(str(font_path), size)
    paper = tuple(int(v) for v in rng.integers(215, 256, 3))
    ink = tuple(int(v) for v in rng.integers(0, 70, 3))
    image = Image.new("RGB", (SIDE, SIDE), paper)
    draw = ImageDraw.Draw(image)
    y, x0 = int(rng.integers(-size, size)), int(rng.integers(4, 40))
    for line in textwrap.wrap(" ".join(words), width=int(rng.integers(18, 60))):
        draw.text((x0, y), line, font=font, fill=ink)
        y += int(size * rng.uniform(1.2, 1.8))
        if y > SIDE:
            break
    return np.asarray(image)


def page_crops(texts: list[str], fonts: list[str], count: int, rng: np.random.Generator) -> list[np.ndarray]:
    words = {t: (LICENSES / t).read_text(errors="replace").split() for t in texts}
    out = []
    for i in range(count):
        text = words[texts[i % len(texts)]]
        start = int(rng.integers(0, max(1, len(text) - 400)))
        out.append(render_page(text[start : start + 400], FONTS / fonts[(i // len(texts)) % len(fonts)], rng))
    return out


def photo_crops(paths: list[str], per_photo: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``per_photo`` random SIDE × SIDE crops of each photo (its shorter side scaled to 1.5 × SIDE first)."""
    from PIL import Image

    out = []
    for p in paths:
        image = Image.open(PHOTOS / p).convert("RGB")
        scale = 1.5 * SIDE / min(image.size)
        image = image.resize(
            (max(SIDE, round(image.width * scale)), max(SIDE, round(image.height * scale))), Image.BILINEAR
        )
        a = np.asarray(image)
        for _ in range(per_photo):
            y, x = int(rng.integers(0, a.shape[0] - SIDE + 1)), int(rng.integers(0, a.shape[1] - SIDE + 1))
            out.append(a[y : y + SIDE, x : x + SIDE])
    return out


def build(out: Path, wheel: Path) -> None:
    """Write ``text_det.onnx``, ``text_calib.npz`` and ``text_eval.npz`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        (out / "text_det.onnx").write_bytes(z.read(MEMBER))
    for name, spec in SPLIT.items():
        rng = np.random.default_rng(spec["seed"])
        images = page_crops(spec["texts"], spec["fonts"], spec["pages"], rng)
        images += photo_crops(spec["photos"], spec["crops"], rng)
        np.savez_compressed(out / f"text_{name}.npz", x=np.stack([preprocess(a) for a in images]))
        print(f"text_{name}.npz: {len(images)} crops of {SIDE} × {SIDE}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=HERE / "cache")
    ap.add_argument("--wheel", type=Path, default=HERE / "cache" / "wheels" / WHEEL)
    args = ap.parse_args()
    build(args.out, args.wheel)


if __name__ == "__main__":
    main()
