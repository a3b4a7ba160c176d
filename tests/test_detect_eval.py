"""isc-eval's query replacement (VisionForce, RECIPES §4): queries whose detected box is confident enough are
replaced by the crop before extraction; counted and listed. A stub detector is injected through the config's
`_target_`."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from isc_research.baselines import GreyThumbnail
from isc_research.data.datasets import crop_fraction
from isc_research.data.disc import load_disc
from isc_research.evaluate import evaluate_checkpoint
from isc_research.extract import read_descriptors
from tests.test_evaluate import eval_cfg


class StubDetector:
    """Confident (0.95) on landscape images, unsure (0.3) on the others; the box is the left half."""

    name = "stub"

    def __init__(self, ckpt_path, min_confidence, device):
        self.ckpt_path, self.min_confidence = ckpt_path, min_confidence

    def detect(self, image):
        w, h = image.size
        return [((0, 0, w // 2, h), 0.95 if w > h else 0.3), ((0, 0, w, h // 2), 0.1)]


def _stub(*more):
    return [
        "baseline=thumbnail",
        "eval.query_crop.detector_ckpt=stub.ckpt",
        "eval.query_crop.detector._target_=tests.test_detect_eval.StubDetector",
        *more,
    ]


def test_confident_queries_are_replaced_by_their_crop(data_dir, tmp_path):
    summary = evaluate_checkpoint(eval_cfg(data_dir, tmp_path / "crop", *_stub("eval.query_crop.min_confidence=0.9")))
    data = load_disc(eval_cfg(data_dir, tmp_path / "x").dataset)
    landscape = {}
    for q in data.queries:
        with Image.open(q.path) as im:
            landscape[q.id] = im.width > im.height
    expected = sorted(q for q, wide in landscape.items() if wide)
    assert 0 < len(expected) < len(landscape)
    stats = summary["query_crop"]
    assert (stats["n_queries"], stats["n_replaced"], stats["detector"]) == (len(landscape), len(expected), "stub")

    with open(tmp_path / "crop" / "query_crops.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["query_id"] for r in rows if r["replaced"] == "1") == expected
    for r in rows:
        assert float(r["confidence"]) == (0.95 if landscape[r["query_id"]] else 0.3)

    # the replaced queries' descriptors are those of the left half; the others are untouched
    ids, vectors = read_descriptors(tmp_path / "crop" / "descriptors" / "thumbnail" / "query.h5")
    plain_ids, plain = read_descriptors(evaluate_and_path(data_dir, tmp_path / "plain"))
    assert list(ids) == list(plain_ids)
    thumb = GreyThumbnail()
    for i, q in enumerate(ids):
        image = Image.open(data.queries[i].path).convert("RGB")
        want = (
            thumb(crop_fraction(image, (0, 0, (image.width // 2) / image.width, 1))) if landscape[q] else thumb(image)
        )
        np.testing.assert_allclose(vectors[i], want.numpy(), atol=1e-6)
        if landscape[q]:
            assert not np.allclose(vectors[i], plain[i], atol=1e-3)
        else:
            np.testing.assert_array_equal(vectors[i], plain[i])


def evaluate_and_path(data_dir, out):
    summary = evaluate_checkpoint(eval_cfg(data_dir, out, "baseline=thumbnail"))
    assert "query_crop" not in summary
    return out / "descriptors" / "thumbnail" / "query.h5"


def test_threshold_above_every_confidence_replaces_nothing(data_dir, tmp_path):
    summary = evaluate_checkpoint(eval_cfg(data_dir, tmp_path / "none", *_stub("eval.query_crop.min_confidence=0.99")))
    assert summary["query_crop"]["n_replaced"] == 0


def test_cached_descriptors_are_not_reused_across_crops(data_dir, tmp_path):
    cache = f"eval.descriptor_dir={tmp_path / 'cache'}"
    cached = tmp_path / "cache" / "thumbnail" / "query.h5"
    plain = evaluate_checkpoint(eval_cfg(data_dir, tmp_path / "a", "baseline=thumbnail", cache))
    cropped = evaluate_checkpoint(
        eval_cfg(data_dir, tmp_path / "b", cache, *_stub("eval.query_crop.min_confidence=0.5"))
    )
    assert cropped["query_crop"]["n_replaced"] > 0
    data = load_disc(eval_cfg(data_dir, tmp_path / "x").dataset)
    images = [Image.open(q.path).convert("RGB") for q in data.queries]
    i = next(i for i, image in enumerate(images) if image.width > image.height)  # a query the stub replaces
    crop = crop_fraction(images[i], (0, 0, (images[i].width // 2) / images[i].width, 1))
    # extracted again
    np.testing.assert_allclose(read_descriptors(cached)[1][i], GreyThumbnail()(crop).numpy(), atol=1e-6)
    # and back: a plain run after the cropped one extracts the whole query again, and scores as the first did
    again = evaluate_checkpoint(eval_cfg(data_dir, tmp_path / "c", "baseline=thumbnail", cache))
    np.testing.assert_allclose(read_descriptors(cached)[1][i], GreyThumbnail()(images[i]).numpy(), atol=1e-6)
    assert again["uAP"] == plain["uAP"]


def test_crop_fraction():
    image = Image.new("RGB", (100, 50))
    assert crop_fraction(image, (0.1, 0.2, 0.5, 1.0)).size == (40, 40)
    assert crop_fraction(image, (0.999, 0.999, 1.0, 1.0)).size == (1, 1)


def test_a_bad_threshold_is_an_error(data_dir, tmp_path):
    with pytest.raises(ValueError, match="min_confidence must be in"):
        evaluate_checkpoint(eval_cfg(data_dir, tmp_path / "bad", *_stub("eval.query_crop.min_confidence=2")))
