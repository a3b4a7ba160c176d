"""Copy edits used to make mini-DISC queries and, as an augmentation, training views.

`make_query` applies 1-3 edits drawn by `sample_edits` from `EDITS` (AugLy transforms plus meme and
perspective equivalents); the helpers that pick fonts, emoji, colours and words are shared with the
mini-DISC builder (`isc_research.data.mini_disc`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from isc_research.assets import (
    augly_assets,
    colour,
    emoji_files,
    glyph_fonts,
    latin_fonts,
    load_font,
    pick,
    printable_glyphs,
    words,
)
from isc_research.images import fit_long_side

__all__ = [
    "COMPOSITING_EDITS",
    "EDITS",
    "EDIT_NAMES",
    "EditContext",
    "GEOMETRIC_EDITS",
    "PHOTOMETRIC_EDITS",
    "make_query",
    "sample_edits",
]

Box = tuple[int, int, int, int]

# ------------------------------------------------------------------------------------------- edits


def _default_other(j: int) -> Image.Image:
    """A plain gradient image, used when an edit needs another image and no generator is given."""
    y, x = np.mgrid[0:192, 0:256]
    a = np.stack([x, y, (x + y + 60 * j) // 2], axis=-1) % 256
    return Image.fromarray(a.astype(np.uint8), "RGB")


@dataclass
class EditContext:
    """State shared by the edits of one query: a source of other (non-reference) images and the box
    (query pixels) of the pasted source content, set by compositing edits."""

    other: Callable[[int], Image.Image] = _default_other
    box: Box | None = None


def _F():
    import augly.image.functional as F  # imported lazily: slow import, only the edits need it

    return F


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _edit_crop(img, rng, ctx):
    fw, fh = _u(rng, 0.4, 0.9), _u(rng, 0.4, 0.9)
    x1, y1 = _u(rng, 0, 1 - fw), _u(rng, 0, 1 - fh)
    return _F().crop(img, x1=x1, y1=y1, x2=x1 + fw, y2=y1 + fh)


def _edit_rotate(img, rng, ctx):
    if rng.random() < 0.35:
        return img.transpose(pick(rng, (Image.ROTATE_90, Image.ROTATE_180, Image.ROTATE_270)))
    out = _F().rotate(img, degrees=_u(rng, 5, 40) * pick(rng, (-1.0, 1.0)))
    return out if min(out.size) >= 8 else img.transpose(Image.ROTATE_90)


def _edit_hflip(img, rng, ctx):
    return _F().hflip(img)


def _edit_vflip(img, rng, ctx):
    return _F().vflip(img)


def _edit_perspective(img, rng, ctx):
    """Random corner displacement (up to 20 % of each side), canvas grown to hold the warped image."""
    import cv2

    if cv2.getNumThreads() != 1:  # no OpenCV thread pool: one made before a fork (DataLoader workers) can hang
        cv2.setNumThreads(1)  # the children; set once, before the first parallel call

    w, h = img.size
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    dst = src + rng.uniform(-1, 1, (4, 2)).astype(np.float32) * np.float32(_u(rng, 0.05, 0.2)) * [w, h]
    dst -= dst.min(axis=0)
    out_w, out_h = (int(math.ceil(v)) for v in dst.max(axis=0))
    m = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    fill = colour(rng) if rng.random() < 0.3 else (0, 0, 0)
    warped = cv2.warpPerspective(
        np.asarray(img),
        m,
        (max(out_w, 8), max(out_h, 8)),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=fill,
    )
    return Image.fromarray(warped, "RGB")


def _edit_pad(img, rng, ctx):
    fill = pick(rng, ((0, 0, 0), (255, 255, 255), colour(rng)))
    return _F().pad(img, w_factor=_u(rng, 0.05, 0.35), h_factor=_u(rng, 0.05, 0.35), color=fill)


def _edit_meme(img, rng, ctx):
    """Meme-style caption band above the image (AugLy's meme_format crashes on Pillow >= 10)."""
    w, h = img.size
    band = max(12, round(h * _u(rng, 0.18, 0.35)))
    bg = (255, 255, 255) if rng.random() < 0.7 else colour(rng)
    fg = (0, 0, 0) if sum(bg) > 380 else (255, 255, 255)
    text = words(rng) if rng.random() < 0.6 else f"{words(rng, 2)}\n{words(rng, 2)}"
    text = text.upper() if rng.random() < 0.5 else text
    fonts = [f for f in latin_fonts() if "Impact" in f or "Bold" in f] or list(latin_fonts())
    font_path = pick(rng, fonts) if fonts else None
    out = Image.new("RGB", (w, h + band), bg)
    out.paste(img, (0, band))
    draw = ImageDraw.Draw(out)
    size = max(6, round(band * 0.8 / (text.count("\n") + 1)))
    while True:
        font = load_font(font_path, size)
        x0, y0, x1, y1 = draw.multiline_textbbox((0, 0), text, font=font, align="center")
        if (x1 - x0 <= 0.94 * w and y1 - y0 <= 0.85 * band) or size <= 6:
            break
        size = max(6, int(size * 0.85))
    draw.multiline_text(
        ((w - (x1 - x0)) / 2 - x0, (band - (y1 - y0)) / 2 - y0), text, font=font, fill=fg, align="center"
    )
    return out


def _edit_overlay_onto_background(img, rng, ctx):
    """Paste the image, scaled to 30-80 % of a background's size, onto another image."""
    bg = ctx.other(0)
    (bw, bh), (w, h) = bg.size, img.size
    frac = _u(rng, 0.3, 0.8) * min(1.0, (bw / w) / (bh / h))  # keep the pasted width inside too
    nh = max(1, int(bh * frac))  # AugLy's own arithmetic, so that the box is exact
    nw = max(1, int(w * nh / h))
    x_pos, y_pos = _u(rng, 0, max(0.0, 1 - nw / bw)), _u(rng, 0, max(0.0, 1 - nh / bh))
    out = _F().overlay_onto_background_image(img, background_image=bg, overlay_size=frac, x_pos=x_pos, y_pos=y_pos)
    x, y = int(bw * x_pos), int(bh * y_pos)
    ctx.box = (x, y, min(bw, x + nw), min(bh, y + nh))
    return out.convert("RGB")


def _edit_screenshot(img, rng, ctx):
    """AugLy overlay_onto_screenshot (web or mobile template); the box follows AugLy's arithmetic."""
    tdir = augly_assets() / "screenshot_templates"
    template = tdir / pick(rng, ("web.png", "mobile.png"))
    bboxes = tdir / "bboxes.json"
    bx0, by0, bx1, by1 = json.loads(bboxes.read_text())[template.name]
    bw, bh = bx1 - bx0, by1 - by0
    factor = min(bw / img.width, bh / img.height)
    sw, sh = int(img.width * factor), int(img.height * factor)
    if min(sw, sh) < 1:  # AugLy cannot scale a sliver this far; pad it first
        img = ImageOps.pad(img, (max(img.size),) * 2, color=(0, 0, 0))
        factor = min(bw / img.width, bh / img.height)
        sw, sh = int(img.width * factor), int(img.height * factor)
    out = _F().overlay_onto_screenshot(img, template_filepath=str(template), template_bboxes_filepath=str(bboxes))
    dx, dy = max(0, (bw - sw) // 2), max(0, (bh - sh) // 2)
    ctx.box = (bx0 + dx, by0 + dy, bx0 + dx + sw, by0 + dy + sh)
    return out.convert("RGB")


def _edit_overlay_text(img, rng, ctx):
    """AugLy overlay_text: 1-2 lines of random glyphs of a random AugLy font."""
    font_file = pick(rng, glyph_fonts())
    glyphs = printable_glyphs(font_file)
    lines = [
        [int(glyphs[int(i)]) for i in rng.integers(0, len(glyphs), int(rng.integers(3, 11)))]
        for _ in range(int(rng.integers(1, 3)))
    ]
    return (
        _F()
        .overlay_text(
            img,
            text=lines,
            font_file=font_file,
            font_size=_u(rng, 0.08, 0.22),
            opacity=_u(rng, 0.6, 1.0),
            color=colour(rng),
            x_pos=_u(rng, 0, 0.5),
            y_pos=_u(rng, 0, 0.8),
        )
        .convert("RGB")
    )


def _edit_overlay_emoji(img, rng, ctx):
    return (
        _F()
        .overlay_emoji(
            img,
            emoji_path=pick(rng, emoji_files()),
            opacity=_u(rng, 0.7, 1.0),
            emoji_size=_u(rng, 0.15, 0.45),
            x_pos=_u(rng, 0, 0.75),
            y_pos=_u(rng, 0, 0.75),
        )
        .convert("RGB")
    )


def _edit_overlay_image(img, rng, ctx):
    return (
        _F()
        .overlay_image(
            img,
            overlay=ctx.other(1),
            opacity=_u(rng, 0.5, 1.0),
            overlay_size=_u(rng, 0.2, 0.5),
            x_pos=_u(rng, 0, 0.7),
            y_pos=_u(rng, 0, 0.7),
        )
        .convert("RGB")
    )


def _edit_blur(img, rng, ctx):
    return _F().blur(img, radius=_u(rng, 0.8, 3.5) * max(1.0, min(img.size) / 256))


def _edit_jpeg(img, rng, ctx):
    return _F().encoding_quality(img, quality=int(rng.integers(5, 31)))


def _edit_grayscale(img, rng, ctx):
    return _F().grayscale(img).convert("RGB")


def _edit_pixelize(img, rng, ctx):
    return _F().pixelization(img, ratio=_u(rng, 0.12, 0.45))


def _edit_color_jitter(img, rng, ctx):
    return _F().color_jitter(
        img, brightness_factor=_u(rng, 0.6, 1.5), contrast_factor=_u(rng, 0.6, 1.5), saturation_factor=_u(rng, 0.0, 2.0)
    )


# the edit families, in application order: geometric, then compositing, then photometric (JPEG last)
GEOMETRIC_EDITS = ("crop", "rotate", "hflip", "vflip", "perspective", "pad", "meme")
COMPOSITING_EDITS = ("overlay_onto_background", "screenshot")
PHOTOMETRIC_EDITS = (
    "overlay_text",
    "overlay_emoji",
    "overlay_image",
    "blur",
    "grayscale",
    "pixelize",
    "color_jitter",
    "jpeg",
)
EDIT_NAMES: tuple[str, ...] = GEOMETRIC_EDITS + COMPOSITING_EDITS + PHOTOMETRIC_EDITS
_WEIGHTS = {
    "crop": 2.0,
    "rotate": 1.0,
    "hflip": 1.0,
    "vflip": 0.5,
    "perspective": 1.0,
    "pad": 1.0,
    "meme": 0.7,
    "overlay_onto_background": 1.6,
    "screenshot": 0.6,
    "overlay_text": 1.0,
    "overlay_emoji": 1.0,
    "overlay_image": 1.0,
    "blur": 1.0,
    "grayscale": 0.8,
    "pixelize": 0.6,
    "color_jitter": 1.4,
    "jpeg": 1.0,
}
_MIN_EDIT_SIDE = 32


def _robust(fn: Callable) -> Callable[[Image.Image, np.random.Generator, EditContext], Image.Image]:
    """Make an edit accept any PIL image (any mode, slivers, tiny) and always return RGB."""

    def edit(img: Image.Image, rng: np.random.Generator, ctx: EditContext | None = None) -> Image.Image:
        img = img if img.mode == "RGB" else img.convert("RGB")
        if min(img.size) < _MIN_EDIT_SIDE:
            img = img.resize((max(img.width, _MIN_EDIT_SIDE), max(img.height, _MIN_EDIT_SIDE)), Image.BILINEAR)
        out = fn(img, rng, ctx if ctx is not None else EditContext())
        return out if out.mode == "RGB" else out.convert("RGB")

    edit.__name__ = edit.__qualname__ = fn.__name__.removeprefix("_edit_")
    edit.__doc__ = fn.__doc__
    return edit


EDITS: dict[str, Callable[[Image.Image, np.random.Generator, EditContext], Image.Image]] = {
    name: _robust(globals()[f"_edit_{name}"]) for name in EDIT_NAMES
}


def sample_edits(rng: np.random.Generator) -> list[str]:
    """1-3 distinct edit names in application order: geometric, then at most one compositing edit
    (so the recorded box stays exact), then photometric ones with the JPEG re-encode last."""
    names = list(EDIT_NAMES)
    p = np.array([_WEIGHTS[n] for n in names])
    k = int(rng.choice([1, 2, 3], p=[0.35, 0.4, 0.25]))
    drawn = [str(n) for n in rng.choice(names, size=len(names), replace=False, p=p / p.sum())]
    chosen = []
    for n in drawn:
        if n in COMPOSITING_EDITS and any(c in COMPOSITING_EDITS for c in chosen):
            continue
        chosen.append(n)
        if len(chosen) == k:
            break
    rank = {
        n: (0 if n in GEOMETRIC_EDITS else 1 if n in COMPOSITING_EDITS else 3 if n == "jpeg" else 2) for n in chosen
    }
    return sorted(chosen, key=lambda n: rank[n])  # stable: random order within a group


def make_query(
    img: Image.Image,
    rng: np.random.Generator,
    other: Callable[[int], Image.Image],
    max_side: int,
    names: Sequence[str] | None = None,
) -> tuple[Image.Image, list[str], Box | None]:
    """Apply 1-3 random edits (or the edits `names`, in that order); returns (query, edit names, box of the
    pasted content or None)."""
    names = sample_edits(rng) if names is None else list(names)
    unknown = [n for n in names if n not in EDITS]
    if unknown:
        raise ValueError(f"unknown edit names {unknown}; known: {', '.join(EDIT_NAMES)}")
    ctx = EditContext(other=other)
    for name in names:
        img = EDITS[name](img, rng, ctx)
    box = ctx.box
    if max(img.size) > max_side:
        s = max_side / max(img.size)
        img = fit_long_side(img, max_side)
        if box is not None:
            box = (math.floor(box[0] * s), math.floor(box[1] * s), math.ceil(box[2] * s), math.ceil(box[3] * s))
    if box is not None:
        box = (max(0, box[0]), max(0, box[1]), min(img.width, box[2]), min(img.height, box[3]))
    return img, names, box
