"""NT-Xent / InfoNCE over instance labels (SimCLR), gathered across processes."""

from __future__ import annotations

import torch
from torch import nn

from isc.distributed import gather_with_grad
from isc.losses.infonce import info_nce, pair_masks


class NTXentLoss(nn.Module):
    """For each embedding, −log softmax of its positives against every other embedding of the global batch.

    With one positive per row this is SimCLR's NT-Xent; with several (more views, or mixed samples that share
    a source image), each positive is scored against the negatives plus itself and the row's terms are
    averaged (SupCon-style "out" form). Rows without a positive (extra negatives) only serve as negatives.
    """

    def __init__(self, temperature: float = 0.1):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"loss.temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        embeddings, labels = gather_with_grad(embeddings), gather_with_grad(labels)
        similarity = embeddings @ embeddings.T
        positive, negative = pair_masks(labels)
        loss = info_nce(similarity, positive, negative, self.temperature)
        with torch.no_grad():
            pos_sim = similarity[positive].mean()
        return {"loss": loss, "positive_similarity": pos_sim}
