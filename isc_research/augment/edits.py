"""The copy edits that make the mini-DISC queries and, as an augmentation, training views
(`augmentation=copy_edits`), and the training pictures of the overlay detector.

`make_query` applies 1-3 edits drawn by `sample_edits` from `EDITS`: AugLy's transforms, the ones DISC21's queries
were made with. Each edit only draws its parameters (the mini-DISC's distribution) and calls the op of
`isc_research.augment.ops` that the recipe policies call too: one implementation of each image operation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from isc_research.assets import colour, latin_fonts, pick, words
from isc_research.augment import ops
from isc_research.augment.augly_compat import meme_format
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


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _edit_crop(img, rng, ctx):
    fw, fh = _u(rng, 0.4, 0.9), _u(rng, 0.4, 0.9)
    x1, y1 = _u(rng, 0, 1 - fw), _u(rng, 0, 1 - fh)
    return ops.crop_fractions(img, x1, y1, x1 + fw, y1 + fh)


def _edit_rotate(img, rng, ctx):
    if rng.random() < 0.35:
        return img.transpose(pick(rng, (Image.ROTATE_90, Image.ROTATE_180, Image.ROTATE_270)))
    out = ops.rotate_and_crop(img, _u(rng, 5, 40) * pick(rng, (-1.0, 1.0)))
    return out if min(out.size) >= 8 else img.transpose(Image.ROTATE_90)


def _edit_hflip(img, rng, ctx):
    return ImageOps.mirror(img)


def _edit_vflip(img, rng, ctx):
    return ImageOps.flip(img)


def _edit_perspective(img, rng, ctx):
    """AugLy perspective_transform, each corner moved by N(0, σ) with σ 3–12 % of the short side."""
    return ops.perspective_sigma(img, rng, _u(rng, 0.03, 0.12) * min(img.size))


def _edit_pad(img, rng, ctx):
    fill = pick(rng, ((0, 0, 0), (255, 255, 255), colour(rng)))
    return ops.pad(img, _u(rng, 0.05, 0.35), _u(rng, 0.05, 0.35), fill)


def _edit_meme(img, rng, ctx):
    """AugLy meme_format: a caption band (18-35 % of the height, white or a random colour) above the image, one or
    two lines of words in a bold font."""
    band = max(12, round(img.height * _u(rng, 0.18, 0.35)))
    bg = (255, 255, 255) if rng.random() < 0.7 else colour(rng)
    fg = (0, 0, 0) if sum(bg) > 380 else (255, 255, 255)
    text = words(rng) if rng.random() < 0.6 else f"{words(rng, 2)}\n{words(rng, 2)}"
    text = text.upper() if rng.random() < 0.5 else text
    fonts = [f for f in latin_fonts() if "Impact" in f or "Bold" in f] or list(latin_fonts())
    return meme_format(img, text=text, font_file=pick(rng, fonts), text_color=fg, caption_height=band, meme_bg_color=bg)


def _edit_overlay_onto_background(img, rng, ctx):
    """AugLy overlay_onto_background_image: the image, scaled to 30-80 % of another image's height (its width
    kept inside too), pasted onto it at a random position; the box is where it landed."""
    bg = ctx.other(0)
    (bw, bh), (w, h) = bg.size, img.size
    frac = _u(rng, 0.3, 0.8) * min(1.0, (bw / w) / (bh / h))
    nw, nh = ops.pasted_size(bh, img.size, frac)  # the size ops.paste gives it, so that the box is exact
    x_pos, y_pos = _u(rng, 0, max(0.0, 1 - nw / bw)), _u(rng, 0, max(0.0, 1 - nh / bh))
    out = ops.paste(bg, img, frac, 1.0, x_pos, y_pos)
    x, y = int(bw * x_pos), int(bh * y_pos)
    ctx.box = (x, y, min(bw, x + nw), min(bh, y + nh))
    return out


def _edit_screenshot(img, rng, ctx):
    """AugLy overlay_onto_screenshot, web or mobile template."""
    out, ctx.box = ops.overlay_onto_screenshot(img, str(pick(rng, ops.SCREENSHOT_TEMPLATES)))
    return out


def _edit_overlay_text(img, rng, ctx):
    """AugLy overlay_text: 1-2 lines of 3-10 random glyphs of a random AugLy font."""
    return ops.text(img, rng, lines=(1, 2), glyphs=(3, 10), font_size=(0.08, 0.22), opacity=(0.6, 1.0), y=(0.0, 0.8))


def _edit_overlay_emoji(img, rng, ctx):
    return ops.emoji(img, rng, size=(0.15, 0.45), opacity=(0.7, 1.0))


def _edit_overlay_image(img, rng, ctx):
    return ops.paste(img, ctx.other(1), _u(rng, 0.2, 0.5), _u(rng, 0.5, 1.0), _u(rng, 0, 0.7), _u(rng, 0, 0.7))


def _edit_blur(img, rng, ctx):
    return ops.blur(img, _u(rng, 0.8, 3.5) * max(1.0, min(img.size) / 256))


def _edit_jpeg(img, rng, ctx):
    return ops.jpeg(img, int(rng.integers(5, 31)))


def _edit_grayscale(img, rng, ctx):
    return ops.grayscale(img)


def _edit_pixelize(img, rng, ctx):
    return ops.pixelize(img, _u(rng, 0.12, 0.45))


def _edit_color_jitter(img, rng, ctx):
    return ops.enhance(img, _u(rng, 0.6, 1.5), _u(rng, 0.6, 1.5), _u(rng, 0.0, 2.0))


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
