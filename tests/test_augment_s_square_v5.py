"""S-square's older query augmentation AugsDS_v5 / v6 (members sjy_test5 and smp_test19): isc_research.augment.s_square
with conf/augmentation/s_square_v5.yaml. The steps run in the table's order with its probabilities; the meme
caption follows an overlay; the colour jitter draws as the source does."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hydra.utils import instantiate
from PIL import Image, ImageEnhance

from isc_research.augment.compose import Context
from isc_research.augment.steps import s_square_color_jitter
from isc_research.recipes import load_table
from tests.conftest import compose_config

SIZE = 32
V5_ORDER = [
    "scale",
    "random_rotation",
    "random_perspective_sigma",
    "random_jpeg",
    "grid_crop",
    "s_square_color_jitter",
    "grayscale",
    "opacity",
    "pad_or_square",
    "s_square_overlay",
    "blur_or_sharpen",
    "random_shuffle",
    "stripes",
    "emoji",
    "s_square_text",
    "pixelize_choice",
    "hflip",
    "vflip",
    "meme",
    "screenshot",
    "channel_invert",
    "channel_swap",
    "channel_shift",
]


def _image() -> Image.Image:
    y, x = np.mgrid[0:60, 0:80]
    return Image.fromarray(np.stack([x * 3, y * 4, (x + y) * 2], -1).astype(np.uint8))


@pytest.mark.parametrize("experiment", ["s_square_sjy_test5", "s_square_smp_test19"])
def test_the_members_run_v5s_steps_in_the_tables_order_and_probabilities(experiment):
    cfg = compose_config("train", [f"experiment={experiment}", f"data.train_size={SIZE}"]).augmentation
    table = {row.key: row for row in load_table(experiment)}
    assert list(cfg.p) == list(table["augmentation.p"].source)  # the table's dict compare ignores order
    _, query = instantiate(cfg)
    steps = [(getattr(op.op, "func", op.op).__name__, op.p) for op in query.ops.ops]
    assert [name for name, _ in steps] == V5_ORDER
    assert [p for _, p in steps] == pytest.approx(list(table["augmentation.p"].source.values()))  # none scaled (I = 1)


@pytest.mark.parametrize("skip", [False, True])
def test_the_v5_meme_caption_follows_an_overlay(skip):
    off = {
        f"augmentation.p.{k}=0.0"
        for k in (
            "scale",
            "rotate",
            "perspective",
            "jpeg",
            "crop",
            "color_jitter",
            "grayscale",
            "opacity",
            "pad",
            "blur_or_sharpen",
            "shuffle_pixels",
            "stripes",
            "emoji",
            "text",
            "pixelize",
            "hflip",
            "vflip",
            "screenshot",
            "channel_invert",
            "channel_swap",
            "channel_shift",
        )
    }
    base = [
        "augmentation=s_square_v5",
        f"data.train_size={SIZE}",
        *off,
        "augmentation.p.overlay=1.0",
        f"augmentation.skip_meme_if_overlaid={skip}",
    ]
    other = Image.new("RGB", (50, 40), (0, 0, 255))
    outputs = [
        np.asarray(
            instantiate(compose_config("train", [*base, f"augmentation.p.meme={p}"]).augmentation)[1].augment(
                _image(), np.random.default_rng(5), Context(lambda: other)
            )
        )
        for p in (0.0, 1.0)
    ]
    assert np.array_equal(*outputs) == skip  # v5 (skip false) adds the caption to the overlaid view; v13 does not


def test_colour_jitter_draws_as_the_source():
    img = _image()
    rng = np.random.default_rng(3)
    b, c, u = rng.uniform(0.25, 1.75), rng.uniform(0.25, 1.75), rng.random()
    expected = img
    for enhance, factor in zip(
        (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color), (b, c, 0.2 + 50 * math.exp(5 * u) / 300)
    ):
        expected = enhance(expected).enhance(factor)
    out = s_square_color_jitter(img, np.random.default_rng(3), Context(), intensity=1.0)
    assert np.array_equal(np.asarray(out), np.asarray(expected))
    assert np.array_equal(
        np.asarray(s_square_color_jitter(img, np.random.default_rng(3), Context(), intensity=0.0)), np.asarray(img)
    )  # N = 1: factors 1
