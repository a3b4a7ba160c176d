"""Run a recipe on the hardware at hand: its total batch kept by gradient accumulation, and data workers
sized to the machine. Resolved into the config before anything is built, so config.yaml records the values
the run used.

**Total batch.** A recipe's optimizer settings belong to its total batch (lyakaap: 128 images per step on 4
GPUs, RECIPES §2.2). `trainer.total_batch` states it; on fewer GPUs isc-train accumulates gradients over
`total_batch / (data.batch_size × devices × num_nodes)` micro-batches, so the optimizer sees as many images per
step as the recipe's and its learning rate stays the recipe's (we chose accumulation over a linear LR rule:
it changes no recipe value). Accumulation is exact for per-sample losses; it is not for what a batch shares —
InfoNCE/NT-Xent contrast a view with the other views of its own micro-batch only, XBM's memory fills per
micro-batch, BatchNorm normalises per micro-batch, the batch-hard triplet mines within it (README "Run a
recipe on your GPUs").

**Data workers.** `data.num_workers: auto` is 1 when the model trains on the CPU (the workers share its cores:
the CPU default run) and the node's cores divided among its GPU processes otherwise, minus one for the
training process, at most MAX_WORKERS each: a one-worker GPU run is data-bound.

**Threads and devices.** `configure_threads` sets torch's intra-op threads (`torch_threads`); `resolve_device`
turns a device setting (`auto`, `cpu`, `cuda:1`) into a torch.device.
"""

from __future__ import annotations

import logging
import os

import torch
from omegaconf import DictConfig

log = logging.getLogger(__name__)

MAX_WORKERS = 16  # per training process; beyond this the DataLoader's start-up and memory cost more than they give


def _count(value, key: str) -> int:
    if isinstance(value, (list, tuple)):
        return len(value)
    if isinstance(value, int) and value >= 1:
        return value
    if isinstance(value, str) and value.isdigit() and int(value) >= 1:
        return int(value)
    raise ValueError(
        f"{key}={value!r}: trainer.total_batch needs a number of devices (e.g. {key}=1), not "
        f"'auto' or -1, to work out the gradient accumulation"
    )


def accumulation(total_batch: int | None, batch_size: int, devices, num_nodes, accumulate: int = 1) -> int:
    """Micro-batches per optimizer step so that `batch_size × devices × num_nodes × accumulation = total_batch`;
    `accumulate` (trainer.accumulate_grad_batches) when there is no total batch."""
    if total_batch is None:
        return int(accumulate)
    per_step = int(batch_size) * _count(devices, "trainer.devices") * _count(num_nodes, "trainer.num_nodes")
    steps, rest = divmod(int(total_batch), per_step)
    if rest or steps < 1:
        raise ValueError(
            f"trainer.total_batch={total_batch} is not a multiple of data.batch_size × trainer.devices × "
            f"trainer.num_nodes = {batch_size} × {devices} × {num_nodes} = {per_step}, so no whole number of "
            f"accumulated micro-batches makes it: choose data.batch_size so that {total_batch} / (batch × devices "
            f"× nodes) is a whole number (e.g. a divisor of {total_batch // _count(devices, 'trainer.devices')}), or "
            f"set trainer.total_batch=null to train with {per_step} images per step"
        )
    if int(accumulate) not in (1, steps):
        raise ValueError(
            f"trainer.accumulate_grad_batches={accumulate} contradicts trainer.total_batch={total_batch} "
            f"(which needs {steps}); set one of them, e.g. trainer.total_batch=null"
        )
    return steps


def trains_on_gpu(accelerator: str | None) -> bool:
    if accelerator in ("gpu", "cuda", "mps"):
        return True
    return accelerator in (None, "auto") and (torch.cuda.is_available() or torch.backends.mps.is_available())


def data_workers(setting, accelerator: str | None, devices) -> int:
    """`data.num_workers`: an integer as given; `auto` as described in the module docstring."""
    if setting != "auto":
        return int(setting)
    if not trains_on_gpu(accelerator):
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        processes = _count(devices, "trainer.devices")
    except ValueError:  # devices=auto / -1: every GPU of the node
        processes = max(1, torch.cuda.device_count())
    return max(1, min(MAX_WORKERS, cores // processes - 1))


def fit_to_hardware(cfg: DictConfig) -> None:
    """Resolve `data.num_workers: auto` and `trainer.total_batch` into the config, in place, and say so."""
    trainer = cfg.trainer
    workers = data_workers(cfg.data.num_workers, trainer.get("accelerator"), trainer.get("devices", 1))
    if cfg.data.num_workers == "auto":
        log.info("data.num_workers=auto: %d DataLoader workers per training process", workers)
    cfg.data.num_workers = workers
    total = trainer.get("total_batch")
    steps = accumulation(
        total,
        cfg.data.batch_size,
        trainer.get("devices", 1),
        trainer.get("num_nodes", 1),
        trainer.get("accumulate_grad_batches", 1),
    )
    if total is not None and steps > 1:
        log.info(
            "trainer.total_batch=%s: %s images × %s devices × %s nodes per micro-batch, so gradients are "
            "accumulated over %d micro-batches per optimizer step (README: Run a recipe on your GPUs)",
            total,
            cfg.data.batch_size,
            trainer.get("devices"),
            trainer.get("num_nodes", 1),
            steps,
        )
    trainer.accumulate_grad_batches = steps


def configure_threads(setting: int | str | None, num_workers: int) -> None:
    """torch's intra-op threads in the training process. `auto` leaves one core to each data worker, so
    that on a small CPU machine the model and the augmentations do not fight over the same cores."""
    if setting is None:
        return
    if setting == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        setting = max(1, cores - num_workers)
    torch.set_num_threads(int(setting))


def resolve_device(name: str) -> torch.device:
    """'auto' → cuda when torch sees a GPU, else cpu; a named device must exist (a CUDA device asked for on a
    machine without one is an error that says so, not a crash at the first tensor moved)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)  # raises on a malformed name
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: torch sees no CUDA device; use auto or cpu")
    return device
