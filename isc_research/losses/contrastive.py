"""Contrastive loss with a cross-batch memory (XBM), as lyakaap's PML ContrastiveLoss + CrossBatchMemory (RECIPES §2.2).

Written here rather than wrapping pytorch-metric-learning 2.x because (a) its memory keeps one label per row
(mixed samples have several), (b) its queue pointer is a plain attribute, so a resumed run refills the memory
from slot 0, and (c) its DDP wrapper enqueues each rank's rows first, so queues differ between ranks (PML
issue #639). The math is the same and tests/test_losses_pml.py checks it against PML.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from isc_research.distributed import gather_with_grad
from isc_research.losses.labels import label_sets, positive_mask
from isc_research.precision import float32_loss


def pair_distances(anchors: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between L2-normalised rows; gradient 0 (not NaN) at distance 0."""
    a, r = F.normalize(anchors, dim=1), F.normalize(references, dim=1)
    squared = (2 - 2 * a @ r.T).clamp(min=0)
    return torch.where(squared > 1e-12, squared.clamp(min=1e-12).sqrt(), torch.zeros_like(squared))


def mean_of_nonzero(losses: torch.Tensor) -> torch.Tensor:
    """PML's AvgNonZeroReducer: the sum over the number of strictly positive terms (0 if there are none)."""
    count = (losses > 0).sum()
    return losses.sum() / count.clamp(min=1)


class ContrastiveXBMLoss(nn.Module):
    """Hadsell et al. contrastive loss, relu(d − pos_margin) over positive pairs plus relu(neg_margin − d)
    over negative pairs, each averaged over its non-zero terms (PML's defaults), with a memory of the last
    `memory_size` embeddings of the *global* batch (rank order) as the reference side.

    From iteration `start_iteration` + 1 on, each batch is first enqueued (detached) and its rows are then
    compared with the whole memory, own slot excluded; before that (and with memory_size=0) the batch is
    compared with itself. A float `start_iteration` in (0, 1) is a fraction of the run's training batches,
    fixed by `schedule(total_batches)` (CopyDetectionModule calls it when fitting starts). Memory rows, labels,
    pointer, fill count and iteration are buffers: they are saved
    in checkpoints and restored on resume.
    """

    def __init__(
        self,
        embedding_dim: int,
        pos_margin: float = 0.0,
        neg_margin: float = 1.0,
        memory_size: int = 20000,
        start_iteration: int | float = 0,
        label_slots: int = 2,
    ):
        super().__init__()
        if memory_size < 0 or label_slots < 1:
            raise ValueError("loss.memory_size must be >= 0, loss.label_slots >= 1")
        fraction = isinstance(start_iteration, float) and not float(start_iteration).is_integer()
        if start_iteration < 0 or (fraction and start_iteration >= 1):
            raise ValueError(
                f"loss.start_iteration must be an iteration >= 0 or a fraction of the run in (0, 1), "
                f"got {start_iteration}"
            )
        self.pos_margin, self.neg_margin = pos_margin, neg_margin
        self.memory_size = memory_size
        self.start_fraction = float(start_iteration) if fraction else None
        self.start_iteration = None if fraction else int(start_iteration)  # set by schedule() for a fraction
        self.register_buffer("memory", torch.zeros(memory_size, embedding_dim))
        self.register_buffer("memory_labels", torch.full((memory_size, label_slots), -1, dtype=torch.long))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    @float32_loss
    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.start_iteration is None:
            raise ValueError(
                f"loss.start_iteration={self.start_fraction} is a fraction of the run: call "
                "schedule(total_batches) first (isc-train does), or give an iteration count"
            )
        z, y = gather_with_grad(embeddings), label_sets(gather_with_grad(labels))
        if self.training:
            self.iteration += 1
        if self.memory_size and self.training and int(self.iteration) > self.start_iteration:
            slots = self.enqueue(z.detach(), y)
            filled = int(self.filled)
            references, reference_labels = self.memory[:filled], self.memory_labels[:filled]
            own = torch.zeros(len(z), filled, dtype=torch.bool, device=z.device)
            own[torch.arange(len(z), device=z.device), slots] = True
        else:
            references, reference_labels = z, y
            own = torch.eye(len(z), dtype=torch.bool, device=z.device)
        shares = positive_mask(y, reference_labels)
        positive, negative = shares & ~own, ~shares
        distance = pair_distances(z, references.to(z.dtype))
        pos_loss = mean_of_nonzero((distance - self.pos_margin).clamp(min=0)[positive])
        neg_terms = (self.neg_margin - distance).clamp(min=0)[negative]
        neg_loss = mean_of_nonzero(neg_terms)
        return {
            "loss": pos_loss + neg_loss,
            "positive_loss": pos_loss.detach(),
            "negative_loss": neg_loss.detach(),
            "active_negatives": (neg_terms > 0).float().mean() if neg_terms.numel() else neg_loss.new_zeros(()),
            "memory_filled": self.filled.float(),
        }

    def schedule(self, total_batches: int) -> None:
        """Fix a fractional start_iteration once the run's number of training batches is known."""
        if self.start_fraction is not None:
            self.start_iteration = round(self.start_fraction * int(total_batches))

    @torch.no_grad()
    def enqueue(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Write the rows at the pointer (wrapping around); returns their memory slots."""
        n = len(embeddings)
        if n > self.memory_size:
            raise ValueError(
                f"loss.memory_size={self.memory_size} is smaller than the global batch ({n} embeddings); "
                f"raise it to at least the batch size × views × processes."
            )
        if labels.shape[1] > self.memory_labels.shape[1]:
            raise ValueError(
                f"samples carry {labels.shape[1]} labels but loss.label_slots={self.memory_labels.shape[1]}"
            )
        slots = (self.pointer + torch.arange(n, device=self.pointer.device)) % self.memory_size
        padded = torch.full((n, self.memory_labels.shape[1]), -1, dtype=torch.long, device=labels.device)
        padded[:, : labels.shape[1]] = labels
        self.memory[slots] = embeddings.to(self.memory.dtype)
        self.memory_labels[slots] = padded
        self.pointer.copy_((self.pointer + n) % self.memory_size)
        self.filled.clamp_(max=self.memory_size - n).add_(n)
        return slots
