"""Matching-track fusion rules (isc_research.match.fusion) against hand-computed cases and plain-loop references, and
the
crop providers' boxes."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from isc_research.match.crops import CenterCrops, GridCrops, NoCrops, View, check_views
from isc_research.match.fusion import best_entry, combine, fuse_pairs

# pair 7: 0.9, 0.5, 0.7 (sources 0, 1, 1); pair 3: 0.2 (source 0); pair 5: 0.4, 0.6 (sources 2, 2)
KEYS = np.array([7, 3, 7, 5, 7, 5])
SCORES = np.array([0.9, 0.2, 0.5, 0.4, 0.7, 0.6])
SOURCES = np.array([0, 0, 1, 2, 1, 2])


@pytest.mark.parametrize(
    "rule, expected",
    [
        ("max", [0.2, 0.6, 0.9]),
        ("sum", [0.2, 1.0, 2.1]),  # imgFp: sum over branches
        ("top2_mean", [0.2, 0.5, 0.8]),  # D²LV: mean of the two best; a single score is kept
        ("mean", [0.2, 0.5, 0.7]),
    ],
)
def test_pair_rules_hand_computed(rule, expected):
    keys, fused, votes = fuse_pairs(KEYS, SCORES, rule)
    assert keys.tolist() == [3, 5, 7]
    assert fused == pytest.approx(expected, abs=1e-12)
    assert votes.tolist() == [1, 2, 3]


def test_votes_count_distinct_sources_and_min_votes_drops_pairs():
    keys, fused, votes = fuse_pairs(KEYS, SCORES, "max", sources=SOURCES)
    assert votes.tolist() == [1, 1, 2]  # pair 5 twice from source 2 is one vote
    keys, fused, votes = fuse_pairs(KEYS, SCORES, "top2_mean", sources=SOURCES, min_votes=2)  # D²LV: ≥ 2 of 3
    assert keys.tolist() == [7] and fused.tolist() == pytest.approx([0.8]) and votes.tolist() == [2]
    keys, _, _ = fuse_pairs(KEYS, SCORES, "max", min_votes=2)  # no sources: every entry is a vote
    assert keys.tolist() == [5, 7]


def test_pair_rules_match_a_plain_loop():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 40, 500)
    scores = rng.normal(size=500)
    sources = rng.integers(0, 3, 500)
    groups, group_sources = defaultdict(list), defaultdict(set)
    for k, s, src in zip(keys.tolist(), scores.tolist(), sources.tolist()):
        groups[k].append(s)
        group_sources[k].add(src)
    reference = {
        "max": {k: max(v) for k, v in groups.items()},
        "sum": {k: sum(v) for k, v in groups.items()},
        "mean": {k: sum(v) / len(v) for k, v in groups.items()},
        "top2_mean": {k: (sorted(v)[-1] + sorted(v)[-min(2, len(v))]) / 2 for k, v in groups.items()},
    }
    for rule, expected in reference.items():
        out_keys, fused, votes = fuse_pairs(keys, scores, rule, sources=sources, min_votes=2)
        kept = sorted(k for k in groups if len(group_sources[k]) >= 2)
        assert out_keys.tolist() == kept
        assert fused == pytest.approx([expected[k] for k in kept], abs=1e-12)
        assert votes.tolist() == [len(group_sources[k]) for k in kept]


def test_best_entry_takes_the_first_of_tied_maxima():
    keys, best = best_entry(np.array([2, 1, 2, 2, 1]), np.array([0.3, 0.5, 0.8, 0.8, 0.1]))
    assert keys.tolist() == [1, 2] and best.tolist() == [1, 2]


def test_combine_rules_hand_computed():
    d = np.array([0.9, 0.2, -0.4])
    v = np.array([3.0, 40.0, 0.0])
    assert combine(d, None, "descriptor").tolist() == d.tolist()
    assert combine(d, v, "verifier").tolist() == v.tolist()
    assert combine(d, v, "weighted", descriptor_weight=0.5, verifier_weight=0.1) == pytest.approx([0.75, 4.1, -0.2])
    assert combine(d, v, "boost", boost=2.0, threshold=3.0) == pytest.approx([2.9, 2.2, -0.4])
    # w_d < 0.5 with integer counts: inliers first, cosine breaks the ties
    ties = combine(np.array([0.1, 0.8, -0.9, 0.3]), np.array([0.0, 0.0, 1.0, 1.0]), "weighted", descriptor_weight=0.49)
    assert np.argsort(-ties).tolist() == [3, 2, 1, 0]


def test_fusion_errors_are_clear():
    with pytest.raises(ValueError, match="fusion rule 'median' is unknown"):
        fuse_pairs(KEYS, SCORES, "median")
    with pytest.raises(ValueError, match="min_votes must be >= 1"):
        fuse_pairs(KEYS, SCORES, "max", min_votes=0)
    with pytest.raises(ValueError, match="6 pair keys but 2 scores"):
        fuse_pairs(KEYS, SCORES[:2], "max")
    with pytest.raises(ValueError, match="needs verifier scores"):
        combine(SCORES, None, "verifier")
    with pytest.raises(ValueError, match="non-finite score"):
        combine(np.zeros(2), np.array([1.0, np.nan]), "weighted")
    with pytest.raises(ValueError, match="fusion.combine='max' is unknown"):
        combine(SCORES, SCORES, "max")


def test_crop_providers_boxes():
    image = Image.new("RGB", (100, 80))
    assert NoCrops().crops(image) == []
    assert GridCrops(2).crops(image) == [(0, 0, 50, 40), (50, 0, 100, 40), (0, 40, 50, 80), (50, 40, 100, 80)]
    # overlap widens each cell by a quarter cell (clipped to the image); n=1 adds nothing (the whole image)
    assert GridCrops([1, 2], overlap=0.25).crops(image)[:2] == [(0, 0, 62, 50), (38, 0, 100, 50)]
    assert len(GridCrops([2, 3]).crops(image)) == 13
    assert GridCrops(8, min_side=16).crops(image) == []  # 12×10 px cells are too small
    assert CenterCrops([0.5]).crops(image) == [(25, 20, 75, 60)]  # D²LV's [.25, .75]² centre crop
    with pytest.raises(ValueError, match="overlap must be in"):
        GridCrops(2, overlap=1.0)
    with pytest.raises(ValueError, match="fractions must lie in"):
        CenterCrops([1.5])


def test_check_boxes_clips_and_names_the_provider():
    image = Image.new("RGB", (100, 80))
    assert check_views([(-5, 10.4, 120, 50)], image, GridCrops(2)) == [View((0, 10, 100, 50), 0, True)]
    with pytest.raises(ValueError, match="'grid2' returned the empty box"):
        check_views([(50, 50, 50, 60)], image, GridCrops(2))
    with pytest.raises(ValueError, match="a box is 4 numbers"):
        check_views([(1, 2, 3)], image, GridCrops(2))
    with pytest.raises(TypeError, match="must return a list"):
        check_views(None, image, GridCrops(2))
