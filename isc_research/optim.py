"""Optimizer parameter groups and learning-rate schedules built from torch's own schedulers."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR, LinearLR, ReduceLROnPlateau, SequentialLR


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


def optimization(module, optimizer: Callable, scheduler: Callable | None, interval: str, steps: int):
    """Lightning's configure_optimizers of every training task (isc-train, -verifier, -detector): the `optimizer`
    group's optimizer over `parameter_groups(module)`, and the `scheduler` group's schedule over the run's `steps`
    optimizer steps (`interval: epoch`: over its epochs); ReduceLROnPlateau follows train/epoch_loss."""
    built = optimizer(parameter_groups(module))
    if scheduler is None:
        return built
    total = module.trainer.max_epochs if interval == "epoch" else steps
    schedule = scheduler(built, total_steps=int(total))
    if isinstance(schedule, ReduceLROnPlateau):
        return {
            "optimizer": built,
            "lr_scheduler": {"scheduler": schedule, "interval": "epoch", "monitor": "train/epoch_loss"},
        }
    return {"optimizer": built, "lr_scheduler": {"scheduler": schedule, "interval": interval}}


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_fraction: float = 0.05,
    min_lr_ratio: float = 0.0,
    start_factor: float = 1e-3,
    horizon: int | None = None,
):
    """Linear warm-up from `start_factor`·lr over `warmup_fraction` of the steps, then cosine decay to
    `min_lr_ratio`·lr. `horizon`: the schedule's length in steps (epochs with scheduler_interval=epoch) when it
    is not the run's: S-square's sjy_test5 / smp_test19 warm up 4 epochs and decay over 100 more (pl_bolts
    LinearWarmupCosineAnnealingLR, max_epochs 104) while their ensemble checkpoints come from epochs 51 / 67."""
    total_steps = horizon or total_steps
    warmup = max(1, int(round(warmup_fraction * total_steps))) if warmup_fraction > 0 else 0
    base_lr = optimizer.param_groups[0]["lr"]
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup), eta_min=min_lr_ratio * base_lr)
    if warmup == 0:
        return cosine
    ramp = LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])


def constant(optimizer: torch.optim.Optimizer, total_steps: int):
    """The configured learning rate throughout."""
    return ConstantLR(optimizer, factor=1.0, total_iters=0)


def linear_decay(optimizer: torch.optim.Optimizer, total_steps: int):
    """lr·(1 − t/T) over T = total_steps (lyakaap stages 3–4 step it per epoch: scheduler_interval=epoch,
    RECIPES §2.2)."""
    return LinearLR(optimizer, start_factor=1.0, end_factor=0.0, total_iters=max(1, total_steps))


def warmup_constant_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_fraction: float,
    constant_fraction: float,
    start_factor: float = 0.01,
    min_lr_ratio: float = 0.0,
):
    """Linear warm-up from start_factor·lr, a constant stretch, then cosine decay (VisionForce: epochs 0–5 from
    1 % of the LR, 5–10 constant, 10–25 cosine, RECIPES §4)."""
    if warmup_fraction < 0 or constant_fraction < 0 or warmup_fraction + constant_fraction >= 1:
        raise ValueError(
            "scheduler.warmup_fraction and constant_fraction must be >= 0 and sum to less than 1, got "
            f"{warmup_fraction} and {constant_fraction}"
        )
    warmup = max(1, int(round(warmup_fraction * total_steps)))
    hold = int(round(constant_fraction * total_steps))
    base_lr = optimizer.param_groups[0]["lr"]
    parts = [
        LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup),
        ConstantLR(optimizer, factor=1.0, total_iters=0),
        CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup - hold), eta_min=min_lr_ratio * base_lr),
    ]
    return SequentialLR(optimizer, parts, milestones=[warmup, warmup + hold])


def plateau(optimizer: torch.optim.Optimizer, total_steps: int, factor: float = 0.5, patience: int = 3):
    """ReduceLROnPlateau on the epoch's mean training loss (S-square, RECIPES §3.1): the module steps it once
    per epoch with `train/epoch_loss`."""
    return ReduceLROnPlateau(optimizer, mode="min", factor=factor, patience=patience)
