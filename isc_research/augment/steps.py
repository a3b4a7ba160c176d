"""Steps of the recipe policies: `step(image, rng, ctx, **params) -> image`, bound to their parameters with
functools.partial in the policy modules. Each draws its random parameters from `rng` and calls an op of
isc_research.augment.ops; `ctx.other_image()` supplies other training images."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from isc_research.augment import ops
from isc_research.augment.compose import Context
from isc_research.images import fit_long_side

Range = tuple[float, float]


def random_rotation(img, rng, ctx, degrees: Range):
    """AugLy RandomRotation: uniform angle, rotate and crop out the black corners."""
    return ops.rotate_and_crop(img, float(rng.uniform(*degrees)))


def random_resized_crop(img, rng, ctx, size: int, scale: Range):
    return ops.random_resized_crop(img, size, rng, scale)


class OverlayOrCrop:
    """With probability `p`: overlay with another training image (this one onto it or it onto this one,
    50/50), then RandomResizedCrop(scale=overlay_crop_scale); otherwise RandomResizedCrop(scale=crop_scale)."""

    needs_other_images = True

    def __init__(
        self,
        size: int,
        p: float,
        overlay_size: Range,
        overlay_opacity: Range,
        overlay_crop_scale: Range,
        crop_scale: Range,
    ):
        self.size, self.p = size, p
        self.overlay_size, self.overlay_opacity = tuple(overlay_size), tuple(overlay_opacity)
        self.overlay_crop_scale, self.crop_scale = tuple(overlay_crop_scale), tuple(crop_scale)

    def __call__(self, img: Image.Image, rng: np.random.Generator, ctx: Context) -> Image.Image:
        if rng.random() < self.p:
            other = fit_long_side(ctx.other_image(), max(img.size), Image.BILINEAR)
            img = ops.overlay_with_other(img, other, rng, self.overlay_size, self.overlay_opacity)
            ctx.flags.add("overlaid")
            return ops.random_resized_crop(img, self.size, rng, self.overlay_crop_scale)
        return ops.random_resized_crop(img, self.size, rng, self.crop_scale)


def color_jitter(img, rng, ctx, strength: list[float]):
    return ops.color_jitter(img, rng, *strength)


def random_pixelize(img, rng, ctx, ratio: Range):
    return ops.pixelize(img, float(rng.uniform(*ratio)))


def shuffle_pixels(img, rng, ctx, factor: float):
    return ops.shuffle_pixels(img, rng, factor)


def jpeg(img, rng, ctx, quality: int):
    return ops.jpeg(img, quality)


def grayscale(img, rng, ctx):
    return ops.grayscale(img)


def random_blur(img, rng, ctx, radius: Range):
    """PIL Gaussian blur (AugLy RandomBlur) with a radius drawn from `radius`."""
    return ops.blur(img, float(rng.uniform(*radius)))


def perspective(img, rng, ctx, distortion_scale: float):
    return ops.perspective(img, rng, distortion_scale)


def hflip(img, rng, ctx):
    return img.transpose(Image.FLIP_LEFT_RIGHT)


def vflip(img, rng, ctx):
    return img.transpose(Image.FLIP_TOP_BOTTOM)


def text(img, rng, ctx, lines, glyphs, font_size, x, y):
    return ops.text(
        img, rng, lines=tuple(lines), glyphs=tuple(glyphs), font_size=tuple(font_size), x=tuple(x), y=tuple(y)
    )


def emoji(img, rng, ctx, size, opacity, inside: bool = True):
    """An emoji of size and opacity drawn uniformly in the ranges and capped at 1 (S-square draws both as
    min(1, a + u): a range reaching past 1 puts that share of the draws at 1); `inside`: kept inside the image."""
    return ops.emoji(img, rng, tuple(size), tuple(opacity), inside=inside)


def edge_enhance(img, rng, ctx):
    return ops.edge_enhance(img, more=bool(rng.random() < 0.5))


# ------------------------------------------------------------------------------ SSCD, S-square, VisionForce


def rotate90(img, rng, ctx):
    return ops.rotate90(img, rng)


def random_jpeg(img, rng, ctx, quality: Range):
    """JPEG at a quality drawn uniformly from `quality` (inclusive)."""
    return ops.jpeg(img, int(rng.integers(int(quality[0]), int(quality[1]) + 1)))


def gaussian_blur(img, rng, ctx, sigma: Range):
    return ops.gaussian_blur_sigma(img, float(rng.uniform(*sigma)))


def sscd_text(img, rng, ctx, font_size: Range, opacity: Range):
    """SSCD's text overlay: one line of random glyphs, as many as fit from a random position."""
    return ops.text(
        img,
        rng,
        lines=(1, 1),
        glyphs=(1, 40),
        font_size=tuple(font_size),
        opacity=tuple(opacity),
        x=(0.0, 0.8),
        y=(0.0, 0.8),
        fit=True,
    )


def random_perspective_sigma(img, rng, ctx, sigma: Range):
    """AugLy perspective_transform with sigma (pixels) drawn uniformly from `sigma`."""
    return ops.perspective_sigma(img, rng, float(rng.uniform(*sigma)))


def random_pad(img, rng, ctx, factor: Range):
    """AugLy pad with w/h factors drawn uniformly from `factor` and a random colour."""
    return ops.pad(img, float(rng.uniform(*factor)), float(rng.uniform(*factor)), ops.random_colour(rng))


def paste_other(img, rng, ctx, size: Range, opacity: Range = (1.0, 1.0)):
    """Paste another training image, scaled to `size` × this image's height, at a random position
    (VisionForce's "underlay", RECIPES §4)."""
    s = float(rng.uniform(*size))
    return ops.paste(
        img,
        ctx.other_image(),
        s,
        float(rng.uniform(*opacity)),
        float(rng.uniform(0, 1 - s)),
        float(rng.uniform(0, 1 - s)),
    )


paste_other.needs_other_images = True


def onto_background(img, rng, ctx, enlarge: Range):
    """Paste this image into another training image resized to `enlarge` × this image's size (VisionForce's
    "overlay": the image enlarged 1–2.5× into a random background, RECIPES §4)."""
    f = float(rng.uniform(*enlarge))
    w, h = img.size
    bg = ctx.other_image().resize((max(w, int(w * f)), max(h, int(h * f))), Image.BILINEAR)
    bg.paste(img, (int(rng.integers(0, bg.width - w + 1)), int(rng.integers(0, bg.height - h + 1))))
    ctx.flags.add("overlaid")
    return bg


onto_background.needs_other_images = True


def s_square_overlay(img, rng, ctx, top: dict, under: dict):
    """S-square's overlay (RECIPES §3.2): 50/50 another image on top of this one (`top`: size, opacity
    ranges) or this image on top of another (`under`)."""
    other = fit_long_side(ctx.other_image(), max(img.size), Image.BILINEAR)
    if rng.random() < 0.5:
        base, pasted, params = img, other, top
    else:
        base, pasted, params = other, img, under
    s = min(1.0, float(rng.uniform(*params["size"])))
    ctx.flags.add("overlaid")
    return ops.paste(
        base,
        pasted,
        s,
        min(1.0, float(rng.uniform(*params["opacity"]))),
        float(rng.uniform(0, 1 - s)),
        float(rng.uniform(0, 1 - s)),
    )


s_square_overlay.needs_other_images = True


def scale(img, rng, ctx, factor: Range):
    """AugLy scale: resize by a factor drawn from `factor` (the later square resize keeps the lost detail lost)."""
    f = float(rng.uniform(*factor))
    return img.resize((max(1, int(img.width * f)), max(1, int(img.height * f))), Image.BILINEAR)


def augly_color_jitter(img, rng, ctx, factor: Range):
    """AugLy color_jitter: brightness, contrast and saturation factors each drawn from `factor`, in that order."""
    return ops.enhance(img, *(float(rng.uniform(*factor)) for _ in range(3)))


def s_square_color_jitter(img, rng, ctx, intensity: float):
    """S-square's colour jitter as its AugsDS modules draw it: with N = 1 − I, brightness and contrast factors
    N + I·U(0.25, 1.75), saturation N + I·(0.2 + e^(5u)/6), u uniform in [0, 1) (AugsDS_v5 is this at I = 1)."""
    n = 1.0 - intensity
    brightness, contrast = (n + intensity * float(rng.uniform(0.25, 1.75)) for _ in range(2))
    saturation = n + intensity * (0.2 + math.exp(5.0 * float(rng.random())) / 6.0)
    return ops.enhance(img, brightness, contrast, saturation)


def opacity(img, rng, ctx, level: Range):
    return ops.opacity(img, float(rng.uniform(*level)))


def grid_crop(img, rng, ctx, starts: list[float], ends: list[float]):
    """S-square's crop: x1, y1 from `starts`, x2, y2 from `ends` (fractions)."""
    x1, y1 = (float(starts[int(i)]) for i in rng.integers(0, len(starts), 2))
    x2, y2 = (float(ends[int(i)]) for i in rng.integers(0, len(ends), 2))
    return ops.crop_fractions(img, x1, y1, x2, y2)


def pad_or_square(img, rng, ctx, factor: Range):
    """50/50: pad by up to `factor` of each side, or pad to a square (random colour)."""
    if rng.random() < 0.5:
        return random_pad(img, rng, ctx, factor)
    return ops.pad_square(img, ops.random_colour(rng))


def blur_or_sharpen(img, rng, ctx, intensity: float):
    """S-square: blur radius I·(0.1 + {1..4}) or sharpen by a factor up to 1 + 50·I, 50/50."""
    if rng.random() < 0.5:
        return ops.blur(img, intensity * (0.1 + int(rng.integers(1, 5))))
    return ops.sharpen(img, float(rng.uniform(1.0, 1.0 + 50.0 * intensity)))


def random_shuffle(img, rng, ctx, factor: Range):
    return ops.shuffle_pixels(img, rng, float(rng.uniform(*factor)))


def stripes(img, rng, ctx):
    return ops.stripes(img, rng)


def s_square_text(img, rng, ctx, glyphs, sizes):
    """S-square's text: one line of `glyphs` random glyphs, font size one of `sizes`."""
    return ops.text(
        img,
        rng,
        lines=(1, 1),
        glyphs=tuple(glyphs),
        font_size=list(sizes),
        x=(0.0, 0.6),
        y=(0.0, 0.8),
        discrete_sizes=True,
    )


def pixelize_choice(img, rng, ctx, ratios: list[float]):
    return ops.pixelize(img, float(ratios[int(rng.integers(len(ratios)))]))


def meme_unless_overlaid(img, rng, ctx):
    """AugLy meme_format (working equivalent), skipped when an overlay already composited this view."""
    return img if "overlaid" in ctx.flags else ops.meme(img, rng)


def meme(img, rng, ctx):
    """AugLy meme_format (working equivalent), whatever came before (S-square's AugsDS_v5/v6)."""
    return ops.meme(img, rng)


def screenshot(img, rng, ctx):
    return ops.screenshot(img, rng)


def channel_invert(img, rng, ctx):
    return ops.channel_invert(img)


def channel_swap(img, rng, ctx):
    return ops.channel_swap(img, rng)


def channel_shift(img, rng, ctx):
    return ops.channel_shift(img, rng)


def visionforce_text(img, rng, ctx, glyphs, font_size, opacity):
    return ops.text(
        img,
        rng,
        lines=(1, 1),
        glyphs=tuple(glyphs),
        font_size=tuple(font_size),
        opacity=tuple(opacity),
        x=(0.0, 0.9),
        y=(0.0, 0.9),
    )
