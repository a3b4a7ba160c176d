"""VisionForce's descriptor-track loss combination (RECIPES §4), adapted to this framework's calling convention.

VisionForce: CE with label smoothing on an 8192-d head (×10) + CE with label smoothing on the 256-d descriptor
head (×1) + soft cross-entropy distillation from the 8192-d logits to the 256-d logits at T=2 (×2, teacher
not detached) + batch-hard soft-margin triplet (×1). Classes are training images.

With `model_head=True` (the recipes: model.head=visionforce | d2lv) the model computes the source's heads
(isc_research.model.WideHead) and the loss receives its parts: the wide CE on the projector output, the 256-d CE and the
distillation on the 256-d BN output computed from the 8192-d head, the triplet on the 2,048-d GeM feature —
as the source. D²LV (descriptor and distillation weights 0) has no 256-d classifier.

With `model_head=False` (a plain descriptor model, e.g. the CPU overlay) a loss only sees the descriptor, so
the wide head is an expansion of the descriptor owned by the loss (dropped at inference) and the triplet term
is on the descriptor. The source's
256-d head classifies a BatchNorm output (unit variance per dimension, norm ≈ √d); the descriptor here is
L2-normalised (norm 1), with which a plain linear classifier starts with logits within ±0.6 and its CE sat at
log(classes) for 8 epochs on the mini-DISC. So the descriptor is multiplied by `descriptor_scale`
(default √embedding_dim, the norm of a BN output) before its classifier.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from isc_research.distributed import gather_with_grad
from isc_research.losses.contrastive import pair_distances
from isc_research.losses.labels import positive_mask, single_labels
from isc_research.precision import float32_loss


def wide_head(embedding_dim: int, hidden_dim: int, wide_dim: int) -> nn.Sequential:
    """Linear → BN → LeakyReLU(0.2) → Linear → BN without a learned bias (VisionForce's projector, §4)."""
    final_bn = nn.BatchNorm1d(wide_dim)
    final_bn.bias.requires_grad_(False)
    return nn.Sequential(
        nn.Linear(embedding_dim, hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden_dim, wide_dim),
        final_bn,
    )


def soft_cross_entropy(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over samples of −Σ_c softmax(teacher/T)_c · log_softmax(student/T)_c."""
    target = F.softmax(teacher / temperature, dim=1)
    return -(target * F.log_softmax(student / temperature, dim=1)).sum(dim=1).mean()


def batch_hard_soft_margin_triplet(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """Mean over anchors of softplus(d(a, hardest positive) − d(a, hardest negative) + margin); anchors need
    both a positive and a negative in the batch."""
    distance = pair_distances(embeddings, embeddings)
    shares = positive_mask(labels)
    positive = shares & ~torch.eye(len(shares), dtype=torch.bool, device=shares.device)
    valid = positive.any(dim=1) & (~shares).any(dim=1)
    if not valid.any():
        return distance.sum() * 0
    hardest_positive = distance.masked_fill(~positive, float("-inf")).max(dim=1).values
    hardest_negative = distance.masked_fill(shares, float("inf")).min(dim=1).values
    return F.softplus(hardest_positive - hardest_negative + margin)[valid].mean()


class VisionForceLoss(nn.Module):
    """Weighted sum of the four terms above, computed on the global batch on every rank."""

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        hidden_dim: int = 4096,
        wide_dim: int = 8192,
        label_smoothing: float = 0.1,
        temperature: float = 2.0,
        wide_weight: float = 10.0,
        descriptor_weight: float = 1.0,
        distillation_weight: float = 2.0,
        triplet_weight: float = 1.0,
        triplet_margin: float = 0.0,
        detach_teacher: bool = False,
        descriptor_scale: float | None = None,
        model_head: bool = False,
    ):
        super().__init__()
        if not num_classes or num_classes < 1:
            raise ValueError(f"loss.num_classes must be >= 1 (null = one class per training image), got {num_classes}")
        self.model_head = model_head
        self.wide_head = None if model_head else wide_head(embedding_dim, hidden_dim, wide_dim)
        self.wide_classifier = nn.Linear(wide_dim, num_classes, bias=False)
        # D²LV has no 256-d head: no classifier that no term would train (DDP rejects unused parameters)
        uses_descriptor = descriptor_weight or distillation_weight or not model_head
        self.descriptor_classifier = nn.Linear(embedding_dim, num_classes, bias=False) if uses_descriptor else None
        self.num_classes = num_classes
        self.label_smoothing, self.temperature = label_smoothing, temperature
        self.weights = {
            "ce_wide": wide_weight,
            "ce_descriptor": descriptor_weight,
            "distillation": distillation_weight,
            "triplet": triplet_weight,
        }
        self.triplet_margin, self.detach_teacher = triplet_margin, detach_teacher
        self.descriptor_scale = math.sqrt(embedding_dim) if descriptor_scale is None else float(descriptor_scale)
        if self.descriptor_scale <= 0:
            raise ValueError(f"loss.descriptor_scale must be > 0 (null = √embedding_dim), got {descriptor_scale}")

    wants_parts = property(lambda self: self.model_head)  # CopyDetectionModule passes model.forward_parts()

    @float32_loss
    def forward(
        self, embeddings: torch.Tensor | dict[str, torch.Tensor], labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        y = single_labels(gather_with_grad(labels), "VisionForce")
        if int(y.max()) >= self.num_classes:
            raise ValueError(
                f"label {int(y.max())} has no class among loss.num_classes="
                f"{self.num_classes} (extra negatives and ground-truth pairs "
                f"have no class; set data.extra_negatives=0, data.gt_pairs.enabled=false)."
            )
        if self.model_head:
            if not isinstance(embeddings, dict):
                raise ValueError(
                    "loss.model_head=true needs the model's head parts: set model.head (visionforce | d2lv)"
                )
            wide, head, triplet_features = (gather_with_grad(embeddings[k]) for k in ("wide", "head", "pooled"))
            descriptor_input = head  # the source classifies the 256-d BN output
        else:
            z = gather_with_grad(embeddings)
            wide, triplet_features, descriptor_input = self.wide_head(z), z, z * self.descriptor_scale
        wide_logits = self.wide_classifier(wide)
        terms = {"ce_wide": F.cross_entropy(wide_logits, y, label_smoothing=self.label_smoothing)}
        if self.descriptor_classifier is not None:
            descriptor_logits = self.descriptor_classifier(descriptor_input)
            teacher = wide_logits.detach() if self.detach_teacher else wide_logits
            terms["ce_descriptor"] = F.cross_entropy(descriptor_logits, y, label_smoothing=self.label_smoothing)
            terms["distillation"] = soft_cross_entropy(descriptor_logits, teacher, self.temperature)
        terms["triplet"] = batch_hard_soft_margin_triplet(triplet_features, y, self.triplet_margin)
        loss = sum(self.weights[k] * v for k, v in terms.items())
        return {"loss": loss, **{k: v.detach() for k, v in terms.items()}}
