"""SSCD's batch-level mixup / CutMix (RECIPES §8, `sscd/transforms/mixup.py`): each image of the training
batch is, with probability `prob`, mixed with the image at the mirrored position of the batch (timm's
"elem" mode), by mixup or — with probability `switch_prob` — CutMix, λ ~ Beta(α, α). A mixed image has two
source labels; the losses treat two images as positives when they share any source (isc_research.losses)."""

from __future__ import annotations

import math

import torch


class BatchMix:
    """`mix(images (N, C, H, W), labels (N,)) -> (images, labels (N, 2))`; the second label is the partner's
    instance label for mixed images and −1 otherwise. Randomness from torch's RNG (seeded runs repeat)."""

    def __init__(
        self, prob: float = 0.05, mixup_alpha: float = 2.0, cutmix_alpha: float = 2.0, switch_prob: float = 0.5
    ):
        for name, value in (("prob", prob), ("switch_prob", switch_prob)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"batch_mix.{name} must be in [0, 1], got {value}")
        if mixup_alpha <= 0 or cutmix_alpha <= 0:
            raise ValueError(f"batch_mix.mixup_alpha and cutmix_alpha must be > 0, got {mixup_alpha}, {cutmix_alpha}")
        self.prob, self.switch_prob = prob, switch_prob
        self.mixup = torch.distributions.Beta(mixup_alpha, mixup_alpha)
        self.cutmix = torch.distributions.Beta(cutmix_alpha, cutmix_alpha)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if labels.ndim != 1:
            raise ValueError(
                "batch_mix needs one label per training image; it cannot be combined with inputs that "
                "already carry several labels"
            )
        n, _, h, w = images.shape
        partner = torch.arange(n - 1, -1, -1, device=images.device)
        mixed = torch.rand(n) < self.prob
        use_cutmix = torch.rand(n) < self.switch_prob
        out = images.clone()
        pair_labels = torch.stack([labels, torch.full_like(labels, -1)], dim=1)
        for i in torch.nonzero(mixed).flatten().tolist():
            j = int(partner[i])
            if use_cutmix[i]:
                y0, y1, x0, x1 = cutmix_box(float(self.cutmix.sample()), h, w)
                out[i, :, y0:y1, x0:x1] = images[j, :, y0:y1, x0:x1]
            else:
                lam = float(self.mixup.sample())
                out[i] = lam * images[i] + (1 - lam) * images[j]
            pair_labels[i, 1] = labels[j]
        return out, pair_labels


def cutmix_box(lam: float, h: int, w: int) -> tuple[int, int, int, int]:
    """A box of area ≈ (1 − λ)·h·w with a uniform random centre, clipped to the image: (y0, y1, x0, x1)."""
    ratio = math.sqrt(1 - lam)
    ch, cw = int(h * ratio), int(w * ratio)
    cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
    return max(0, cy - ch // 2), min(h, cy + ch // 2), max(0, cx - cw // 2), min(w, cx + cw // 2)
