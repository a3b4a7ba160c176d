"""lyakaap's two-view policy (descriptor track 1st, RECIPES §2.3; `exp/v83.py`, v86 and v98 change numbers):
a moderate view and a hard view. The YAMLs conf/augmentation/lyakaap_v{83,86,98}.yaml hold the numbers."""

from __future__ import annotations

from functools import partial

from torchvision.transforms import RandomErasing

from isc_research.augment.compose import Maybe, OneOf, PolicyView, RandomOrder
from isc_research.augment.steps import (
    OverlayOrCrop,
    color_jitter,
    edge_enhance,
    emoji,
    grayscale,
    hflip,
    jpeg,
    perspective,
    random_blur,
    random_pixelize,
    random_resized_crop,
    random_rotation,
    shuffle_pixels,
    text,
    vflip,
)

Range = tuple[float, float]


def moderate_view(size: int, scale: Range, work_side: int | None) -> PolicyView:
    """RandomResizedCrop(size, scale) + horizontal flip (view 1 of RECIPES §2.3)."""
    return PolicyView([partial(random_resized_crop, size=size, scale=tuple(scale)), Maybe(0.5, hflip)], size, work_side)


def lyakaap(
    size: int,
    moderate_scale: Range,
    rotation_p: float,
    rotation_degrees: Range,
    overlay_p: float,
    overlay_size: Range,
    overlay_opacity: Range,
    overlay_crop_scale: Range,
    crop_scale: Range,
    jitter: list[float],
    pixelize_p: float,
    pixelize_ratio: Range,
    shuffle_p: float,
    shuffle_factor: float,
    jpeg_p: float,
    jpeg_qualities: list[int],
    grayscale_p: float,
    blur_p: float,
    blur_radius: Range,
    perspective_p: float,
    perspective_distortion: float,
    hflip_p: float,
    vflip_p: float,
    text_p: float,
    text_lines: tuple[int, int],
    text_glyphs: tuple[int, int],
    text_size: Range,
    text_x: Range,
    text_y: Range,
    emoji_p: float,
    emoji_size: Range,
    emoji_opacity: Range,
    edge_p: float,
    erasing_p: float,
    work_side_factor: float | None = 2.0,
) -> tuple[PolicyView, PolicyView]:
    """(moderate view, hard view). `work_side_factor`: before the ops, shrink the image to this many times
    `size` on its long side (ops run on fewer pixels; crops smaller than 1/factor² of the image are then
    upsampled a little more than from the original); None works at full resolution."""
    work_side = None if work_side_factor is None else int(round(work_side_factor * size))
    hard_ops = [
        Maybe(rotation_p, partial(random_rotation, degrees=tuple(rotation_degrees))),
        OverlayOrCrop(size, overlay_p, overlay_size, overlay_opacity, overlay_crop_scale, crop_scale),
        RandomOrder(
            [
                partial(color_jitter, strength=list(jitter)),
                Maybe(pixelize_p, partial(random_pixelize, ratio=tuple(pixelize_ratio))),
                Maybe(shuffle_p, partial(shuffle_pixels, factor=shuffle_factor)),
                Maybe(jpeg_p, OneOf([partial(jpeg, quality=int(q)) for q in jpeg_qualities])),
                Maybe(grayscale_p, grayscale),
                Maybe(blur_p, partial(random_blur, radius=tuple(blur_radius))),
                Maybe(perspective_p, partial(perspective, distortion_scale=perspective_distortion)),
                Maybe(hflip_p, hflip),
                Maybe(vflip_p, vflip),
                Maybe(
                    text_p, partial(text, lines=text_lines, glyphs=text_glyphs, font_size=text_size, x=text_x, y=text_y)
                ),
                Maybe(emoji_p, partial(emoji, size=emoji_size, opacity=emoji_opacity)),
                Maybe(edge_p, edge_enhance),
            ]
        ),
    ]
    hard = PolicyView(hard_ops, size, work_side, tensor_ops=[RandomErasing(p=erasing_p, value="random")])
    return moderate_view(size, moderate_scale, work_side), hard
