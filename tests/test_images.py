"""isc_research.images: every odd image flavour loads as 8-bit RGB; every broken file raises ImageLoadError."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from PIL import Image

from isc_research.images import ImageLoadError, image_size, load_image, to_rgb

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def _two_colour(w: int = 40, h: int = 20) -> Image.Image:
    """Left half red, right half blue."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = RED
    a[:, w // 2 :] = BLUE
    return Image.fromarray(a, "RGB")


def _rgb(im: Image.Image) -> np.ndarray:
    assert im.mode == "RGB"
    return np.asarray(im).astype(int)


def _mode_and_size(path) -> tuple[str, tuple[int, int]]:
    with Image.open(path) as im:
        return im.mode, im.size


def _close(px, colour, tol: int = 24) -> bool:
    return bool(np.all(np.abs(np.asarray(px, int) - np.asarray(colour)) <= tol))


@pytest.mark.parametrize(
    "fmt,ext", [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("BMP", "bmp"), ("TIFF", "tif")]
)
def test_common_formats_load_as_rgb(tmp_path, fmt, ext):
    path = tmp_path / f"img.{ext}"
    _two_colour().save(path, fmt)
    a = _rgb(load_image(path))
    assert a.shape == (20, 40, 3)
    assert _close(a[10, 5], RED) and _close(a[10, 35], BLUE)


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    _two_colour().convert("CMYK").save(path, "JPEG", quality=95)
    assert _mode_and_size(path)[0] == "CMYK"
    a = _rgb(load_image(path))
    assert _close(a[10, 5], RED, 40) and _close(a[10, 35], BLUE, 40)


def test_palette_with_and_without_transparency(tmp_path):
    p = Image.new("P", (10, 10), 0)
    p.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    p.paste(1, (0, 0, 5, 10))
    p.paste(2, (5, 0, 10, 5))  # index 0 (black) remains at the bottom right
    p.save(tmp_path / "t.png", transparency=0)
    p.save(tmp_path / "o.gif")
    t = _rgb(load_image(tmp_path / "t.png"))
    assert tuple(t[2, 2]) == RED and tuple(t[2, 7]) == BLUE and tuple(t[8, 8]) == WHITE  # transparent -> white
    o = _rgb(load_image(tmp_path / "o.gif"))
    assert tuple(o[2, 2]) == RED and tuple(o[8, 8]) == (0, 0, 0)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_composited_onto_white(tmp_path, mode):
    a = np.zeros((10, 30, 4), np.uint8)
    a[..., :3] = (200, 0, 0) if mode == "RGBA" else (60, 60, 60)
    a[:, :10, 3] = 255
    a[:, 10:20, 3] = 0
    a[:, 20:, 3] = 128
    Image.fromarray(a, "RGBA").convert(mode).save(tmp_path / "a.png")
    out = _rgb(load_image(tmp_path / "a.png"))
    c = np.asarray(Image.fromarray(a, "RGBA").convert(mode).convert("RGBA"))[0, 0, :3].astype(int)
    assert _close(out[5, 5], c, 1)
    assert tuple(out[5, 15]) == WHITE
    assert _close(out[5, 25], (c * 128 + 255 * 127) / 255, 2)


@pytest.mark.parametrize("fmt,dtype", [("PNG", "<u2"), ("TIFF", ">u2"), ("TIFF", "<i4")])
def test_16bit_grey_is_scaled_not_clipped(tmp_path, fmt, dtype):
    ramp16 = (np.arange(256) * 257).astype(dtype)[None].repeat(3, 0)  # 0 .. 65535
    path = tmp_path / f"g16.{fmt.lower()}"
    Image.fromarray(ramp16).save(path, fmt)
    assert _mode_and_size(path)[0] in ("I;16", "I;16B", "I;16L", "I")
    out = _rgb(load_image(path))
    np.testing.assert_array_equal(out[1, :, 0], np.arange(256))  # the 8-bit ramp, not saturated at 255
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_one_bit_and_greyscale(tmp_path):
    bits = Image.fromarray((np.indices((8, 8)).sum(0) % 2 * 255).astype(np.uint8), "L").convert("1")
    bits.save(tmp_path / "b.png")
    out = _rgb(load_image(tmp_path / "b.png"))
    assert set(np.unique(out)) == {0, 255} and (out[..., 0] == out[..., 2]).all()
    Image.fromarray(np.arange(256, dtype=np.uint8)[None].repeat(2, 0), "L").save(tmp_path / "l.png")
    out = _rgb(load_image(tmp_path / "l.png"))
    np.testing.assert_array_equal(out[0, :, 1], np.arange(256))


def test_exif_orientation_applied(tmp_path):
    path = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    _two_colour(40, 20).save(path, "JPEG", quality=95, exif=exif)
    assert _mode_and_size(path)[1] == (40, 20)
    a = _rgb(load_image(path))
    assert a.shape == (40, 20, 3)  # width and height swapped
    assert _close(a[5, 10], RED) and _close(a[35, 10], BLUE)  # left half is now on top
    assert image_size(path) == (20, 40)


def test_image_size_reads_header(tmp_path):
    _two_colour(33, 17).save(tmp_path / "s.png")
    assert image_size(tmp_path / "s.png") == (33, 17)


@pytest.mark.parametrize("case", ["empty", "truncated", "random", "missing", "directory"])
def test_broken_files_raise_with_file_name(tmp_path, case):
    path = tmp_path / f"broken_{case}.jpg"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(tmp_path / "full.jpg", quality=95)
        data = (tmp_path / "full.jpg").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "random":
        path.write_bytes(os.urandom(4096))
    elif case == "directory":
        path.mkdir()
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    msg = str(info.value)
    assert path.name in msg and info.value.path == str(path)
    assert {
        "empty": "empty",
        "truncated": "truncated",
        "random": "recognised",
        "missing": "does not exist",
        "directory": "not a regular file",
    }[case] in msg
    assert isinstance(info.value, ValueError)


def test_truncated_loading_does_not_change_global_setting(tmp_path):
    from PIL import ImageFile

    before = ImageFile.LOAD_TRUNCATED_IMAGES
    Image.new("RGB", (64, 64), RED).save(tmp_path / "x.jpg")
    (tmp_path / "t.jpg").write_bytes((tmp_path / "x.jpg").read_bytes()[:300])
    with pytest.raises(ImageLoadError):
        load_image(tmp_path / "t.jpg")
    assert ImageFile.LOAD_TRUNCATED_IMAGES == before


def test_decompression_bomb(tmp_path, monkeypatch):
    Image.new("RGB", (200, 200)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40,000 px > 2 x limit -> DecompressionBombError
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_image(tmp_path / "bomb.png")


def test_draft_size_decodes_big_jpeg_smaller(tmp_path):
    path = tmp_path / "big.jpg"
    y, x = np.mgrid[0:1500, 0:2000]
    Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)).save(path, quality=85)
    assert load_image(path).size == (2000, 1500)
    small = load_image(path, draft_size=256)
    assert small.mode == "RGB" and small.size[0] < 2000 and min(small.size) >= 256
    assert small.size == (500, 375)  # 1/4 scale: the largest reduction keeping both sides >= 256
    Image.new("RGB", (600, 400)).save(tmp_path / "big.png")
    assert load_image(tmp_path / "big.png", draft_size=64).size == (600, 400)  # non-JPEG: full size


def test_error_is_picklable_and_accepts_a_plain_message():
    e = pickle.loads(pickle.dumps(ImageLoadError("a/b.jpg", "file is truncated", "Re-download it.")))
    assert isinstance(e, ImageLoadError) and e.path == "a/b.jpg" and "b.jpg" in str(e) and "Re-download" in str(e)
    wrapped = ImageLoadError(f"{e} (set skip_bad_images=true to skip it)")  # ValueError-style re-raise
    assert wrapped.path is None and str(wrapped).startswith("cannot load image 'a/b.jpg'")
    assert str(pickle.loads(pickle.dumps(wrapped))) == str(wrapped)


def test_to_rgb_float_image():
    f = Image.fromarray(np.linspace(0, 1, 11, dtype=np.float32)[None])
    np.testing.assert_allclose(_rgb(to_rgb(f))[0, :, 0], np.linspace(0, 255, 11), atol=1)
