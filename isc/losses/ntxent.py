"""NT-Xent / InfoNCE over instance labels (SimCLR), gathered across processes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from isc.distributed import gather_with_grad


class NTXentLoss(nn.Module):
    """For each embedding, −log softmax of its positives against every other embedding of the global batch.

    With one positive per row this is SimCLR's NT-Xent; with several, each positive is scored against the
    negatives plus itself and the row's terms are averaged (SupCon-style "out" form).
    """

    def __init__(self, temperature: float = 0.1):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"loss.temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        embeddings = gather_with_grad(embeddings)
        labels = gather_with_grad(labels)
        logits = embeddings @ embeddings.T / self.temperature
        n = logits.shape[0]
        self_mask = torch.eye(n, dtype=torch.bool, device=logits.device)
        positive = (labels[:, None] == labels[None, :]) & ~self_mask
        if not positive.any(dim=1).all():
            raise ValueError("NTXentLoss needs at least two views of every training image in the batch.")
        negative = ~(positive | self_mask)
        # log(exp(pos) + Σ exp(neg)) for every (row, positive) pair, stable via logsumexp.
        neg_logits = logits.masked_fill(~negative, float("-inf"))
        neg_lse = torch.logsumexp(neg_logits, dim=1, keepdim=True)
        denominator = torch.logaddexp(logits, neg_lse)
        per_pair = (denominator - logits).masked_fill(~positive, 0.0)
        per_row = per_pair.sum(dim=1) / positive.sum(dim=1)
        with torch.no_grad():
            pos_sim = (embeddings @ embeddings.T)[positive].mean()
        return {"loss": per_row.mean(), "positive_similarity": pos_sim}
