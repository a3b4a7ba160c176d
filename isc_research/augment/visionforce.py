"""VisionForce's augmentation (descriptor track 3rd, RECIPES §4; `Training/generate/ISC_100k_256.py`), run
online: VisionForce generated 19 augmented copies per training image offline; here every view is a fresh
draw of the same generator (both views of a pair), then the training loader's own steps (resize to the
input size, horizontal flip, pad 10 px and a random crop back to the size; RECIPES §4). Numbers in
conf/augmentation/visionforce.yaml."""

from __future__ import annotations

from functools import partial

from PIL import Image, ImageOps

from isc_research.augment.compose import Maybe, PolicyView
from isc_research.augment.steps import (
    color_jitter,
    emoji,
    gaussian_blur,
    grayscale,
    hflip,
    onto_background,
    paste_other,
    random_pad,
    random_perspective_sigma,
    random_pixelize,
    random_resized_crop,
    random_rotation,
    random_shuffle,
    visionforce_text,
)

Range = tuple[float, float]


def resize_square(img: Image.Image, rng, ctx, size: int) -> Image.Image:
    return img if img.size == (size, size) else img.resize((size, size), Image.BILINEAR)


def pad_and_crop(img: Image.Image, rng, ctx, size: int, pad: int) -> Image.Image:
    """torchvision's Pad(pad) (black border) then RandomCrop(size), as VisionForce's loader (RECIPES §4)."""
    if pad <= 0:
        return img
    padded = ImageOps.expand(img, border=pad, fill=0)
    x, y = (int(v) for v in rng.integers(0, padded.width - size + 1, size=2))
    return padded.crop((x, y, x + size, y + size))


def visionforce(
    size: int,
    crop_scale: Range,
    rotation_p: float,
    rotation_degrees: float,
    pixelize_p: float,
    pixelize_ratio: Range,
    shuffle_p: float,
    shuffle_factor: Range,
    perspective_p: float,
    perspective_sigma: Range,
    pad_p: float,
    pad_factor: Range,
    underlay_p: float,
    underlay_size: Range,
    jitter_p: float,
    jitter: list[float],
    blur_sigma: Range,
    grayscale_p: float,
    hflip_p: float,
    emoji_p: float,
    emoji_size: Range,
    emoji_opacity: Range,
    text_p: float,
    text_glyphs: tuple[int, int],
    text_size: Range,
    text_opacity: Range,
    overlay_p: float,
    overlay_enlarge: Range,
    loader_hflip_p: float = 0.5,
    loader_pad: int = 10,
    work_side_factor: float | None = 2.0,
) -> PolicyView:
    """One view (both copies of a pair draw from it), in the source's Compose order."""
    ops = [
        partial(random_resized_crop, size=size, scale=tuple(crop_scale)),
        Maybe(rotation_p, partial(random_rotation, degrees=(-rotation_degrees, rotation_degrees))),
        Maybe(pixelize_p, partial(random_pixelize, ratio=tuple(pixelize_ratio))),
        Maybe(shuffle_p, partial(random_shuffle, factor=tuple(shuffle_factor))),
        Maybe(perspective_p, partial(random_perspective_sigma, sigma=tuple(perspective_sigma))),
        Maybe(pad_p, partial(random_pad, factor=tuple(pad_factor))),
        Maybe(underlay_p, partial(paste_other, size=tuple(underlay_size))),
        Maybe(jitter_p, partial(color_jitter, strength=list(jitter))),
        partial(gaussian_blur, sigma=tuple(blur_sigma)),
        Maybe(grayscale_p, grayscale),
        Maybe(hflip_p, hflip),
        Maybe(emoji_p, partial(emoji, size=emoji_size, opacity=emoji_opacity)),
        *[
            Maybe(text_p, partial(visionforce_text, glyphs=text_glyphs, font_size=text_size, opacity=text_opacity))
            for _ in range(2)
        ],
        Maybe(overlay_p, partial(onto_background, enlarge=tuple(overlay_enlarge))),
        # the training loader after the offline generator (which stored 256-px images)
        partial(resize_square, size=size),
        Maybe(loader_hflip_p, hflip),
        partial(pad_and_crop, size=size, pad=int(loader_pad)),
    ]
    work_side = None if work_side_factor is None else int(round(work_side_factor * size))
    return PolicyView(ops, size, work_side)
