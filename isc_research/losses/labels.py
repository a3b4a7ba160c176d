"""Which embeddings are positives of which: the one rule every pairwise loss uses.

Labels are (N,) int64 instance ids, or (N, S) with -1 as padding when a sample mixes several source images
(batch mixup). Two embeddings are positives iff they share any label >= 0 (SSCD with mixup: "the positives
are all pairs that share any source image", RECIPES §8). Self-pairs are the caller's business.
"""

from __future__ import annotations

import torch


def label_sets(labels: torch.Tensor) -> torch.Tensor:
    """(N,) or (N, S) labels as (N, S) int64; -1 = no label in that slot."""
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2:
        raise ValueError(f"labels must have shape (N,) or (N, S), got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point:
        raise TypeError(f"labels must be integer instance ids, got {labels.dtype}")
    if (labels < -1).any():
        raise ValueError("labels must be >= 0, or -1 for an empty slot of a (N, S) label set")
    if (labels.max(dim=1).values < 0).any():
        raise ValueError("every sample needs at least one label >= 0")
    return labels.long()


def positive_mask(labels: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
    """(N, M) bool: sample i of `labels` and sample j of `other` (default: `labels`) share a label >= 0.
    The diagonal (self-pairs) is True when `other` is None; mask it where it must not count."""
    a = label_sets(labels)
    b = a if other is None else label_sets(other)
    mask = torch.zeros(a.shape[0], b.shape[0], dtype=torch.bool, device=a.device)
    for i in range(a.shape[1]):  # slot pairs: O(N·M) memory each, no (N, M, S, S) tensor
        valid = (a[:, i] >= 0)[:, None]
        for j in range(b.shape[1]):
            mask |= (a[:, i, None] == b[None, :, j]) & valid
    return mask


def single_labels(labels: torch.Tensor, loss_name: str) -> torch.Tensor:
    """(N,) labels for losses that classify each sample into one class; a clear error for mixed samples."""
    sets = label_sets(labels)
    if (sets >= 0).sum(dim=1).max() > 1:
        raise ValueError(
            f"{loss_name} needs one label per sample, but the batch has mixed samples with several "
            f"source labels (batch mixup). Use a pairwise loss (ntxent, infonce_entropy, "
            f"contrastive_xbm) with mixup, or turn mixup off."
        )
    return sets.max(dim=1).values
