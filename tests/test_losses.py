"""NT-Xent against a naive float64 loop over the SimCLR formula."""

from __future__ import annotations

import math

import pytest
import torch

from isc_research.losses import NTXentLoss


def naive_ntxent(z: torch.Tensor, labels: list[int], tau: float) -> float:
    n = len(labels)
    sim = [[float(z[i] @ z[j]) / tau for j in range(n)] for i in range(n)]
    rows = []
    for i in range(n):
        positives = [j for j in range(n) if j != i and labels[j] == labels[i]]
        negatives = [j for j in range(n) if labels[j] != labels[i]]
        terms = []
        for p in positives:
            denominator = math.exp(sim[i][p]) + sum(math.exp(sim[i][k]) for k in negatives)
            terms.append(-math.log(math.exp(sim[i][p]) / denominator))
        rows.append(sum(terms) / len(terms))
    return sum(rows) / n


@pytest.mark.parametrize("views,tau", [(2, 0.1), (2, 0.5), (3, 0.2)])
def test_ntxent_matches_naive_loop(views, tau):
    torch.manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(5 * views, 8, dtype=torch.float64), dim=1)
    labels = torch.arange(5).repeat_interleave(views)
    got = NTXentLoss(tau)(z, labels)["loss"].item()
    assert got == pytest.approx(naive_ntxent(z, labels.tolist(), tau), rel=1e-10)


def test_ntxent_prefers_aligned_views_and_has_gradients():
    torch.manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(6, 16), dim=1)
    labels = torch.arange(6).repeat_interleave(2)
    aligned = torch.stack([a, a], dim=1).flatten(0, 1)
    shuffled = torch.stack([a, a[torch.randperm(6)]], dim=1).flatten(0, 1)
    loss = NTXentLoss(0.1)
    assert loss(aligned, labels)["loss"] < loss(shuffled, labels)["loss"]
    z = aligned.clone().requires_grad_(True)
    loss(z, labels)["loss"].backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()


def test_ntxent_rejects_a_batch_without_positives_and_bad_temperature():
    with pytest.raises(ValueError, match="two views"):
        NTXentLoss(0.1)(torch.randn(4, 3), torch.arange(4))
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(0.0)
