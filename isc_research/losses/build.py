"""Loss config → loss object (+ the Lightning callbacks that drive it, e.g. ArcFace's drip schedule)."""

from __future__ import annotations

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn


def build_loss(loss_cfg: DictConfig, num_classes: int) -> tuple[nn.Module, list]:
    """Instantiate the `loss` node. `num_classes: null` becomes `num_classes` (one class per training image,
    or per ground-truth pair); the loss draws its initial parameters from a fork of torch's RNG, so that every
    loss trains the same initial model; the optional `callbacks` sub-node holds callbacks built with `loss=<the
    loss>`."""
    node = OmegaConf.to_container(loss_cfg, resolve=True)
    callbacks = node.pop("callbacks", None) or {}
    if "num_classes" in node and node["num_classes"] is None:
        node["num_classes"] = num_classes
    with torch.random.fork_rng():  # the loss's own initialisation leaves the model's (and the data's) draws unchanged
        loss = instantiate(node)
    return loss, [instantiate(c, loss=loss) for c in callbacks.values() if c is not None]
