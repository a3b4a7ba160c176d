"""Training throughput: isc's Lightning module (CopyDetectionModule in a lightning.Trainer) against a raw PyTorch
loop with the same model, loss, optimizer, schedule and batch, side by side. Prints JSON.

    .venv/bin/python scripts/bench/train_step.py [--backbone mobilenetv3_small_050] [--size 64] [--batch 64]
        [--steps 20] [--warmup 5] [--repeats 5] [--threads 2] [--device cpu|cuda] [--precision 32|bf16]
        [--channels-last]

GPU, a recipe backbone in bf16:  --device cuda --precision bf16 --backbone resnet50 --size 224 --batch 128

One fixed batch (B images × 2 views of random pixels) is fed every step through a DataLoader in both arms, and
moved to the device every step in both. Each repetition times `steps` optimizer steps (start to start) after
`warmup` untimed ones, in both arms, alternating which arm goes first, and takes each arm's median step time
(robust to bursts of other jobs on a shared CPU); the JSON reports per-arm medians over the repetitions and the
median of the per-repetition ratios (Lightning / raw, images per second): interleaving cancels slow drifts.

--profile-syncs adds one profiled run of each arm (torch.profiler over the timed steps) and reports, per step,
the host-device synchronisations it found: aten::_local_scalar_dense (every .item(), float(), bool() of a tensor)
and, on a GPU, cudaStreamSynchronize / cudaDeviceSynchronize / blocking cudaMemcpy calls — what the Lightning
arm does per step that the raw loop does not.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import lightning as L
import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.data import DataLoader

from isc_research.losses import NTXentLoss
from isc_research.module import CopyDetectionModule
from isc_research.optim import parameter_groups, warmup_cosine


def model_arguments(args) -> dict:
    return {"backbone": args.backbone, "pretrained": False, "embedding_dim": 128}


def make_batch(args) -> dict:
    generator = torch.Generator().manual_seed(0)
    views = torch.rand(args.batch, 2, 3, args.size, args.size, generator=generator)
    return {"views": views, "label": torch.arange(args.batch), "skipped": 0}


def loader(batch: dict, steps: int) -> DataLoader:
    """The same batch `steps` times (batch_size=None: no collation, as a pre-batched dataset)."""
    return DataLoader([batch] * steps, batch_size=None, shuffle=False, num_workers=0)


def optimizer_factory(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-6)


def make_module(args) -> CopyDetectionModule:
    torch.manual_seed(0)
    return CopyDetectionModule(
        model_arguments(args),
        NTXentLoss(0.1),
        optimizer=optimizer_factory,
        scheduler=lambda optimizer, total_steps: warmup_cosine(optimizer, total_steps),
    )


SYNC_EVENTS = ("aten::_local_scalar_dense", "cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpy")


class StepProfiler(L.Callback):
    """torch.profiler around the steps after `warmup`; `counts` = synchronising events per step."""

    def __init__(self, warmup: int, device: str):
        self.warmup, self.device, self.prof, self.steps = warmup, device, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device == "cuda" else [])
            self.prof = profile(activities=activities)
            self.prof.__enter__()
        if batch_idx >= self.warmup:
            self.steps += 1

    def on_train_end(self, trainer, pl_module) -> None:
        if self.prof is not None:
            self.prof.__exit__(None, None, None)

    @property
    def counts(self) -> dict[str, float]:
        found = {}
        for event in self.prof.key_averages():
            if event.key in SYNC_EVENTS:
                found[event.key] = round(event.count / max(1, self.steps), 2)
        return found


class StepTimer(L.Callback):
    """Start-to-start intervals of the training steps after `warmup` (each includes everything Lightning does per
    step: fetching, moving the batch, hooks, logging), the last one ending when training ends."""

    def __init__(self, warmup: int, device: str):
        self.warmup, self.device, self.starts = warmup, device, []

    def _now(self) -> float:
        if self.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx >= self.warmup:
            self.starts.append(self._now())

    def on_train_end(self, trainer, pl_module) -> None:
        self.starts.append(self._now())

    @property
    def intervals(self) -> list[float]:
        return [b - a for a, b in zip(self.starts, self.starts[1:])]


def run_lightning(args, batch: dict, timer=None) -> list[float]:
    module = make_module(args)
    if args.channels_last:
        module.model.to(memory_format=torch.channels_last)
    timer = timer or StepTimer(args.warmup, args.device)
    precision = "bf16-mixed" if args.precision == "bf16" else "32-true"
    trainer = L.Trainer(
        accelerator=args.device,
        devices=1,
        precision=precision,
        max_steps=args.warmup + args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(module, train_dataloaders=loader(batch, args.warmup + args.steps))
    return timer


def run_raw(args, batch: dict, timer=None) -> list[float]:
    module = make_module(args).to(args.device)  # the same initial weights, loss and optimizer groups
    if args.channels_last:
        module.model.to(memory_format=torch.channels_last)
    module.train()
    optimizer = optimizer_factory(parameter_groups(module))
    scheduler = warmup_cosine(optimizer, args.warmup + args.steps)
    autocast = torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    timer = timer or StepTimer(args.warmup, args.device)
    previous = None
    for step, item in enumerate(loader(batch, args.warmup + args.steps)):
        timer.on_train_batch_start(None, None, item, step)
        views = item["views"].to(args.device, non_blocking=True)
        labels = item["label"].to(args.device, non_blocking=True)
        images, labels = views.flatten(0, 1), labels.repeat_interleave(views.shape[1])
        if previous is not None and not torch.isfinite(previous):  # the module's NaN guard, one step late as there
            raise FloatingPointError("non-finite loss")
        with autocast:
            out = module.loss(module.model(images), labels)
        previous = out["loss"].detach()
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        scheduler.step()
    if not torch.isfinite(previous):
        raise FloatingPointError("non-finite loss")
    timer.on_train_end(None, None)
    return timer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="mobilenetv3_small_050")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=("32", "bf16"), default="32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--profile-syncs", action="store_true", help="count host-device syncs per step in each arm")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batch = make_batch(args)
    per_image = args.batch * 2
    raw, lightning, ratios = [], [], []
    for repeat in range(args.repeats):
        arms = (("raw", run_raw), ("lightning", run_lightning))
        steps = {name: fn(args, batch).intervals for name, fn in (arms if repeat % 2 == 0 else arms[::-1])}
        # median step time: robust to the bursts of other jobs on a shared CPU
        raw.append(per_image / statistics.median(steps["raw"]))
        lightning.append(per_image / statistics.median(steps["lightning"]))
        ratios.append(lightning[-1] / raw[-1])
    syncs = None
    if args.profile_syncs:
        syncs = {
            name: fn(args, batch, StepProfiler(args.warmup, args.device)).counts
            for name, fn in (("raw", run_raw), ("lightning", run_lightning))
        }
    print(
        json.dumps(
            {
                "benchmark": "train_step",
                "backbone": args.backbone,
                "size": args.size,
                "images_per_step": args.batch * 2,
                "steps": args.steps,
                "warmup": args.warmup,
                "repeats": args.repeats,
                "device": args.device,
                "precision": args.precision,
                "channels_last": args.channels_last,
                "threads": torch.get_num_threads(),
                "raw_images_per_s": [round(x, 1) for x in raw],
                "lightning_images_per_s": [round(x, 1) for x in lightning],
                "raw_median": round(statistics.median(raw), 1),
                "lightning_median": round(statistics.median(lightning), 1),
                "ratio_median": round(statistics.median(ratios), 4),
                "ratios": [round(r, 4) for r in ratios],
                "host_syncs_per_step": syncs,
                "machine": f"{platform.processor() or platform.machine()}, "
                f"{torch.get_num_threads()} threads, torch {torch.__version__}",
                "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
