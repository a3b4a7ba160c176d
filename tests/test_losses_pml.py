"""ContrastiveXBMLoss against pytorch-metric-learning's ContrastiveLoss in a CrossBatchMemory (lyakaap's
loss, RECIPES §2.2): same values and gradients over several steps, through the memory wrap-around."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from isc_research.losses import ContrastiveXBMLoss
from tests.conftest import import_extra

pml_losses = import_extra("pytorch_metric_learning.losses", "dev")


@pytest.mark.parametrize("pos_margin,neg_margin", [(0.0, 1.0), (0.0, 1.1), (0.2, 1.4)])
def test_matches_pml_cross_batch_memory(pos_margin, neg_margin):
    dim, memory_size = 8, 40
    ours = ContrastiveXBMLoss(dim, pos_margin=pos_margin, neg_margin=neg_margin, memory_size=memory_size).double()
    theirs = pml_losses.CrossBatchMemory(
        pml_losses.ContrastiveLoss(pos_margin=pos_margin, neg_margin=neg_margin),
        embedding_size=dim,
        memory_size=memory_size,
    )
    generator = torch.Generator().manual_seed(0)
    for step in range(6):  # 16 embeddings a step: the memory wraps in step 3
        raw = torch.randn(16, dim, generator=generator, dtype=torch.float64)
        labels = torch.randint(0, 10, (8,), generator=generator).repeat_interleave(2)
        a = F.normalize(raw.clone().requires_grad_(True), dim=1)
        b = F.normalize(raw.clone().requires_grad_(True), dim=1)
        a.retain_grad(), b.retain_grad()
        got, expected = ours(a, labels)["loss"], theirs(b, labels)
        assert got.item() == pytest.approx(expected.item(), rel=1e-7, abs=1e-10), step
        got.backward(), expected.backward()
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(ours.memory, theirs.embedding_memory.to(ours.memory))
    assert ours.memory_labels[:, 0].tolist() == theirs.label_memory.tolist()
    assert int(ours.pointer) == theirs.queue_idx
