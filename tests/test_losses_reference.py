"""Every loss against a naive float64 loop over its formula: margins, memory wrap-around, self-pair masking,
mixed-sample (mixup) label sets, extra negatives without positives."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from isc_research.losses import (
    ArcFaceLoss,
    BarlowTwinsLoss,
    ContrastiveXBMLoss,
    InfoNCEEntropyLoss,
    NTXentLoss,
    VisionForceLoss,
    positive_mask,
)
from isc_research.losses.labels import single_labels
from isc_research.losses.visionforce import batch_hard_soft_margin_triplet, soft_cross_entropy


def shares(a, b) -> bool:
    a, b = (a if isinstance(a, list) else [a]), (b if isinstance(b, list) else [b])
    return any(x == y and x >= 0 for x in a for y in b)


def unit(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=1)


def dot(u, v) -> float:
    return sum(float(a) * float(b) for a, b in zip(u, v))


def distance(u, v) -> float:
    return math.sqrt(sum((float(a) - float(b)) ** 2 for a, b in zip(u, v)))


# ---------------------------------------------------------------- labels


def test_positive_mask_shares_any_label_and_ignores_padding():
    labels = torch.tensor([[0, -1], [1, 0], [2, -1], [-1, 2], [3, 1]])
    rows = labels.tolist()
    expected = [[shares(a, b) for b in rows] for a in rows]
    assert positive_mask(labels).tolist() == expected
    assert positive_mask(torch.tensor([5, 6, 5])).tolist() == [
        [True, False, True],
        [False, True, False],
        [True, False, True],
    ]


def test_labels_are_validated():
    with pytest.raises(ValueError, match="at least one label"):
        positive_mask(torch.tensor([[0, -1], [-1, -1]]))
    with pytest.raises(ValueError, match=">= 0, or -1"):
        positive_mask(torch.tensor([0, -2]))
    with pytest.raises(ValueError, match="ArcFace needs one label per sample"):
        single_labels(torch.tensor([[0, 1], [1, -1]]), "ArcFace")
    assert single_labels(torch.tensor([[0, -1], [-1, 3]]), "x").tolist() == [0, 3]


# ---------------------------------------------------------------- InfoNCE family


def naive_infonce(z, labels, tau):
    n, rows = len(labels), []
    for i in range(n):
        pos = [j for j in range(n) if j != i and shares(labels[i], labels[j])]
        neg = [j for j in range(n) if not shares(labels[i], labels[j])]
        if not pos:
            continue
        terms = []
        for p in pos:
            e = math.exp(dot(z[i], z[p]) / tau)
            terms.append(-math.log(e / (e + sum(math.exp(dot(z[i], z[k]) / tau) for k in neg))))
        rows.append(sum(terms) / len(terms))
    return sum(rows) / len(rows)


def naive_entropy(z, labels):
    out = []
    for i in range(len(labels)):
        neg = [dot(z[i], z[k]) for k in range(len(labels)) if not shares(labels[i], labels[k])]
        if neg:
            out.append(-math.log(math.sqrt(max(2 - 2 * max(neg), 1e-6))))
    return sum(out) / len(out)


MIXED = [[0, -1], [0, 3], [1, -1], [1, -1], [2, -1], [2, 0], [3, -1], [3, -1], [7, -1]]  # last: no positive


@pytest.mark.parametrize("labels", [[0, 0, 1, 1, 2, 2, 3, 3], [0, 0, 0, 1, 1, 1, 2, 2, 9, 8], MIXED])
def test_ntxent_and_infonce_entropy_match_naive_loops(labels):
    z = unit(len(labels), 6)
    y = torch.tensor(labels)
    assert NTXentLoss(0.3)(z, y)["loss"].item() == pytest.approx(naive_infonce(z, labels, 0.3), rel=1e-10)
    out = InfoNCEEntropyLoss(0.05, entropy_weight=7.0)(z, y)
    expected = naive_infonce(z, labels, 0.05) + 7.0 * naive_entropy(z, labels)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-10)
    assert out["entropy"].item() == pytest.approx(naive_entropy(z, labels), rel=1e-10)


# ---------------------------------------------------------------- contrastive + memory


def avg_nonzero(values):
    nonzero = [v for v in values if v > 0]
    return sum(values) / len(nonzero) if nonzero else 0.0


def naive_contrastive(anchors, anchor_labels, refs, ref_labels, own, pos_margin, neg_margin):
    pos, neg = [], []
    for i, a in enumerate(anchors):
        for j, r in enumerate(refs):
            if own(i, j):
                continue
            d = distance(a, r)
            if shares(anchor_labels[i], ref_labels[j]):
                pos.append(max(d - pos_margin, 0.0))
            else:
                neg.append(max(neg_margin - d, 0.0))
    return avg_nonzero(pos) + avg_nonzero(neg)


def test_contrastive_without_memory_matches_naive_loop_with_margins():
    z, labels = unit(10, 3, seed=1), [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    loss = ContrastiveXBMLoss(3, pos_margin=0.4, neg_margin=1.2, memory_size=0).double()
    expected = naive_contrastive(z, labels, z, labels, lambda i, j: i == j, 0.4, 1.2)
    out = loss(z, torch.tensor(labels))
    assert out["loss"].item() == pytest.approx(expected, rel=1e-10)
    assert 0 < out["active_negatives"].item() < 1  # the margins cut some terms, not all


def test_contrastive_memory_wraps_around_and_masks_only_the_own_slot():
    """Memory of 10, batches of 4: slots wrap in the 3rd step. A naive ring buffer gives the same losses;
    an earlier copy of an image in the memory is a positive, the row's own slot is not a pair."""
    # pos_margin < 0 makes a self-pair (distance 0) a non-zero term, so a missing self-mask would show.
    memory_size, pos_m, neg_m = 10, -0.05, 1.3
    loss = ContrastiveXBMLoss(3, pos_margin=pos_m, neg_margin=neg_m, memory_size=memory_size, label_slots=2).double()
    ring: list = [None] * memory_size
    pointer = 0
    batches = [[0, 0, 1, 1], [2, 2, 0, 0], [3, 3, 1, 1], [4, 4, 2, 2], [0, 0, 5, 5]]
    for step, labels in enumerate(batches):
        z = unit(4, 3, seed=10 + step)
        slots = []
        for row, label in zip(z, labels):
            ring[pointer] = (row, label)
            slots.append(pointer)
            pointer = (pointer + 1) % memory_size
        filled = [k for k in range(memory_size) if ring[k] is not None]
        refs = [ring[k][0] for k in filled]
        ref_labels = [ring[k][1] for k in filled]
        expected = naive_contrastive(z, labels, refs, ref_labels, lambda i, j: filled[j] == slots[i], pos_m, neg_m)
        assert loss(z, torch.tensor(labels))["loss"].item() == pytest.approx(expected, rel=1e-10), step
        assert int(loss.pointer) == pointer and int(loss.filled) == len(filled)
    assert loss.memory_labels[:, 0].tolist() == [ring[k][1] for k in range(memory_size)]
    assert (loss.memory_labels[:, 1] == -1).all()


def test_contrastive_start_iteration_uses_the_batch_until_then():
    z, labels = unit(6, 4, seed=3), [0, 0, 1, 1, 2, 2]
    loss = ContrastiveXBMLoss(4, memory_size=50, start_iteration=2).double()
    in_batch = naive_contrastive(z, labels, z, labels, lambda i, j: i == j, 0.0, 1.0)
    for _ in range(2):
        assert loss(z, torch.tensor(labels))["loss"].item() == pytest.approx(in_batch, rel=1e-10)
    assert int(loss.filled) == 0
    loss(z, torch.tensor(labels))
    assert int(loss.filled) == 6


def test_contrastive_start_as_a_fraction_of_the_run():
    z, labels = unit(6, 4, seed=3), torch.tensor([0, 0, 1, 1, 2, 2])
    loss = ContrastiveXBMLoss(4, memory_size=50, start_iteration=0.25).double()
    with pytest.raises(ValueError, match="is a fraction of the run: call schedule"):
        loss(z, labels)
    loss.schedule(10)  # 25 % of 10 batches: the memory joins after iteration 2 (rounded from 2.5)
    assert loss.start_iteration == 2
    for _ in range(2):
        loss(z, labels)
    assert int(loss.filled) == 0
    loss(z, labels)
    assert int(loss.filled) == 6
    assert ContrastiveXBMLoss(4, start_iteration=3.0).start_iteration == 3  # a whole float is an iteration
    for bad in (1.5, -1, -0.5):
        with pytest.raises(ValueError, match="must be an iteration >= 0 or a fraction of the run"):
            ContrastiveXBMLoss(4, start_iteration=bad)


def test_contrastive_with_mixed_labels_and_extra_negatives():
    z = unit(9, 4, seed=4)
    loss = ContrastiveXBMLoss(4, neg_margin=1.5, memory_size=30).double()
    expected = naive_contrastive(z, MIXED, z, MIXED, lambda i, j: i == j, 0.0, 1.5)
    assert loss(z, torch.tensor(MIXED))["loss"].item() == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match="memory_size=5 is smaller"):
        ContrastiveXBMLoss(4, memory_size=5)(unit(9, 4).float(), torch.arange(9))


def test_contrastive_gradient_is_finite_for_identical_views():
    z = unit(3, 4).repeat_interleave(2, dim=0).requires_grad_(True)
    ContrastiveXBMLoss(4, memory_size=0).double()(z, torch.arange(3).repeat_interleave(2))["loss"].backward()
    assert torch.isfinite(z.grad).all()


# ---------------------------------------------------------------- ArcFace


def naive_arcface(z, labels, weights, s, m):
    total = 0.0
    for i, y in enumerate(labels):
        cos = [dot(z[i], w) / math.sqrt(dot(w, w)) for w in weights]
        theta = math.acos(max(-1.0, min(1.0, cos[y])))
        target = math.cos(theta + m) if theta + m < math.pi else cos[y] - m * math.sin(m)
        logits = [s * c for c in cos]
        logits[y] = s * target
        total += -logits[y] + math.log(sum(math.exp(v) for v in logits))
    return total / len(labels)


def test_arcface_matches_naive_loop_including_the_fallback_past_pi():
    z, labels = unit(12, 3, seed=5), [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    loss = ArcFaceLoss(5, 3, scale=8.0, margin=1.2).double()
    thetas = torch.acos((z @ F.normalize(loss.weight, dim=1).T)[range(12), labels])
    assert (thetas + 1.2 >= math.pi).any() and (thetas + 1.2 < math.pi).any()  # both branches are exercised
    expected = naive_arcface(z, labels, loss.weight.detach(), 8.0, 1.2)
    assert loss(z, torch.tensor(labels))["loss"].item() == pytest.approx(expected, rel=1e-10)


def test_arcface_active_classes_and_set_classes():
    loss = ArcFaceLoss(6, 3, initial_classes=2).double()
    with pytest.raises(ValueError, match="not among the 2 active"):
        loss(unit(2, 3), torch.tensor([0, 4]))
    centres = torch.tensor([[2.0, 0, 0], [0, 3.0, 0]], dtype=torch.float64)
    loss.set_classes(2, centres)
    assert int(loss.active_classes) == 4
    torch.testing.assert_close(loss.weight[2:4].detach(), F.normalize(centres, dim=1))
    z, labels = unit(4, 3, seed=6), [0, 1, 2, 3]
    expected = naive_arcface(z, labels, loss.weight[:4].detach(), 40.0, 0.4)
    assert loss(z, torch.tensor(labels))["loss"].item() == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match="cannot set ArcFace classes 5"):
        loss.set_classes(5, centres[:1])


# ---------------------------------------------------------------- Barlow Twins


def naive_barlow(a, b, lam):
    n, d = len(a), len(a[0])

    def standardise(x):
        cols = []
        for k in range(d):
            col = [float(r[k]) for r in x]
            mean = sum(col) / n
            var = sum((v - mean) ** 2 for v in col) / n
            cols.append([(v - mean) / math.sqrt(var + 1e-5) for v in col])
        return cols

    sa, sb = standardise(a), standardise(b)
    c = [[sum(sa[i][k] * sb[j][k] for k in range(n)) / n for j in range(d)] for i in range(d)]
    return sum((1 - c[i][i]) ** 2 for i in range(d)) + lam * sum(
        c[i][j] ** 2 for i in range(d) for j in range(d) if i != j
    )


def test_barlow_twins_matches_naive_loop_and_pairs_views_by_label():
    loss = BarlowTwinsLoss(4, projector_dims=[4], lambda_offdiag=0.02, scale=0.5).double()
    with torch.no_grad():
        loss.projector[0].weight.copy_(torch.eye(4))  # identity projector: the loss math alone
    z = unit(10, 4, seed=7)
    labels = torch.tensor([3, 0, 1, 3, 2, 0, 4, 1, 2, 4])  # views in any order
    first = [z[labels.tolist().index(k)] for k in range(5)]
    second = [z[len(labels) - 1 - labels.tolist()[::-1].index(k)] for k in range(5)]
    assert loss(z, labels)["loss"].item() == pytest.approx(0.5 * naive_barlow(first, second, 0.02), rel=1e-9)
    with pytest.raises(ValueError, match="exactly two views"):
        loss(z[:9], labels[:9])


# ---------------------------------------------------------------- VisionForce


def test_visionforce_terms_match_naive_loops():
    z, labels = unit(8, 5, seed=8), [0, 0, 1, 1, 2, 2, 3, 3]
    student, teacher = torch.randn(8, 4, dtype=torch.float64), torch.randn(8, 4, dtype=torch.float64)
    expected_kd = 0.0
    for i in range(8):
        t = [math.exp(v / 2) for v in teacher[i].tolist()]
        s = [math.exp(v / 2) for v in student[i].tolist()]
        expected_kd += -sum(ti / sum(t) * math.log(si / sum(s)) for ti, si in zip(t, s)) / 8
    assert soft_cross_entropy(student, teacher, 2.0).item() == pytest.approx(expected_kd, rel=1e-10)

    expected_triplet = 0.0
    for i in range(8):
        d_ap = max(distance(z[i], z[j]) for j in range(8) if j != i and labels[j] == labels[i])
        d_an = min(distance(z[i], z[j]) for j in range(8) if labels[j] != labels[i])
        expected_triplet += math.log1p(math.exp(d_ap - d_an + 0.1)) / 8
    got = batch_hard_soft_margin_triplet(z, torch.tensor(labels), margin=0.1).item()
    assert got == pytest.approx(expected_triplet, rel=1e-10)

    loss = VisionForceLoss(4, 5, hidden_dim=6, wide_dim=7, label_smoothing=0.2).double()
    out = loss(z, torch.tensor(labels))
    logits = loss.descriptor_classifier(z * math.sqrt(5)).detach()  # default descriptor_scale: √embedding_dim
    expected_ce = 0.0
    for i, y in enumerate(labels):
        log_p = torch.log_softmax(logits[i], dim=0).tolist()
        expected_ce += ((1 - 0.2) * -log_p[y] + 0.2 * -sum(log_p) / 4) / 8
    assert out["ce_descriptor"].item() == pytest.approx(expected_ce, rel=1e-10)
    assert out["triplet"].item() == pytest.approx(batch_hard_soft_margin_triplet(z, torch.tensor(labels)).item())
    weighted = 10 * out["ce_wide"] + out["ce_descriptor"] + 2 * out["distillation"] + out["triplet"]
    assert out["loss"].item() == pytest.approx(weighted.item(), rel=1e-12)


def test_visionforce_descriptor_classifier_can_fit_unit_descriptors():
    """The descriptor is L2-normalised; unscaled, its linear classifier starts with logits within ±0.6 and
    barely learns (the bug that kept ce_descriptor at log(1500) on the mini-DISC). 32 images × 2 noisy
    views, only the loss's parameters train, 50 SGD steps."""

    def fitted_ce(scale):
        torch.manual_seed(0)
        z = F.normalize(torch.randn(32, 128), dim=1).repeat_interleave(2, 0)
        z = F.normalize(z + 0.01 * torch.randn_like(z), dim=1)
        y = torch.arange(32).repeat_interleave(2)
        loss = VisionForceLoss(32, 128, hidden_dim=64, wide_dim=64, descriptor_scale=scale)
        optimizer = torch.optim.SGD(loss.parameters(), lr=0.1, momentum=0.9)
        for _ in range(50):
            out = loss(z, y)
            optimizer.zero_grad(), out["loss"].backward(), optimizer.step()
        return loss(z, y)["ce_descriptor"].item()

    assert fitted_ce(None) < 1.0  # label smoothing 0.1 over 32 classes: the floor is ~0.6; log(32) = 3.47
    assert fitted_ce(1.0) > 1.8
    with pytest.raises(ValueError, match="descriptor_scale"):
        VisionForceLoss(4, 5, descriptor_scale=0)
