"""SSCD's ADVANCED augmentation (RECIPES §8, `sscd/transforms/settings.py`): the same policy for both views.
Numbers in conf/augmentation/sscd_advanced.yaml; batch-level mixup/CutMix is isc_research.augment.mixup."""

from __future__ import annotations

from functools import partial

from isc_research.augment.compose import Maybe, PolicyView
from isc_research.augment.steps import (
    color_jitter,
    emoji,
    grayscale,
    hflip,
    random_blur,
    random_jpeg,
    random_resized_crop,
    random_rotation,
    rotate90,
    sscd_text,
)

Range = tuple[float, float]


def sscd_advanced(
    size: int,
    hflip_p: float,
    rotate90_p: float,
    text_p: float,
    text_size: Range,
    text_opacity: Range,
    emoji_p: float,
    emoji_size: Range,
    emoji_opacity: Range,
    rotation_p: float,
    rotation_degrees: Range,
    crop_scale: Range,
    jitter_p: float,
    jitter: list[float],
    grayscale_p: float,
    blur_p: float,
    blur_radius: Range,
    jpeg_p: float,
    jpeg_quality: tuple[int, int],
    work_side_factor: float | None = 2.0,
) -> PolicyView:
    """One view, applied to both copies. `work_side_factor` as in isc_research.augment.lyakaap."""
    ops = [
        Maybe(hflip_p, hflip),
        Maybe(rotate90_p, rotate90),
        Maybe(text_p, partial(sscd_text, font_size=tuple(text_size), opacity=tuple(text_opacity))),
        Maybe(emoji_p, partial(emoji, size=emoji_size, opacity=emoji_opacity)),
        Maybe(rotation_p, partial(random_rotation, degrees=tuple(rotation_degrees))),
        partial(random_resized_crop, size=size, scale=tuple(crop_scale)),
        Maybe(jitter_p, partial(color_jitter, strength=list(jitter))),
        Maybe(grayscale_p, grayscale),
        Maybe(blur_p, partial(random_blur, radius=tuple(blur_radius))),
        Maybe(jpeg_p, partial(random_jpeg, quality=tuple(jpeg_quality))),
    ]
    work_side = None if work_side_factor is None else int(round(work_side_factor * size))
    return PolicyView(ops, size, work_side)
