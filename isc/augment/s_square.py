"""S-square's query augmentation (descriptor track 2nd, RECIPES §3.2; `modules/AugsDS_v13.py::query_augmentation`)
with its intensity knob I in [0, 1]: a clean reference view and an augmented query view. The steps run in
the source's order; the probabilities marked "× I" in conf/augmentation/s_square.yaml are multiplied by I."""

from __future__ import annotations

from functools import partial

from isc.augment.compose import Maybe, PolicyView
from isc.augment.steps import (
    augly_color_jitter, blur_or_sharpen, channel_invert, channel_shift, channel_swap, grayscale, grid_crop, hflip,
    meme_unless_overlaid, opacity, pad_or_square, pixelize_choice, random_jpeg, random_perspective_sigma,
    random_rotation, random_shuffle, s_square_overlay, s_square_text, scale, screenshot, emoji, stripes, vflip,
)

Range = tuple[float, float]


def s_square(
    size: int,
    intensity: float,
    p: dict,
    scale_factor: Range,
    rotation_degrees: float,
    perspective_sigma: float,
    jpeg_quality: Range,
    color_jitter_factor: Range,
    opacity_level: Range,
    crop_starts: list[float],
    crop_ends: list[float],
    pad_factor: Range,
    overlay_top: dict,
    overlay_under: dict,
    shuffle_factor: float,
    emoji_size: Range,
    emoji_opacity: Range,
    text_glyphs: tuple[int, int],
    text_sizes: list[float],
    pixelize_ratios: list[float],
    intensity_scaled: list[str],
    work_side_factor: float | None = 2.0,
) -> tuple[PolicyView, PolicyView]:
    """(clean reference view, query view). `p` maps step name → base probability; the steps named in
    `intensity_scaled` use p × I. Magnitudes scale with I as RECIPES §3.2 states."""
    if not 0.0 <= intensity <= 1.0:
        raise ValueError(f"augmentation.intensity must be in [0, 1], got {intensity}")
    unknown = set(intensity_scaled) - set(p)
    if unknown:
        raise ValueError(f"augmentation.intensity_scaled names steps missing from augmentation.p: {sorted(unknown)}")
    i = intensity

    def prob(name: str) -> float:
        return p[name] * (i if name in intensity_scaled else 1.0)

    steps = {
        "scale": partial(scale, factor=tuple(scale_factor)),
        "rotate": partial(random_rotation, degrees=(0.0, rotation_degrees * i)),
        "perspective": partial(random_perspective_sigma, sigma=(perspective_sigma * i, perspective_sigma * i)),
        "jpeg": partial(random_jpeg, quality=(max(1, int(i * jpeg_quality[0])), max(1, int(i * jpeg_quality[1])))),
        "color_jitter": partial(augly_color_jitter, factor=tuple(color_jitter_factor)),
        "grayscale": grayscale,
        "opacity": partial(opacity, level=tuple(opacity_level)),
        "crop": partial(grid_crop, starts=list(crop_starts), ends=list(crop_ends)),
        "pad": partial(pad_or_square, factor=tuple(pad_factor)),
        "overlay": partial(s_square_overlay, top=dict(overlay_top), under=dict(overlay_under)),
        "blur_or_sharpen": partial(blur_or_sharpen, intensity=i),
        "shuffle_pixels": partial(random_shuffle, factor=(0.0, shuffle_factor * i)),
        "stripes": stripes,
        "emoji": partial(emoji, size=emoji_size, opacity=emoji_opacity),
        "text": partial(s_square_text, glyphs=text_glyphs, sizes=text_sizes),
        "pixelize": partial(pixelize_choice, ratios=list(pixelize_ratios)),
        "hflip": hflip,
        "vflip": vflip,
        "meme": meme_unless_overlaid,
        "screenshot": screenshot,
        "channel_invert": channel_invert,
        "channel_swap": channel_swap,
        "channel_shift": channel_shift,
    }
    missing = set(steps) - set(p)
    if missing or set(p) - set(steps):
        raise ValueError(f"augmentation.p must give a probability for exactly the steps {sorted(steps)}; "
                         f"missing {sorted(missing)}, unknown {sorted(set(p) - set(steps))}")
    work_side = None if work_side_factor is None else int(round(work_side_factor * size))
    query = PolicyView([Maybe(prob(name), step) for name, step in steps.items()], size, work_side)
    reference = PolicyView([], size, work_side)
    return reference, query
