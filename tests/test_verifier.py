"""Pairwise verifier units: the side-by-side input, the BCE loss, the pair metrics, negative selection."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from isc_research.augment import eval_transform
from isc_research.data.records import ImageRecord
from isc_research.verifier import PairInput, half_width, side_by_side
from isc_research.verifier.metrics import pair_metrics
from isc_research.verifier.model import PairClassifier, load_backbone_weights
from isc_research.verifier.module import bce_loss
from isc_research.verifier.pairs import nearest_negatives, random_negatives, validation_pairs


def _record(split: str, i: int) -> ImageRecord:
    prefix = {"query": "Q", "reference": "R", "training": "T"}[split]
    return ImageRecord(f"{prefix}{i:06d}", split, Path(f"/nonexistent/{prefix}{i}.jpg"))


def _solid(colour: tuple[int, int, int], size=(40, 30)) -> Image.Image:
    return Image.new("RGB", size, colour)


def test_side_by_side_puts_the_query_left_and_the_reference_right():
    size = 16
    pair = PairInput(size)(_solid((255, 0, 0)), _solid((0, 0, 255)))
    assert pair.shape == (3, size, size)
    red, blue = (eval_transform(size)(_solid(c))[:, 0, 0] for c in ((255, 0, 0), (0, 0, 255)))
    assert torch.allclose(pair[:, :, : size // 2], red[:, None, None].expand(3, size, size // 2), atol=1e-5)
    assert torch.allclose(pair[:, :, size // 2 :], blue[:, None, None].expand(3, size, size // 2), atol=1e-5)


def test_each_half_is_the_resized_input_squeezed_to_half_width():
    rng = np.random.default_rng(0)
    query, reference = (Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)) for _ in range(2))
    size = 24
    pair = PairInput(size)(query, reference)
    resize = eval_transform(size)
    assert torch.equal(pair[:, :, :12], half_width(resize(query)))
    assert torch.equal(pair[:, :, 12:], half_width(resize(reference)))
    assert not torch.equal(pair[:, :, :12], pair[:, :, 12:])


def test_half_width_averages_column_pairs_of_a_ramp_and_keeps_rows():
    """A horizontal ramp x[..., w] = w: the symmetric antialiasing filter of a 2× squeeze maps output column j
    to the mean of input columns 2j and 2j+1 (away from the border, where the filter is clipped)."""
    h, w = 5, 20
    ramp = torch.arange(w, dtype=torch.float32).expand(3, h, w).clone()
    out = half_width(ramp)
    assert out.shape == (3, h, w // 2)
    expected = torch.tensor([(2 * j + 2 * j + 1) / 2 for j in range(w // 2)])
    assert torch.allclose(out[:, :, 1:-1], expected[1:-1].expand(3, h, w // 2 - 2), atol=1e-4)


def test_side_by_side_rejects_bad_shapes():
    with pytest.raises(ValueError, match="same shape"):
        side_by_side(torch.zeros(3, 8, 8), torch.zeros(3, 10, 10))
    with pytest.raises(ValueError, match="even integer"):
        PairInput(15)


def test_bce_matches_a_float64_loop():
    torch.manual_seed(0)
    logits, labels = torch.randn(13) * 3, (torch.rand(13) > 0.5).float()
    expected = 0.0
    for x, y in zip(logits.double().tolist(), labels.double().tolist()):
        p = 1.0 / (1.0 + math.exp(-x))
        expected -= y * math.log(p) + (1 - y) * math.log(1 - p)
    assert bce_loss(logits, labels).item() == pytest.approx(expected / 13, rel=1e-6)


def test_pair_classifier_outputs_one_logit_per_pair():
    model = PairClassifier("test_resnet")
    assert model(torch.randn(3, 3, 32, 32)).shape == (3,)
    assert model.head_parameter_names() == {"backbone.fc.weight", "backbone.fc.bias"}


def test_backbone_weights_from_a_descriptor_checkpoint(tmp_path):
    from isc_research.model import DescriptorModel

    descriptor = DescriptorModel("test_resnet", embedding_dim=8)
    torch.save({"state_dict": {f"model.{k}": v for k, v in descriptor.state_dict().items()}}, tmp_path / "d.ckpt")
    verifier = PairClassifier("test_resnet")
    load_backbone_weights(verifier, tmp_path / "d.ckpt")
    for name, value in descriptor.backbone.state_dict().items():
        assert torch.equal(verifier.backbone.state_dict()[name], value)
    with pytest.raises(ValueError, match="does not fit"):
        load_backbone_weights(PairClassifier("mobilenetv3_small_050"), tmp_path / "d.ckpt")
    with pytest.raises(FileNotFoundError, match="init_from"):
        load_backbone_weights(verifier, tmp_path / "missing.ckpt")


def _pairs():
    """Q1 matches R1 and Q2 matches R2, Q3 is a distractor; 2 negatives per query."""
    queries = [_record("query", i) for i in (1, 2, 3)]
    references = [_record("reference", i) for i in range(5)]
    matches = {"Q000001": "R000001", "Q000002": "R000002"}
    return validation_pairs(queries, references, matches, ("Q000001", "Q000002", "Q000003"), [[0, 3], [4, 0], [1, 2]])


def test_validation_pairs_list_the_true_reference_first():
    pairs = _pairs()
    assert [(q.id, r.id) for q, r in zip(pairs.queries, pairs.references)] == [
        ("Q000001", "R000001"),
        ("Q000001", "R000000"),
        ("Q000001", "R000003"),
        ("Q000002", "R000002"),
        ("Q000002", "R000004"),
        ("Q000002", "R000000"),
        ("Q000003", "R000001"),
        ("Q000003", "R000002"),
    ]
    assert pairs.labels.tolist() == [1, 0, 0, 1, 0, 0, 0, 0]
    queries, references = pairs.queries[:1], [_record("reference", i) for i in range(3)]
    with pytest.raises(ValueError, match="true reference"):
        validation_pairs(queries, references, {"Q000001": "R000001"}, ("Q000001",), [[1]])


def test_pair_metrics_against_hand_computed_values():
    pairs = _pairs()
    scores = np.array([0.9, 0.2, 0.6, 0.4, 0.7, 0.1, 0.3, 0.8])
    metrics = pair_metrics(pairs, scores)
    # accuracy at 0.5: correct = 0.9 (pos), 0.2, 0.1, 0.3 (neg) → 4 of 8
    assert metrics["accuracy"] == pytest.approx(4 / 8)
    positives, negatives = scores[pairs.labels == 1], scores[pairs.labels == 0]
    naive_auc = np.mean([float(p > n) + 0.5 * float(p == n) for p in positives for n in negatives])
    assert metrics["auc"] == pytest.approx(naive_auc)  # (5 + 2) / 12
    # µAP: sorted 0.9 (tp), 0.8, 0.7, 0.6, 0.4 (tp) → 1/2·1 + 1/2·2/5
    assert metrics["uAP"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 5)
    assert (metrics["positives"], metrics["pairs"]) == (2, 8)
    with pytest.raises(ValueError, match="scores for"):
        pair_metrics(pairs, scores[:3])


def test_nearest_negatives_match_a_naive_loop():
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(6, 4))
    pool = rng.normal(size=(9, 4))
    excluded = [{i} for i in range(6)]
    got = nearest_negatives(queries, pool, excluded, k=3, batch_size=4)  # two query batches
    for i in range(6):
        ranked = sorted((j for j in range(9) if j not in excluded[i]), key=lambda j: -float(queries[i] @ pool[j]))
        assert got[i] == ranked[:3]


def test_random_negatives_avoid_the_excluded_and_repeat_nothing():
    got = random_negatives(50, 6, [{0, 1}] * 50, k=3, seed=0)
    assert all(len(set(row)) == 3 and not {0, 1} & set(row) for row in got)
    assert random_negatives(50, 6, [{0, 1}] * 50, k=3, seed=0) == got
    assert random_negatives(1, 3, [{0, 1}], k=5, seed=0) == [[2]]
