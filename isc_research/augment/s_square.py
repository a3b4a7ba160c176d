"""S-square's query augmentation (descriptor track 2nd, RECIPES §3.2; `modules/AugsDS_v13.py::query_augmentation`)
with its intensity knob I in [0, 1]: a clean reference view and an augmented query view. The steps run in
the order of `p` (the source's); the probabilities marked "× I" in conf/augmentation/s_square.yaml are
multiplied by I. The older module AugsDS_v5 (and v6, whose query_augmentation is v5's) of two ensemble members
is the same policy with its own order, probabilities and magnitudes and no intensity (I = 1):
conf/augmentation/s_square_v5.yaml."""

from __future__ import annotations

from functools import partial

from isc_research.augment.compose import Maybe, PolicyView
from isc_research.augment.steps import (
    augly_color_jitter,
    blur_or_sharpen,
    channel_invert,
    channel_shift,
    channel_swap,
    emoji,
    grayscale,
    grid_crop,
    hflip,
    meme,
    meme_unless_overlaid,
    opacity,
    pad_or_square,
    pixelize_choice,
    random_jpeg,
    random_perspective_sigma,
    random_rotation,
    random_shuffle,
    s_square_color_jitter,
    s_square_overlay,
    s_square_text,
    scale,
    screenshot,
    stripes,
    vflip,
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
    color_jitter_factor: Range | None,
    opacity_level: Range,
    crop_starts: list[float],
    crop_ends: list[float],
    pad_factor: Range,
    overlay_top: dict,
    overlay_under: dict,
    shuffle_factor: float,
    emoji_size: Range,
    emoji_opacity: Range,
    emoji_inside: bool,
    text_glyphs: tuple[int, int],
    text_sizes: list[float],
    pixelize_ratios: list[float],
    intensity_scaled: list[str],
    work_side_factor: float | None = 2.0,
    skip_meme_if_overlaid: bool = True,
) -> tuple[PolicyView, PolicyView]:
    """(clean reference view, query view). `p` maps step name → base probability, in the order the steps run;
    the steps named in `intensity_scaled` use p × I. Magnitudes scale with I as RECIPES §3.2 states.
    `color_jitter_factor` null: the source's own colour-jitter draws (steps.s_square_color_jitter), else
    brightness, contrast and saturation factors uniform in that range. `skip_meme_if_overlaid`: v13 adds no
    meme caption to a view an overlay composited (v5 does)."""
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
        "color_jitter": partial(s_square_color_jitter, intensity=i)
        if color_jitter_factor is None
        else partial(augly_color_jitter, factor=tuple(color_jitter_factor)),
        "grayscale": grayscale,
        "opacity": partial(opacity, level=tuple(opacity_level)),
        "crop": partial(grid_crop, starts=list(crop_starts), ends=list(crop_ends)),
        "pad": partial(pad_or_square, factor=tuple(pad_factor)),
        "overlay": partial(s_square_overlay, top=dict(overlay_top), under=dict(overlay_under)),
        "blur_or_sharpen": partial(blur_or_sharpen, intensity=i),
        "shuffle_pixels": partial(random_shuffle, factor=(0.0, shuffle_factor * i)),
        "stripes": stripes,
        "emoji": partial(emoji, size=emoji_size, opacity=emoji_opacity, inside=emoji_inside),
        "text": partial(s_square_text, glyphs=text_glyphs, sizes=text_sizes),
        "pixelize": partial(pixelize_choice, ratios=list(pixelize_ratios)),
        "hflip": hflip,
        "vflip": vflip,
        "meme": meme_unless_overlaid if skip_meme_if_overlaid else meme,
        "screenshot": screenshot,
        "channel_invert": channel_invert,
        "channel_swap": channel_swap,
        "channel_shift": channel_shift,
    }
    missing = set(steps) - set(p)
    if missing or set(p) - set(steps):
        raise ValueError(
            f"augmentation.p must give a probability for exactly the steps {sorted(steps)}; "
            f"missing {sorted(missing)}, unknown {sorted(set(p) - set(steps))}"
        )
    work_side = None if work_side_factor is None else int(round(work_side_factor * size))
    query = PolicyView([Maybe(prob(name), steps[name]) for name in p], size, work_side)
    reference = PolicyView([], size, work_side)
    return reference, query
