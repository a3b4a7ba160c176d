"""Optimizer parameter groups and learning-rate schedules built from torch's own schedulers."""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR, LinearLR, SequentialLR


def parameter_groups(module: nn.Module) -> list[dict]:
    """Weight decay on weight matrices/kernels only; biases, norm layers and GeM's p are not decayed, nor the
    parameters a submodule names in its `no_decay_parameters` tuple (e.g. ArcFace class weights, RECIPES §3.1).
    The loss is a child module of the LightningModule, so its parameters are included."""
    exempt = {id(getattr(sub, name)) for sub in module.modules() for name in getattr(sub, "no_decay_parameters", ())}
    decay, no_decay = [], []
    for param in module.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 or id(param) in exempt else decay).append(param)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float = 0.05, min_lr_ratio: float = 0.0):
    """Linear warm-up from ~0 over `warmup_fraction` of the steps, then cosine decay to `min_lr_ratio`·lr."""
    warmup = max(1, int(round(warmup_fraction * total_steps))) if warmup_fraction > 0 else 0
    base_lr = optimizer.param_groups[0]["lr"]
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup), eta_min=min_lr_ratio * base_lr)
    if warmup == 0:
        return cosine
    ramp = LinearLR(optimizer, start_factor=1e-3, end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])


def constant(optimizer: torch.optim.Optimizer, total_steps: int):
    """The configured learning rate throughout."""
    return ConstantLR(optimizer, factor=1.0, total_iters=0)
