"""Training losses. Calling convention: `loss(embeddings (N, d), labels (N,)) -> dict` with key "loss"
(what is minimised) and optional extra scalars that are logged as `train/<key>`. Embeddings with the same
label are positives (two augmented views of one training image share its label)."""

from isc.losses.ntxent import NTXentLoss

__all__ = ["NTXentLoss"]
