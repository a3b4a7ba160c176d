"""Barlow Twins (Zbontar et al. 2021) on the descriptor: projector → per-view standardisation → cross-correlation.

VisionForce initialise their backbone from Barlow Twins weights (RECIPES §4); run it as a pretraining stage
with `loss=barlow_twins`, export the backbone (`isc-export-backbone`) and start another recipe from it with
`backbone.weights_file=`.
"""

from __future__ import annotations

import torch
from torch import nn

from isc_research.distributed import gather_with_grad
from isc_research.losses.labels import single_labels
from isc_research.precision import float32_loss


def projector(input_dim: int, dims: list[int]) -> nn.Sequential:
    """Barlow Twins' projector: (Linear → BatchNorm → ReLU) for every hidden layer, then a bias-free Linear."""
    layers: list[nn.Module] = []
    sizes = [input_dim, *dims]
    for i in range(len(dims) - 1):
        layers += [nn.Linear(sizes[i], sizes[i + 1], bias=False), nn.BatchNorm1d(sizes[i + 1]), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(sizes[-2], sizes[-1], bias=False))
    return nn.Sequential(*layers)


def standardise(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Zero mean, unit (biased) variance per dimension over the batch: BatchNorm1d(affine=False) in training."""
    return (x - x.mean(dim=0)) / (x.var(dim=0, unbiased=False) + eps).sqrt()


def view_pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices (first view, second view) of every label; each label must occur exactly twice."""
    order = torch.argsort(labels, stable=True)
    _, counts = torch.unique_consecutive(labels[order], return_counts=True)
    if not (counts == 2).all():
        raise ValueError(
            "Barlow Twins needs exactly two views of every image and no extra samples: set "
            "data.n_views=2, data.extra_negatives=0 and data.gt_pairs.enabled=false."
        )
    return order[0::2], order[1::2]


class BarlowTwinsLoss(nn.Module):
    """Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij², C the cross-correlation of the two views' standardised projections
    over the global batch. The embeddings are gathered (with gradients) before the projector, so its
    BatchNorm and the standardisation use global-batch statistics: the same loss as one process."""

    def __init__(
        self,
        embedding_dim: int,
        projector_dims: list[int] = (8192, 8192, 8192),
        lambda_offdiag: float = 0.0051,
        scale: float = 1.0,
    ):
        super().__init__()
        if not projector_dims:
            raise ValueError("loss.projector_dims needs at least one layer size")
        self.projector = projector(embedding_dim, list(projector_dims))
        self.lambda_offdiag, self.scale = lambda_offdiag, scale

    @float32_loss
    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        z, y = gather_with_grad(embeddings), single_labels(gather_with_grad(labels), "Barlow Twins")
        first, second = view_pairs(y)
        if len(first) < 2:
            raise ValueError("Barlow Twins needs at least two images in the (global) batch")
        a = standardise(self.projector(z[first]))
        b = standardise(self.projector(z[second]))
        c = a.T @ b / len(a)
        on_diagonal = (torch.diagonal(c) - 1).pow(2).sum()
        off_diagonal = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
        loss = self.scale * (on_diagonal + self.lambda_offdiag * off_diagonal)
        return {"loss": loss, "on_diagonal": on_diagonal.detach(), "off_diagonal": off_diagonal.detach()}
