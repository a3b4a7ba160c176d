"""The "separate" retriever's aug_ver 18 policy (isc_research.augment.separate): view 1 is exactly resize + flip +
grey; each step of view 2 with its probability forced to 1 does what the source's step does. The configured
probabilities and magnitudes are checked against the source table by tests/test_recipe_sources.py."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from hydra.utils import instantiate
from PIL import Image, ImageOps

from isc_research.augment import ops, separate
from isc_research.augment.compose import Context
from tests.conftest import compose_config

SIZE = 48


def _config(**overrides) -> dict:
    cfg = compose_config("train", ["augmentation=separate_v18", f"data.train_size={SIZE}"]).augmentation
    return {**{k: v for k, v in cfg.items() if not k.startswith("_")}, **overrides}


def _quiet(**overrides) -> dict:
    """Every random step of view 2 off, so that a test turns on the one it checks."""
    off = {
        k: 0.0
        for k in (
            "hflip_p",
            "vflip_p",
            "turn90_p",
            "affine_p",
            "emoji_p",
            "text_p",
            "invert_p",
            "cartoon_p",
            "posterize_p",
            "solarize_p",
            "jitter_p",
            "grayscale_p",
            "blur_p",
            "overlay_rotate45_p",
        )
    }
    return _config(**{**off, **overrides})


def _image(w: int = 80, h: int = 60, seed: int = 0) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    noise = np.random.default_rng(seed).integers(0, 40, (h, w, 3))
    ramps = np.stack([x * 200 // w, y * 200 // h, (x + y) * 100 // (w + h)], -1)
    return Image.fromarray((ramps + noise).astype(np.uint8))


def _view2(cfg: dict, img: Image.Image, seed: int, other: Image.Image | None = None) -> Image.Image:
    _, view2 = separate.separate_v18(**cfg)
    return view2.augment(img, np.random.default_rng(seed), Context(lambda: other if other is not None else img))


def test_view1_is_exactly_resize_flip_grey():
    view1, _ = separate.separate_v18(**_config())
    img = _image()
    plain = img.resize((SIZE, SIZE), Image.BILINEAR).convert("L").convert("RGB")
    expected = {"plain": np.asarray(plain), "flipped": np.asarray(ImageOps.mirror(plain))}
    seen = set()
    for seed in range(24):
        out = np.asarray(view1.augment(img, np.random.default_rng(seed), Context()))
        match = [name for name, e in expected.items() if np.array_equal(out, e)]
        assert match, f"seed {seed}: view 1 is neither the grey resize nor its mirror"
        seen.update(match)
    assert seen == {"plain", "flipped"}  # the flip is random (p 0.5), both occur
    assert not view1.needs_other_images


def test_view2_is_grey_and_draws_other_images():
    _, view2 = separate.separate_v18(**_config())
    assert view2.needs_other_images
    for seed in range(6):
        out = np.asarray(_view2(_config(), _image(seed=seed), seed, other=_image(70, 90, seed + 10)))
        assert out.shape == (SIZE, SIZE, 3)
        assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])  # grey p 1


def test_crop_branch_is_a_bicubic_random_resized_crop():
    img = _image()
    out = _view2(_quiet(branch_weights=[1, 0, 0]), img, seed=3)
    rng = np.random.default_rng(3)
    rng.choice(3, p=[1.0, 0.0, 0.0])  # the branch draw (OneOf)
    box = ops.random_resized_box(img.width, img.height, rng, (0.25, 1.0), (0.5, 2.0))
    assert np.array_equal(np.asarray(out), np.asarray(img.resize((SIZE, SIZE), Image.BICUBIC, box=box)))


@pytest.mark.parametrize("black", [True, False])
def test_overlay_pastes_the_image_into_a_box_of_a_black_or_other_canvas(black):
    img, other = _image(), Image.new("RGB", (30, 70), (10, 200, 30))
    out = np.asarray(
        _view2(
            _quiet(
                branch_weights=[0, 1, 0] if black else [0, 0, 1], overlay_scale=[0.25, 0.25], overlay_ratio=[1.0, 1.0]
            ),
            img,
            seed=5,
            other=other,
        )
    )
    background = (0, 0, 0) if black else (10, 200, 30)
    is_background = (out == background).all(-1)
    ys, xs = np.nonzero(~is_background)
    assert (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) == (24, 24)  # a quarter of the area, square
    assert is_background.sum() == SIZE * SIZE - 24 * 24


def test_rotate45_turns_the_image_and_keeps_the_square_inside():
    halves = np.zeros((64, 64, 3), np.uint8)
    halves[:, 32:] = 255  # left black, right white: the edge between them turns into the diagonal
    draw = partial(
        separate.onto_canvas,
        Image.fromarray(halves),
        np.random.default_rng(0),
        Context(),
        size=SIZE,
        scale=(1.0, 1.0),
        ratio=(1, 1),
        black=True,
    )
    turned, straight = np.asarray(draw(rotate45_p=1.0))[..., 0], np.asarray(draw(rotate45_p=0.0))[..., 0]
    assert np.array_equal(straight, np.asarray(Image.fromarray(halves).resize((SIZE, SIZE), Image.BICUBIC))[..., 0])
    below, above = np.tril_indices(SIZE, -3), np.triu_indices(SIZE, 3)  # off the resampled diagonal
    assert (turned[below] < 16).all() and (turned[above] > 239).all()  # the square inside the turned one: no corners


def test_after_steps_flip_turn_rotate_and_shear():
    img = _image(SIZE, SIZE)
    rng = np.random.default_rng(0)
    assert np.array_equal(np.asarray(separate.turn90(img, rng, None)), np.rot90(np.asarray(img)))
    rotated = np.asarray(separate.rotate(img, np.random.default_rng(1), None, degrees=(45.0, 45.0)))
    centre = SIZE // 2
    assert (rotated[0, 0] == 0).all() and np.array_equal(rotated[centre, centre], np.asarray(img)[centre, centre])
    sheared = np.asarray(separate.shear(img, np.random.default_rng(2), None, degrees=45.0))
    assert not np.array_equal(sheared, np.asarray(img)) and (sheared == 0).all(-1).any()  # black wedges
    out = _view2(
        _quiet(branch_weights=[1, 0, 0], hflip_p=1.0, vflip_p=1.0, crop_scale=[1.0, 1.0], crop_ratio=[1.0, 1.0]),
        img,
        seed=0,
    )
    assert np.array_equal(np.asarray(out), np.asarray(img)[::-1, ::-1])  # both flips of the full crop


def test_emoji_patch_is_an_opaque_box_of_the_drawn_area():
    grey = Image.new("RGB", (SIZE, SIZE), (128, 128, 128))
    for seed in range(5):
        out = np.asarray(
            separate.emoji_patch(
                grey,
                np.random.default_rng(seed),
                None,
                crop_scale=(0.08, 0.5),
                crop_ratio=(0.5, 2.0),
                box_scale=(0.08, 0.5),
                box_ratio=(0.5, 2.0),
                opacity=(1.0, 1.0),
            )
        )
        changed = (out != 128).any(-1)
        ys, xs = np.nonzero(changed)
        box_area = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        assert 0.08 * SIZE**2 * 0.6 <= box_area <= 0.5 * SIZE**2 * 1.2  # the box's area fraction (rounding)
        assert changed.sum() >= 0.9 * box_area  # transparent pixels filled: the patch covers its box


def test_text_uses_the_sources_characters_and_changes_pixels():
    grey = Image.new("RGB", (SIZE * 2, SIZE * 2), (128, 128, 128))
    out = separate.text_line(
        grey, np.random.default_rng(1), None, glyphs=(20, 20), font_size=(0.2, 0.2), x=(0.0, 0.0), y=(0.3, 0.3)
    )
    assert (np.asarray(out) != 128).any()
    assert set(separate.TEXT_ALPHABET) == set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ")


def test_invert_posterize_solarize_cartoon():
    img = _image(SIZE, SIZE)
    a = np.asarray(img).astype(int)
    assert np.array_equal(np.asarray(separate.invert(img, None, None)), 255 - a)
    assert (np.asarray(separate.posterize(img, None, None, bits=2)) % 64 == 0).all()  # 2 bits: 4 levels
    sol = np.asarray(separate.solarize(img, None, None, threshold=192.0)).astype(int)
    assert np.array_equal(sol, np.where(a >= 192, 255 - a, a))
    cartoon = np.asarray(separate.cartoon(img, None, None))
    assert cartoon.shape == a.shape and not np.array_equal(cartoon, a)


def test_photometric_steps_forced_on_change_the_view():
    img = _image()
    base = _quiet(branch_weights=[1, 0, 0])
    plain = np.asarray(_view2(base, img, seed=7))
    for step in ("invert_p", "posterize_p", "solarize_p", "jitter_p", "blur_p", "cartoon_p"):
        assert not np.array_equal(np.asarray(_view2({**base, step: 1.0}, img, seed=7)), plain), step


def test_policy_builds_from_the_experiment_config():
    cfg = compose_config("train", ["experiment=separate_retriever", f"data.train_size={SIZE}"])
    view1, view2 = instantiate(cfg.augmentation)
    img = _image()
    assert view1(img).shape == view2(img, other=lambda: _image(50, 50, 3)).shape == (3, SIZE, SIZE)


# ------------------------------------------------------------------------------------------------ stage 2


def test_stage2_view2_runs_every_branch_and_is_grey():
    cfg = compose_config("train", ["experiment=separate_retriever_stage2", f"data.train_size={SIZE}"])
    view1, view2 = instantiate(cfg.augmentation)
    assert view2.needs_other_images and not view1.needs_other_images
    for seed in range(9):
        out = np.asarray(
            view2.augment(_image(seed=seed), np.random.default_rng(seed), Context(lambda: _image(70, 90, 9)))
        )
        assert out.shape == (SIZE, SIZE, 3)
        assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


@pytest.mark.parametrize(
    "factory", [separate.albumentations_1_0_3_pixel_ops, separate.albumentations_1_0_3_spatial_ops]
)
def test_albumentations_ops_at_the_sources_defaults_run(factory):
    img = _image(SIZE, SIZE)
    for name in factory():
        one = separate.AlbumentationsOneOf([name], factory)
        out = np.asarray(one(img, np.random.default_rng(0), None))
        assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.uint8, name
        assert np.isfinite(out).all(), name
    with pytest.raises(ValueError, match="unknown albumentations ops"):
        separate.AlbumentationsOneOf(["Blurr"], factory)


def test_stage2_overlay_is_translucent_and_returns_its_centre():
    white = Image.new("RGB", (40, 40), (255, 255, 255))
    out, centre = separate.overlay_stage2(
        white,
        np.random.default_rng(0),
        Context(),
        size=SIZE,
        scale=(0.25, 0.25),
        ratio=(1.0, 1.0),
        opacity=(0.5, 0.5),
        crop_p=0.0,
        crop_scale=(1, 1),
        crop_ratio=(1, 1),
        black=True,
    )
    a = np.asarray(out)[..., 0]
    ys, xs = np.nonzero(a)
    assert set(np.unique(a)) == {0, 127}  # white at opacity 0.5 on black
    assert centre == ((xs.min() + xs.max() + 1) // 2, (ys.min() + ys.max() + 1) // 2)


def test_opaque_emoji_keeps_clear_of_the_overlay_centre():
    grey = Image.new("RGB", (SIZE, SIZE), (128, 128, 128))
    centre = (SIZE // 2, SIZE // 2)
    for seed in range(10):
        out = np.asarray(
            separate.emoji_patch(
                grey,
                np.random.default_rng(seed),
                None,
                crop_scale=(0.08, 0.5),
                crop_ratio=(0.5, 2.0),
                box_scale=(0.08, 0.5),
                box_ratio=(0.5, 2.0),
                opacity=(1.0, 1.0),
                avoid=centre,
            )
        )
        assert (out[centre[1], centre[0]] == 128).all()
