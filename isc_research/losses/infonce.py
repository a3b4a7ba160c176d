"""InfoNCE over the global batch (SimCLR's NT-Xent, SSCD's InfoNCE) and SSCD's differential-entropy term."""

from __future__ import annotations

import torch
from torch import nn

from isc_research.distributed import gather_with_grad
from isc_research.losses.labels import positive_mask
from isc_research.precision import float32_loss


def pair_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) masks of the batch against itself: positives share a label (self-pairs excluded),
    negatives share none."""
    shares = positive_mask(labels)
    self_pairs = torch.eye(len(shares), dtype=torch.bool, device=shares.device)
    return shares & ~self_pairs, ~shares


def info_nce(
    similarity: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Mean over anchors of the mean over the anchor's positives p of −log(e^{s_p/τ} / (e^{s_p/τ} + Σ_neg e^{s_n/τ})).
    Other positives are not in the denominator. Rows without a positive (e.g. extra negatives) are not anchors."""
    anchors = positive.any(dim=1)
    if not anchors.any():
        raise ValueError("InfoNCE needs at least two views of some training image in the batch (no positive pair).")
    logits = similarity / temperature
    neg_lse = torch.logsumexp(logits.masked_fill(~negative, float("-inf")), dim=1, keepdim=True)
    per_pair = (torch.logaddexp(logits, neg_lse) - logits).masked_fill(~positive, 0.0)
    per_row = per_pair.sum(dim=1)[anchors] / positive.sum(dim=1)[anchors]
    return per_row.mean()


def differential_entropy(similarity: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """KoLeo estimate −mean_i log ‖z_i − nearest non-match‖, with ‖·‖ = √(2 − 2·sim) (unit vectors), RECIPES §8."""
    has_negative = negative.any(dim=1)
    nearest = similarity.masked_fill(~negative, -2.0).max(dim=1).values[has_negative]
    distance = (2 - 2 * nearest).clamp(min=1e-6).sqrt()
    return -distance.log().mean()


class InfoNCEEntropyLoss(nn.Module):
    """SSCD (RECIPES §8): InfoNCE at temperature τ over the similarity matrix of the batch gathered across
    processes (with gradients), plus `entropy_weight` × the differential-entropy regulariser."""

    def __init__(self, temperature: float = 0.05, entropy_weight: float = 30.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"loss.temperature must be > 0, got {temperature}")
        if entropy_weight < 0:
            raise ValueError(f"loss.entropy_weight must be >= 0, got {entropy_weight}")
        self.temperature = temperature
        self.entropy_weight = entropy_weight

    @float32_loss
    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        embeddings, labels = gather_with_grad(embeddings), gather_with_grad(labels)
        similarity = embeddings @ embeddings.T
        positive, negative = pair_masks(labels)
        infonce = info_nce(similarity, positive, negative, self.temperature)
        entropy = differential_entropy(similarity, negative) if self.entropy_weight else similarity.new_zeros(())
        with torch.no_grad():
            stats = {
                "positive_similarity": similarity[positive].mean(),
                "nearest_negative_similarity": similarity.masked_fill(~negative, -2.0).max(dim=1).values.mean(),
            }
        return {
            "loss": infonce + self.entropy_weight * entropy,
            "infonce": infonce.detach(),
            "entropy": entropy.detach(),
            **stats,
        }
