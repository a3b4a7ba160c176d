"""Overlay boxes: the mini-DISC's recorded boxes and the synthetic generator's boxes against the pasted pixels
(a red and a blue copy of the same edit differ exactly where the source was pasted), IoU and box recall
against hand-computed cases, and query_edits.csv parsing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from isc_research.augment.edits import COMPOSITING_EDITS, EDIT_NAMES, GEOMETRIC_EDITS, PHOTOMETRIC_EDITS, make_query
from isc_research.detect.boxes import box_iou, box_recall, clip_box, read_overlay_boxes
from isc_research.detect.synthetic import draw_edit_names, synthetic_overlay


def _pasted_region(make) -> tuple[np.ndarray, object]:
    """Pixels that differ between the red-source and the blue-source run of the same seeded edit, and the
    recorded box (asserted equal for both runs)."""
    outs, boxes = [], []
    for fill in ((255, 0, 0), (0, 0, 255)):
        image, box = make(fill)
        outs.append(np.asarray(image).astype(int))
        boxes.append(box)
    assert boxes[0] == boxes[1] and outs[0].shape == outs[1].shape
    return np.abs(outs[0] - outs[1]).sum(-1) > 150, boxes[0]


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def test_compositing_edits_are_exactly_the_edits_that_record_a_box():
    """The groups partition the edits, and COMPOSITING_EDITS is what make_query's box relies on: an edit
    records the box of the pasted content if and only if it is listed there."""
    groups = (GEOMETRIC_EDITS, COMPOSITING_EDITS, PHOTOMETRIC_EDITS)
    assert sorted(n for g in groups for n in g) == sorted(EDIT_NAMES)  # every edit in exactly one group
    background = lambda j: Image.new("RGB", (120, 90), (0, 200, 0))  # noqa: E731
    source = Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8))
    for name in EDIT_NAMES:
        _, _, box = make_query(source, np.random.default_rng(1), background, max_side=200, names=[name])
        assert (box is not None) == (name in COMPOSITING_EDITS), name


@pytest.mark.parametrize("name", ["overlay_onto_background", "screenshot"])
def test_recorded_box_is_the_pasted_content_after_the_final_resize(name):
    rng = np.random.default_rng(7)
    for seed in range(8):
        w, h = (int(v) for v in rng.integers(40, 700, 2))
        bw, bh = (int(v) for v in rng.integers(80, 900, 2))
        background = lambda j: Image.new("RGB", (bw, bh), (0, 200, 0))  # noqa: E731
        names = ["hflip", name] if seed % 2 else [name]

        def make(fill):
            q, _, box = make_query(
                Image.new("RGB", (w, h), fill), np.random.default_rng(seed), background, max_side=300, names=names
            )
            return q, box

        pasted, box = _pasted_region(make)
        assert box is not None
        # the final downscale blurs the edges by at most one pixel
        assert all(abs(a - b) <= 1 for a, b in zip(_bbox(pasted), box)), (seed, _bbox(pasted), box)
        x0, y0, x1, y1 = box
        assert pasted[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1].all()


def test_make_query_rejects_unknown_edit_names():
    with pytest.raises(ValueError, match="unknown edit names.*'sharpen'"):
        make_query(
            Image.new("RGB", (64, 64)),
            np.random.default_rng(0),
            lambda j: Image.new("RGB", (64, 64)),
            96,
            names=["sharpen"],
        )


def test_synthetic_boxes_are_inside_and_cover_the_pasted_pixels():
    background = lambda j: Image.new("RGB", (320, 240), (0, 200, 0))  # noqa: E731
    positives = 0
    for seed in range(12):

        def make(fill):
            s = synthetic_overlay(
                Image.new("RGB", (200, 150), fill),
                np.random.default_rng(seed),
                background,
                p_overlay=0.7,
                max_side=256,
                max_photometric=0,
            )
            return s.image, s.box

        pasted, box = _pasted_region(make)
        if box is None:
            continue
        positives += 1
        x0, y0, x1, y1 = box
        height, width = pasted.shape
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert not pasted[:, : max(0, x0 - 1)].any() and not pasted[:, x1 + 1 :].any()  # nothing pasted outside
        assert not pasted[: max(0, y0 - 1)].any() and not pasted[y1 + 1 :].any()
        assert pasted[y0:y1, x0:x1].mean() > 0.5  # the box is mostly pasted content (rotations leave corners)
    assert positives >= 5


def test_synthetic_samples_with_photometric_edits_keep_their_box_inside_the_image():
    other = lambda j: Image.new("RGB", (300, 200), (30 * j, 90, 160))  # noqa: E731
    source = Image.fromarray(np.random.default_rng(0).integers(0, 255, (150, 200, 3), dtype=np.uint8))
    kinds = {True: 0, False: 0}
    for seed in range(30):
        s = synthetic_overlay(source, np.random.default_rng(seed), other, p_overlay=0.5, max_side=256)
        has_compositing = bool(set(s.edits) & set(COMPOSITING_EDITS))
        assert (s.box is not None) == has_compositing
        kinds[has_compositing] += 1
        assert max(s.image.size) <= 256 and s.edits
        if s.box is not None:
            assert 0 <= s.box[0] < s.box[2] <= s.image.width and 0 <= s.box[1] < s.box[3] <= s.image.height
    assert kinds[True] >= 8 and kinds[False] >= 8


def test_edit_names_keep_the_mini_disc_order():
    rank = {n: 0 for n in GEOMETRIC_EDITS} | {n: 1 for n in COMPOSITING_EDITS} | {n: 2 for n in PHOTOMETRIC_EDITS}
    rng = np.random.default_rng(0)
    for i in range(200):
        names = draw_edit_names(rng, overlay=i % 2 == 0)
        assert names and len(set(names)) == len(names)
        order = [rank[n] for n in names]
        assert order == sorted(order)
        assert sum(n in COMPOSITING_EDITS for n in names) == (i % 2 == 0)
        assert "jpeg" not in names or names[-1] == "jpeg"


def test_box_iou_hand_computed():
    assert box_iou((0, 0, 10, 10), (5, 5, 15, 15)) == pytest.approx(25 / 175)
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0
    assert box_iou((0, 0, 0, 10), (0, 0, 0, 10)) == 0.0


def test_box_recall_hand_computed():
    truth = [(0, 0, 100, 100), (0, 0, 100, 100), (50, 50, 150, 150), None, None]
    detections = [
        [((0, 0, 90, 100), 0.9)],  # IoU 0.9, confident: found
        [((0, 0, 100, 40), 0.95), ((0, 0, 100, 100), 0.3)],  # top box wrong (IoU 0.4); right one below 0.5
        [((50, 50, 150, 150), 0.6)],  # found
        [((0, 0, 10, 10), 0.7)],  # a false positive
        [((0, 0, 10, 10), 0.2)],  # below the confidence: not counted
    ]
    stats = box_recall(truth, detections, min_confidence=0.5)
    assert stats["recall"] == pytest.approx(2 / 3)
    assert stats["top1_recall"] == pytest.approx(2 / 3)
    assert stats["false_positive_rate"] == pytest.approx(1 / 2)
    assert stats["replaced_wrongly"] == pytest.approx(1 / 3)
    assert (stats["n_boxes"], stats["n_without_box"]) == (3, 2)
    assert box_recall(truth, detections, min_confidence=0.25)["recall"] == 1.0
    with pytest.raises(ValueError, match="5 true boxes but 4"):
        box_recall(truth, detections[:4], min_confidence=0.5)


def test_clip_box():
    assert clip_box((-3.2, 4.5, 50.1, 70.0), 40, 60) == (0, 4, 40, 60)
    assert clip_box((45, 10, 50, 20), 40, 60) is None


def test_read_overlay_boxes(tmp_path):
    path = tmp_path / "query_edits.csv"
    path.write_text("query_id,source,edits,overlay_box\nQ00000,R000001,blur,\nQ00001,R000002,screenshot,1 2 30 40\n")
    assert read_overlay_boxes(path) == {"Q00000": None, "Q00001": (1, 2, 30, 40)}
    path.write_text("query_id,source,edits,overlay_box\nQ00000,R000001,screenshot,1 2 x 4\n")
    with pytest.raises(ValueError, match=r"query_edits.csv:2: overlay_box must be 4 integers .*, got '1 2 x 4'"):
        read_overlay_boxes(path)
    path.write_text("query_id,source,edits,overlay_box\nQ00000,R000001,screenshot,5 2 5 4\n")
    with pytest.raises(ValueError, match="query_edits.csv:2: overlay_box '5 2 5 4' is empty"):
        read_overlay_boxes(path)
    with pytest.raises(FileNotFoundError, match="query_edits.csv"):
        read_overlay_boxes(tmp_path / "missing" / "query_edits.csv")
