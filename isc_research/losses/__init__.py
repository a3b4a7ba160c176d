"""Training losses. Calling convention: `loss(embeddings (N, d), labels) -> dict` with key "loss" (what is
minimised) and optional extra scalars that are logged as `train/<key>`. `labels` are (N,) instance ids, or
(N, S) with -1 padding for samples mixed from several images; embeddings that share a label are positives
(isc_research.losses.labels). Every loss computes the same value as one process would on the global batch under DDP."""

from isc_research.losses.arcface import ArcFaceLoss
from isc_research.losses.barlow_twins import BarlowTwinsLoss
from isc_research.losses.contrastive import ContrastiveXBMLoss
from isc_research.losses.infonce import InfoNCEEntropyLoss
from isc_research.losses.labels import positive_mask
from isc_research.losses.ntxent import NTXentLoss
from isc_research.losses.visionforce import VisionForceLoss

__all__ = [
    "ArcFaceLoss",
    "BarlowTwinsLoss",
    "ContrastiveXBMLoss",
    "InfoNCEEntropyLoss",
    "NTXentLoss",
    "VisionForceLoss",
    "positive_mask",
]
