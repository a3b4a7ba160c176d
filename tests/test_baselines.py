"""Classical baselines: pHash and PDQ as ±1 vectors whose squared L2 distance is 4 × Hamming; the grey
thumbnail; each finds a re-encoded copy nearer than another image."""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pdqhash
import pytest
from PIL import Image, ImageEnhance

from isc_research.baselines import BaselineExtractor, GreyThumbnail, PDQ, PHash


def photo(seed: int, size=(120, 90)) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)  # smooth blocks, like a photo's low frequencies
    return Image.fromarray(small).resize(size, Image.BICUBIC)


def copy_of(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.resize((100, 75)).save(buffer, "JPEG", quality=40)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def test_phash_distance_is_four_times_imagehash_hamming():
    a, b = photo(0), photo(1)
    hamming = imagehash.phash(a) - imagehash.phash(b)
    da, db = PHash()(a).numpy(), PHash()(b).numpy()
    assert da.shape == (64,) and set(np.unique(da)) <= {-1.0, 1.0}
    assert ((da - db) ** 2).sum() == 4 * hamming


def test_pdq_bits_match_pdqhash():
    a, b = photo(2), photo(3)
    bits_a, _ = pdqhash.compute(np.asarray(a))
    bits_b, _ = pdqhash.compute(np.asarray(b))
    da, db = PDQ()(a).numpy(), PDQ()(b).numpy()
    np.testing.assert_array_equal(da > 0, bits_a.astype(bool))
    assert ((da - db) ** 2).sum() == 4 * int((bits_a != bits_b).sum())


def test_thumbnail_is_a_centred_unit_vector_invariant_to_contrast():
    image = photo(4)
    d = GreyThumbnail(16)(image).numpy()
    assert d.shape == (256,) and abs(d.mean()) < 1e-6 and np.linalg.norm(d) == pytest.approx(1.0, abs=1e-6)
    grey = np.asarray(image.convert("L").resize((16, 16), Image.BILINEAR), np.float64).ravel()
    np.testing.assert_allclose(d, (grey - grey.mean()) / np.linalg.norm(grey - grey.mean()), atol=1e-6)
    dimmer = GreyThumbnail(16)(ImageEnhance.Contrast(image).enhance(0.5)).numpy()
    assert float(d @ dimmer) > 0.99
    assert not GreyThumbnail(4)(Image.new("RGB", (8, 8), (50, 50, 50))).any()  # flat image: zero vector


@pytest.mark.parametrize("name", ["phash", "pdq", "thumbnail"])
def test_a_copy_is_nearer_than_other_images(name):
    extractor = BaselineExtractor(name)
    original = extractor.transform(photo(10)).numpy()
    copy = extractor.transform(copy_of(photo(10))).numpy()
    others = [extractor.transform(photo(s)).numpy() for s in range(20, 25)]
    d_copy = ((original - copy) ** 2).sum()
    assert all(d_copy < ((original - o) ** 2).sum() for o in others)
    assert extractor.fingerprint()["name"] == name


def test_unknown_baseline():
    with pytest.raises(ValueError, match="choose one of phash, pdq, thumbnail"):
        BaselineExtractor("sift")
