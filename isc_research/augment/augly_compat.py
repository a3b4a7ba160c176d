"""Working equivalents of the two AugLy 1.0.0 functions that crash on current libraries.

- `meme_format` calls `FreeTypeFont.getsize_multiline`, removed in Pillow 10.
- `perspective_transform` builds `np.matrix(..., dtype=np.float)`; `np.float` was removed in NumPy 1.24.

Both keep AugLy's parameters and arithmetic (tests compare them pixel for pixel with AugLy's own code run
under a shim that restores the missing names), minus the metadata/bbox bookkeeping; randomness comes from
a numpy Generator instead of AugLy's global seeds.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["meme_format", "perspective_coefficients", "perspective_transform", "warp_to_corners"]


def _multiline_size(font: ImageFont.FreeTypeFont, text: str) -> tuple[int, int]:
    """What Pillow 9's `font.getsize_multiline(text)` returned: the widest line's `getsize` width, and
    n_lines × (height of "A" + 4) − 4 (its line spacing rule); `getsize` was the bbox's right/bottom."""
    lines = text.split("\n")
    line_spacing = font.getbbox("A")[3] + 4
    return max(font.getbbox(line)[2] for line in lines), len(lines) * line_spacing - 4


def meme_format(
    image: Image.Image,
    text: str = "LOL",
    font_file: str | None = None,
    opacity: float = 1.0,
    text_color: tuple[int, int, int] = (0, 0, 0),
    caption_height: int = 250,
    meme_bg_color: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """AugLy's meme_format: a caption band of `caption_height` px above the image, the text centred in it
    at the largest font size (stepping down by 5) that fits. `font_file=None` uses AugLy's Raleway-ExtraBold."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"meme_format: opacity must be in [0, 1], got {opacity}")
    if caption_height <= 10:
        raise ValueError(f"meme_format: caption_height must be > 10, got {caption_height}")
    font_file = font_file or _default_meme_font()
    src_mode = image.mode
    width, height = image.size
    font_size = caption_height - 10
    while True:
        font = ImageFont.truetype(font_file, max(1, font_size))
        text_width, text_height = _multiline_size(font, text)
        if (text_width <= width - 10 and text_height <= caption_height - 10) or font_size <= 1:
            break
        font_size -= 5
    meme = Image.new("RGB", (width, height + caption_height), meme_bg_color)
    meme.paste(image, (0, caption_height))
    x_pos, y_pos = round((width - text_width) / 2), round((caption_height - text_height) / 2)
    fill = (*text_color, round(opacity * 255))
    ImageDraw.Draw(meme).multiline_text((x_pos, y_pos), text, font=font, fill=fill, align="center")
    return meme if src_mode in ("RGB", "RGBA") else meme.convert(src_mode)


def _default_meme_font() -> str:
    from augly.utils import MEME_DEFAULT_FONT

    return MEME_DEFAULT_FONT


def perspective_coefficients(src: list[tuple[float, float]], dst: list[tuple[float, float]]) -> np.ndarray:
    """The 8 coefficients PIL's Image.PERSPECTIVE needs to map `dst` corners back to `src` corners
    (least squares, as AugLy's compute_transform_coeffs, in float64)."""
    rows = []
    for (sx, sy), (dx, dy) in zip(src, dst):
        rows.append([dx, dy, 1, 0, 0, 0, -sx * dx, -sx * dy])
        rows.append([0, 0, 0, dx, dy, 1, -sy * dx, -sy * dy])
    a = np.asarray(rows, dtype=np.float64)
    b = np.asarray(src, dtype=np.float64).reshape(8)
    return np.linalg.inv(a.T @ a) @ a.T @ b


def warp_to_corners(
    image: Image.Image,
    src: list[tuple[float, float]],
    dst: list[tuple[float, float]],
    resample: Image.Resampling,
) -> Image.Image:
    """The perspective warp that moves the corners `src` to `dst`, same size, black outside (PIL's PERSPECTIVE
    transform: AugLy's perspective_transform and torchvision's perspective on PIL images both call it)."""
    return image.transform(image.size, Image.PERSPECTIVE, tuple(perspective_coefficients(src, dst)), resample)


def perspective_transform(
    image: Image.Image,
    sigma: float = 50.0,
    dx: float = 0.0,
    dy: float = 0.0,
    rng: np.random.Generator | np.random.RandomState | None = None,
    crop_out_black_border: bool = False,
) -> Image.Image:
    """AugLy's perspective_transform: each corner moves by N(0, sigma) pixels (+ dx, dy), bicubic warp
    to the same size; optionally crop to the part without black borders. `rng` defaults to AugLy's
    `RandomState(42)`."""
    if sigma < 0:
        raise ValueError(f"perspective_transform: sigma must be >= 0, got {sigma}")
    rng = np.random.RandomState(42) if rng is None else rng
    width, height = image.size
    src = [(0, 0), (width, 0), (width, height), (0, height)]
    dst = [(rng.normal(x, sigma) + dx, rng.normal(y, sigma) + dy) for x, y in src]
    out = warp_to_corners(image, src, dst, Image.BICUBIC)
    if crop_out_black_border:
        top_left, top_right, bottom_right, bottom_left = dst
        left, right = max(0, top_left[0], bottom_left[0]), min(width, top_right[0], bottom_right[0])
        top, bottom = max(0, top_left[1], top_right[1]), min(height, bottom_left[1], bottom_right[1])
        if left >= right or top >= bottom:
            raise ValueError(
                "perspective_transform: cannot crop out the black border of a warp this strong "
                f"(sigma={sigma} on a {width}x{height} image); lower sigma"
            )
        out = out.crop((left, top, right, bottom))
    return out
