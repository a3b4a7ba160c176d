"""Local-feature verification (isc_research.match.local): a true edited copy outranks unrelated images, mirror handling,
the keypoint cache, imgFp's match counting."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
from PIL import Image

from isc_research.augment.edits import EDITS, EditContext
from isc_research.match.local import LocalFeatureVerifier


def photo(name: str, side: int = 256) -> Image.Image:
    image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    image.thumbnail((side, side))
    return image


@pytest.fixture(scope="module")
def images():
    source = photo("astronaut")
    rng = np.random.default_rng(0)
    copies = {}
    for name in ("rotate", "crop", "overlay_text", "perspective", "hflip"):
        copies[name] = EDITS[name](source, np.random.default_rng(rng.integers(1 << 31)), EditContext())
    unrelated = [photo(n) for n in ("coffee", "chelsea", "rocket")]
    return source, copies, unrelated


@pytest.mark.parametrize(
    "kwargs",
    [
        {"feature": "sift"},
        {"feature": "sift", "score": "matches"},  # imgFp: count of ratio-test matches (RECIPES §7)
        {"feature": "sift", "model": "affine"},
        {"feature": "sift", "score": "contained_inliers"},
        {"feature": "orb", "n_features": 1000},
    ],
)
def test_an_edited_copy_outranks_unrelated_images(images, kwargs):
    source, copies, unrelated = images
    verifier = LocalFeatureVerifier(**kwargs)
    for name, copy in copies.items():
        scores = verifier.score_pairs([copy] * 4, [source, *unrelated])
        assert scores[0] > scores[1:].max(), (name, scores.tolist())
        assert scores[0] >= 5, (name, scores.tolist())


def test_mirrored_copies_need_mirror_matching(images):
    source, copies, _ = images
    flipped = copies["hflip"]
    assert LocalFeatureVerifier(mirror=True).pair_score(flipped, source) > 5 * max(
        1.0, LocalFeatureVerifier(mirror=False).pair_score(flipped, source)
    )


def test_keypoints_are_cached_by_content_and_scores_are_deterministic(images):
    source, copies, unrelated = images
    verifier = LocalFeatureVerifier(mirror=False)
    first = verifier.score_pairs(list(copies.values()), [source] * len(copies))
    assert verifier.cache_misses == len(copies) + 1  # the reference is described once
    again = verifier.score_pairs(list(copies.values()), [source.copy()] * len(copies))
    assert verifier.cache_misses == len(copies) + 1 and again.tolist() == first.tolist()
    small = LocalFeatureVerifier(mirror=False, cache_size=2)
    small.score_pairs(list(copies.values()), [source] * len(copies))
    assert len(small._cache) == 2


def test_images_without_keypoints_score_zero():
    flat = Image.new("RGB", (64, 64), (120, 120, 120))
    verifier = LocalFeatureVerifier()
    assert verifier.score_pairs([flat, flat], [flat, photo("coffee")]).tolist() == [0.0, 0.0]


def test_bad_parameters():
    with pytest.raises(ValueError, match="feature='surf' is unknown"):
        LocalFeatureVerifier("surf")
    with pytest.raises(ValueError, match="score='votes' is unknown"):
        LocalFeatureVerifier(score="votes")
    with pytest.raises(ValueError, match="ratio must be in"):
        LocalFeatureVerifier(ratio=1.5)
    with pytest.raises(ValueError, match="2 queries but 1 references"):
        LocalFeatureVerifier().score_pairs([photo("coffee")] * 2, [photo("coffee")])
