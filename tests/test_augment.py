"""Augmentation policies: every policy on odd inputs, determinism under a seed, the AugLy equivalents
pixel for pixel, the fast ops against the AugLy/torchvision ops they replace, mixup/CutMix, the PNG grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from PIL import Image, ImageFilter, ImageFont

import augly.image.functional as AF
from isc_research.augment import ops
from isc_research.augment.augly_compat import _multiline_size, meme_format, perspective_transform
from isc_research.augment.compose import Context, PolicyView
from isc_research.augment.grid import save_new
from isc_research.augment.mixup import BatchMix, cutmix_box
from isc_research.data.datasets import TrainingViews
from isc_research.data.records import ImageRecord
from tests.conftest import CONF, compose_config

POLICIES = sorted(p.stem for p in (CONF / "augmentation").glob("*.yaml"))
SIZE = 32


def _policy_views(name: str, size: int = SIZE) -> list:
    cfg = compose_config("train", [f"augmentation={name}", f"data.train_size={size}"])
    policy = instantiate(cfg.augmentation)
    return list(policy) if isinstance(policy, tuple) else [policy]


def _apply(view, image: Image.Image, other: Image.Image) -> torch.Tensor:
    return view(image, other=lambda: other) if getattr(view, "needs_other_images", False) else view(image)


def _gradient(w: int = 160, h: int = 120) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    return Image.fromarray(np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], -1).astype(np.uint8))


def _odd_inputs() -> dict[str, Image.Image]:
    rgb = _gradient()
    return {
        "1x1": Image.new("RGB", (1, 1), (10, 200, 30)),
        "3x3": Image.new("RGB", (3, 3), (200, 10, 30)),
        "strip_1x300": rgb.resize((1, 300)),
        "strip_300x1": rgb.resize((300, 1)),
        "strip_2x500": rgb.resize((2, 500)),
        "grayscale_L": rgb.convert("L"),
        "palette_P": rgb.convert("P"),
        "rgba": rgb.convert("RGBA"),
        "la": rgb.convert("LA"),
        "16bit": Image.fromarray((np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)),
        "cmyk": rgb.convert("CMYK"),
        "huge_4000x3000": rgb.resize((4000, 3000)),
    }


@pytest.mark.parametrize("name", POLICIES)
def test_policy_survives_odd_inputs(name):
    torch.manual_seed(0)
    views = _policy_views(name)
    other = _gradient(90, 140)
    for label, image in _odd_inputs().items():
        for _ in range(3):
            for view in views:
                out = _apply(view, image, other)
                assert out.shape == (3, SIZE, SIZE) and out.dtype == torch.float32, (label, out.shape)
                assert torch.isfinite(out).all(), label


@pytest.mark.parametrize("name", POLICIES)
def test_policy_is_deterministic_under_a_seed(name):
    views = _policy_views(name)
    image, other = _gradient(), _gradient(90, 140).transpose(Image.FLIP_LEFT_RIGHT)

    def run(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return torch.stack([_apply(v, image, other) for _ in range(4) for v in views])

    assert torch.equal(run(1), run(1))
    if name != "none":
        assert not torch.equal(run(1), run(2))


def test_views_in_dataloader_workers_repeat_with_the_same_seed(tmp_path):
    paths = []
    for i in range(6):
        path = tmp_path / f"{i}.jpg"
        _gradient(100 + 10 * i, 80).save(path)
        paths.append(path)
    records = [ImageRecord(str(i), "training", p) for i, p in enumerate(paths)]
    dataset = TrainingViews(
        records,
        instantiate(compose_config("train", ["augmentation=lyakaap_v98", f"data.train_size={SIZE}"]).augmentation),
    )

    def epoch(seed: int) -> torch.Tensor:
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=3, num_workers=2, generator=torch.Generator().manual_seed(seed)
        )
        return torch.cat([batch["views"] for batch in loader])

    assert torch.equal(epoch(5), epoch(5))
    assert not torch.equal(epoch(5), epoch(6))


def test_overlay_policies_draw_other_images():
    calls = []

    def other():
        calls.append(1)
        return Image.new("RGB", (50, 50), (0, 0, 255))

    cfg = compose_config(
        "train",
        [
            "augmentation=s_square",
            f"data.train_size={SIZE}",
            "augmentation.p.overlay=1.0",
            "augmentation.intensity=1.0",
        ],
    )
    _, query = instantiate(cfg.augmentation)
    assert query.needs_other_images
    torch.manual_seed(0)
    query(_gradient(), other=other)
    assert calls
    with pytest.raises(ValueError, match="other"):
        query(_gradient())


def test_s_square_intensity_zero_disables_the_scaled_steps():
    cfg = compose_config("train", ["augmentation=s_square", f"data.train_size={SIZE}", "augmentation.intensity=0.0"])
    _, query = instantiate(cfg.augmentation)
    probabilities = {getattr(op.op, "func", op.op).__name__: op.p for op in query.ops.ops}
    assert probabilities["random_rotation"] == 0.0 and probabilities["meme_unless_overlaid"] == 0.0
    assert probabilities["scale"] == pytest.approx(0.10) and probabilities["hflip"] == pytest.approx(0.5)
    with pytest.raises(InstantiationException, match="intensity must be in"):
        instantiate(compose_config("train", ["augmentation=s_square", "augmentation.intensity=1.5"]).augmentation)
    with pytest.raises(InstantiationException, match="missing from augmentation.p: .'meme'"):
        instantiate(compose_config("train", ["augmentation=s_square", "~augmentation.p.meme"]).augmentation)


# ----------------------------------------------------------------------------- AugLy working equivalents


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # AugLy's np.matrix
def test_perspective_transform_matches_augly_pixel_for_pixel(monkeypatch):
    monkeypatch.setattr(np, "float", float, raising=False)  # what AugLy 1.0.0 needs, gone since NumPy 1.24
    image = _gradient()
    for sigma, crop in ((10.0, False), (25.0, False), (8.0, True)):
        expected = AF.perspective_transform(image, sigma=sigma, seed=3, crop_out_black_border=crop)
        got = perspective_transform(image, sigma=sigma, rng=np.random.RandomState(3), crop_out_black_border=crop)
        assert got.size == expected.size
        assert np.array_equal(np.asarray(got), np.asarray(expected))


def test_augly_perspective_still_crashes_without_the_shim():
    if hasattr(np, "float"):
        pytest.skip("this NumPy still has np.float")
    with pytest.raises(AttributeError):
        AF.perspective_transform(_gradient(), sigma=10.0)


def test_meme_format_matches_augly_pixel_for_pixel(monkeypatch):
    # Pillow >= 10 removed FreeTypeFont.getsize_multiline; give AugLy the same measurement we use.
    monkeypatch.setattr(ImageFont.FreeTypeFont, "getsize_multiline", _multiline_size, raising=False)
    image = _gradient(200, 150)
    for text, height in (("LOL", 60), ("two\nlines", 80), ("a much longer caption here", 40)):
        expected = AF.meme_format(image, text=text, caption_height=height, text_color=(10, 20, 30))
        got = meme_format(image, text=text, caption_height=height, text_color=(10, 20, 30))
        assert got.size == (200, 150 + height)
        assert np.array_equal(np.asarray(got), np.asarray(expected))


def test_meme_text_fits_its_band():
    image = _gradient(120, 90)
    out = np.asarray(meme_format(image, text="WIDE CAPTION TEXT", caption_height=30), dtype=int)
    band = out[:30]
    assert (band < 128).any()  # text was drawn
    assert np.array_equal(out[30:], np.asarray(image))  # the image is untouched below the band


# ------------------------------------------------------------------------- fast ops vs the ops they replace


def test_rotate_and_crop_matches_augly_rotate():
    image = _gradient(400, 300)
    for degrees in (10, 35, 90, 137, 200, 330):
        expected = AF.rotate(image, degrees=degrees)
        got = ops.rotate_and_crop(image, degrees)
        assert abs(got.width - expected.width) <= 1 and abs(got.height - expected.height) <= 1
        diff = np.abs(np.asarray(expected.resize(got.size), float) - np.asarray(got, float)).mean(axis=(0, 1))
        assert diff.max() < 1.5, (degrees, diff)  # bilinear vs AugLy's nearest-neighbour on a smooth image


def test_perspective_matches_torchvision_pixel_for_pixel():
    """ops.perspective is torchvision's RandomPerspective on a PIL image: the same corners (drawn here from the same
    seed) warped by torchvision's perspective give the same pixels, but for a few on the warp's edge (torchvision
    solves for the coefficients with lstsq, AugLy's formula with the normal equations: they differ in the last
    bits, which flips a pixel lying exactly on the border in or out)."""
    image = _gradient(160, 120)
    w, h = image.size
    for seed, scale in ((0, 0.5), (1, 0.3), (2, 0.9)):
        got = ops.perspective(image, np.random.default_rng(seed), scale)
        rng, dw, dh = np.random.default_rng(seed), int(scale * w / 2), int(scale * h / 2)
        a, b, c, d, e, f, g, k = (int(rng.integers(0, lim + 1)) for lim in (dw, dh, dw, dh, dw, dh, dw, dh))
        start = [[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]
        end = [[a, b], [w - 1 - c, d], [w - 1 - e, h - 1 - f], [g, h - 1 - k]]
        expected = TF.perspective(image, start, end, interpolation=TF.InterpolationMode.BILINEAR)
        assert not np.array_equal(np.asarray(got), np.asarray(image))
        differs = (np.asarray(got) != np.asarray(expected)).any(axis=-1)
        assert differs.mean() < 2e-4, (seed, differs.sum())


def test_enhance_is_augly_color_jitter_pixel_for_pixel():
    image = _gradient(120, 90)
    for factors in ((0.6, 1.4, 0.0), (1.5, 0.7, 2.0), (1.0, 1.0, 1.0)):
        b, c, s = factors
        expected = AF.color_jitter(image, brightness_factor=b, contrast_factor=c, saturation_factor=s)
        assert np.array_equal(np.asarray(ops.enhance(image, *factors)), np.asarray(expected)), factors


def test_colour_jitter_blends_match_torchvision():
    """Each of ColorJitter's factors alone (drawn as color_jitter draws it) gives torchvision's pixels, to the
    rounding: albumentations' saturation blend (cv2.addWeighted) rounds where torchvision truncates (≤ 2 levels,
    under 1 on average, against a factor drawn in [0.3, 1.7])."""
    image = _gradient()
    a = np.array(image)
    tensor = torch.from_numpy(a).permute(2, 0, 1)
    adjust = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    for component in range(3):
        for seed in range(3):
            strengths = [0.0, 0.0, 0.0, 0.0]
            strengths[component] = 0.7
            got = np.asarray(ops.color_jitter(image, np.random.default_rng(seed), *strengths), int)
            draws = np.random.default_rng(seed)
            draws.permutation(4)
            expected = adjust[component](tensor, float(draws.uniform(0.3, 1.7))).permute(1, 2, 0).numpy()
            diff = np.abs(got - expected)
            assert diff.max() <= (2 if component == 2 else 1) and diff.mean() < (1 if component == 2 else 0.5), seed
    for shift in (-0.2, 0.05, 0.2):
        expected = np.asarray(TF.adjust_hue(image, shift), int)
        assert np.abs(ops._shift_hue(a, shift).astype(int) - expected).mean() < 2.0


def test_colour_jitter_applies_all_four_in_random_order():
    rng = np.random.default_rng(0)
    image = _gradient()
    assert np.array_equal(np.asarray(ops.color_jitter(image, rng, 0, 0, 0, 0)), np.asarray(image))
    outs = {ops.color_jitter(image, np.random.default_rng(s), 0.5, 0.5, 0.5, 0.1).tobytes() for s in range(5)}
    assert len(outs) == 5


def test_pixelize_pad_jpeg_paste_equal_augly():
    image, top = _gradient(), _gradient(60, 90).convert("RGBA")
    assert np.array_equal(np.asarray(ops.pixelize(image, 0.3)), np.asarray(AF.pixelization(image, ratio=0.3)))
    assert np.array_equal(
        np.asarray(ops.pad(image, 0.1, 0.2, (1, 2, 3))),
        np.asarray(AF.pad(image, w_factor=0.1, h_factor=0.2, color=(1, 2, 3))),
    )
    assert np.array_equal(np.asarray(ops.jpeg(image, 20)), np.asarray(AF.encoding_quality(image, quality=20)))
    expected = AF.overlay_image(image, overlay=top, opacity=0.6, overlay_size=0.5, x_pos=0.2, y_pos=0.3).convert("RGB")
    assert np.array_equal(np.asarray(ops.paste(image, top, 0.5, 0.6, 0.2, 0.3)), np.asarray(expected))
    opaque = np.asarray(AF.opacity(image, level=0.4).convert("RGB"), int)
    assert np.abs(np.asarray(ops.opacity(image, 0.4), int) - opaque).max() <= 1


def test_blurs_and_channel_ops_match_their_definitions():
    image = _gradient()
    a = np.asarray(image, int)
    for sigma in (0.6, 2.5):  # torchvision's GaussianBlur with a ±3σ kernel; AugLy's PIL blur of that radius
        kernel = 2 * int(round(3 * sigma)) + 1
        chw = torch.from_numpy(a.astype(np.uint8)).permute(2, 0, 1)
        expected = TF.gaussian_blur(chw, [kernel, kernel], [sigma, sigma]).permute(1, 2, 0).numpy()
        assert np.abs(np.asarray(ops.gaussian_blur_sigma(image, sigma), int) - expected).max() <= 1
        pil = np.asarray(image.filter(ImageFilter.GaussianBlur(sigma)), int)
        assert np.abs(np.asarray(ops.blur(image, sigma), int) - pil).mean() < 0.5
    assert ops.blur(image, 0.0) is image
    assert np.array_equal(np.asarray(ops.channel_invert(image)), 255 - a)
    draws = np.random.default_rng(3)  # color_swap's draws: permutations until one is not the identity
    while (order := [int(i) for i in draws.permutation(3)]) == [0, 1, 2]:
        pass
    assert np.array_equal(np.asarray(ops.channel_swap(image, np.random.default_rng(3))), a[..., order])
    shifts = np.random.default_rng(4).integers(-40, 41, 3)
    assert np.array_equal(np.asarray(ops.channel_shift(image, np.random.default_rng(4))), np.clip(a + shifts, 0, 255))


def test_shuffle_pixels_moves_only_the_chosen_fraction():
    image = Image.fromarray(np.arange(100 * 3, dtype=np.uint8).reshape(10, 10, 3))
    out = np.asarray(ops.shuffle_pixels(image, np.random.default_rng(0), 0.3)).reshape(-1, 3)
    before = np.asarray(image).reshape(-1, 3)
    assert sorted(map(tuple, out)) == sorted(map(tuple, before))  # a permutation of the pixels
    assert (out != before).any(axis=1).sum() <= 30


def test_text_draws_and_fits_inside():
    image = Image.new("RGB", (120, 60), (255, 255, 255))
    out = ops.text(
        image,
        np.random.default_rng(1),
        lines=(1, 1),
        glyphs=(40, 40),
        font_size=(0.5, 0.5),
        x=(0.5, 0.5),
        y=(0.1, 0.1),
        fit=True,
    )
    changed = (np.asarray(out) != 255).any(axis=2)
    assert changed.sum() > 20
    assert not changed[:, :55].any()  # nothing left of the start position


def test_policy_view_shrinks_big_images_before_the_ops():
    seen = []

    def record(img, rng, ctx):
        seen.append(img.size)
        return img

    PolicyView([record], size=32, work_side=64)(Image.new("RGB", (1000, 500)))
    assert seen == [(64, 32)]
    assert Context().flags == set()


# ----------------------------------------------------------------------------------------- mixup / CutMix


def test_batch_mix_labels_and_pixels():
    torch.manual_seed(0)
    images = torch.arange(6, dtype=torch.float32)[:, None, None, None].expand(6, 3, 8, 8).clone()
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    out, pairs = BatchMix(prob=1.0, switch_prob=0.0)(images, labels)  # mixup everywhere
    assert pairs.shape == (6, 2) and torch.equal(pairs[:, 0], labels)
    assert torch.equal(pairs[:, 1], labels.flip(0))
    for i in range(6):  # a convex combination of the image and its mirror
        lam = (out[i, 0, 0, 0] - (5 - i)) / (i - (5 - i)) if i != 5 - i else 1.0
        assert torch.allclose(out[i], lam * images[i] + (1 - lam) * images[5 - i])
    out, pairs = BatchMix(prob=0.0)(images, labels)
    assert torch.equal(out, images) and (pairs[:, 1] == -1).all()
    torch.manual_seed(1)
    out, _ = BatchMix(prob=1.0, switch_prob=1.0)(images, labels)  # CutMix: pixels come from one of the two
    for i in range(6):
        assert set(out[i].unique().tolist()) <= {float(i), float(5 - i)}


def test_cutmix_box_area():
    torch.manual_seed(0)
    y0, y1, x0, x1 = cutmix_box(0.75, 100, 100)
    assert 0 <= y0 < y1 <= 100 and 0 <= x0 < x1 <= 100
    assert (y1 - y0) * (x1 - x0) <= 0.25 * 100 * 100 + 1


def test_batch_mix_rejects_bad_parameters():
    with pytest.raises(ValueError, match="prob"):
        BatchMix(prob=1.5)
    with pytest.raises(ValueError, match="alpha"):
        BatchMix(mixup_alpha=0)


# ----------------------------------------------------------------------------------------- isc-show-augs


SMOKE_DATASET = [
    "dataset.build.n_references=24",
    "dataset.build.n_training=48",
    "dataset.build.n_queries=16",
    "dataset.build.image_size=96",
]  # the debug=smoke mini-DISC, shared with the other tests


def test_show_augs_writes_a_grid_and_never_overwrites(data_dir, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "grid.png"
    cmd = [
        sys.executable,
        "-m",
        "isc_research.cli.show_augs",
        "augmentation=lyakaap_v98",
        f"paths.data_dir={data_dir}",
        f"paths.output_dir={tmp_path / 'run'}",
        *SMOKE_DATASET,
        "show.n_images=3",
        "show.draws=2",
        "show.cell=64",
        f"show.out={out}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    grid = Image.open(out)
    assert grid.size == (64 * (1 + 2 * 2), 2 * 22 + 3 * 64)  # original + 2 draws × 2 views; title + labels
    pixels = np.asarray(grid.convert("L"))
    assert pixels[44:, 64:].std() > 10  # the views hold pictures, not blank cells
    with pytest.raises(FileExistsError, match="exists"):
        save_new(grid, out)  # what a second run with the same show.out hits


def test_module_mixes_views_but_not_extra_negatives():
    from isc_research.module import training_inputs

    images = torch.arange(6, dtype=torch.float32)[:, None, None, None].expand(6, 3, 4, 4).clone()
    batch = {
        "views": images[:4].reshape(2, 2, 3, 4, 4),
        "label": torch.tensor([0, 1]),  # 4 views of 2 images
        "negatives": images[4:].reshape(2, 1, 3, 4, 4),
        "negative_label": torch.tensor([[100], [101]]),
    }
    torch.manual_seed(0)
    mixed, pairs = training_inputs(batch, BatchMix(prob=1.0, switch_prob=0.0))
    assert torch.equal(pairs[4:], torch.tensor([[100, -1], [101, -1]])) and torch.equal(mixed[4:], images[4:])
    assert torch.equal(pairs[:4, 1], torch.tensor([1, 1, 0, 0]))
    with pytest.raises(ValueError, match="one label per training image"):
        BatchMix()(images, torch.zeros(6, 2, dtype=torch.long))


def test_sscd_mixup_trains_end_to_end(smoke_cfg, monkeypatch):
    """batch_mix=sscd reaches every training batch: the loss gets the mixed images' two labels."""
    import math

    from isc_research.train import train

    mixed = []
    call = BatchMix.__call__

    def counting(self, images, labels):
        out, pairs = call(self, images, labels)
        mixed.append(int((pairs[:, 1] >= 0).sum()))
        return out, pairs

    monkeypatch.setattr(BatchMix, "__call__", counting)
    metrics = train(
        smoke_cfg(
            "augmentation=sscd_advanced",
            "batch_mix=sscd",
            "batch_mix.prob=0.5",
            "loss=infonce_entropy",
            "trainer.max_epochs=1",
            "validate_before_training=false",
        )
    )
    assert math.isfinite(metrics["train/loss"]) and "val/uAP" in metrics
    assert len(mixed) >= 2 and sum(mixed) > 0  # every step mixed its batch (the smoke epoch has several)


def test_emoji_size_and_opacity_draws_are_capped_at_one():
    """S-square draws both as min(1, a + u) (AugsDS_v13): a range reaching past 1 gives 1, not a larger paste."""
    img = Image.new("RGB", (64, 48), (10, 200, 30))
    capped = ops.emoji(img, np.random.default_rng(3), (1.5, 1.5), (1.7, 1.7), inside=False)
    one = ops.emoji(img, np.random.default_rng(3), (1.0, 1.0), (1.0, 1.0), inside=False)
    assert capped.size == img.size and np.array_equal(np.asarray(capped), np.asarray(one))
    assert not np.array_equal(np.asarray(one), np.asarray(img))
