"""DDP equivalence: 2 CPU processes (gloo, DistributedDataParallel) give the same loss values, gradients,
parameter updates and memory contents as 1 process on the global batch, for every loss, over a few SGD steps."""

from __future__ import annotations

import os
import socket
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from isc_research.losses import (
    ArcFaceLoss,
    BarlowTwinsLoss,
    ContrastiveXBMLoss,
    InfoNCEEntropyLoss,
    NTXentLoss,
    VisionForceLoss,
)

IN_DIM, DIM, IMAGES, STEPS = 12, 8, 6, 3


def make_loss(name: str) -> nn.Module:
    torch.manual_seed(1)
    return {
        "ntxent": lambda: NTXentLoss(0.2),
        "infonce_entropy": lambda: InfoNCEEntropyLoss(0.1, entropy_weight=3.0),
        # 12 embeddings per step, memory 20: wraps around in the second step
        "contrastive_xbm": lambda: ContrastiveXBMLoss(DIM, pos_margin=0.1, neg_margin=1.3, memory_size=20),
        "contrastive_xbm_delayed": lambda: ContrastiveXBMLoss(DIM, neg_margin=1.3, memory_size=30, start_iteration=1),
        "arcface": lambda: ArcFaceLoss(IMAGES, DIM, scale=10.0, margin=0.3),
        "barlow_twins": lambda: BarlowTwinsLoss(DIM, [16, 16], lambda_offdiag=0.05),
        "visionforce": lambda: VisionForceLoss(IMAGES, DIM, hidden_dim=16, wide_dim=16),
        "ntxent_mixup": lambda: NTXentLoss(0.2),
    }[name]().double()


CASES = [
    "ntxent",
    "infonce_entropy",
    "contrastive_xbm",
    "contrastive_xbm_delayed",
    "arcface",
    "barlow_twins",
    "visionforce",
    "ntxent_mixup",
]


class Model(nn.Module):
    def __init__(self, loss: nn.Module):
        super().__init__()
        torch.manual_seed(2)
        self.linear = nn.Linear(IN_DIM, DIM).double()
        self.loss = loss

    def forward(self, x, labels):
        return self.loss(F.normalize(self.linear(x), dim=1), labels)


def global_batch(case: str, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two views of IMAGES images (labels 0..IMAGES-1, views interleaved); mixup case: (N, 2) label sets."""
    generator = torch.Generator().manual_seed(100 + step)
    x = torch.randn(2 * IMAGES, IN_DIM, generator=generator, dtype=torch.float64)
    labels = torch.arange(IMAGES).repeat_interleave(2)
    if case == "ntxent_mixup":  # rows 0 and 5 also contain image 4 / image 0
        labels = torch.stack([labels, torch.full_like(labels, -1)], dim=1)
        labels[0, 1], labels[5, 1] = 4, 0
    return x, labels


def shard(n: int, rank: int, world: int) -> slice:
    """Uneven split for world 2 (7 + 5 rows) to exercise padded gathers."""
    cut = [0, 7, n] if world == 2 else [0, n]
    return slice(cut[rank], cut[rank + 1])


def run(case: str, rank: int = 0, world: int = 1) -> list[dict]:
    model = Model(make_loss(case))
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    records = []
    for step in range(STEPS):
        x, labels = global_batch(case, step)
        part = shard(len(x), rank, world)
        optimizer.zero_grad()
        out = model(x[part], labels[part])
        out["loss"].backward()
        core = model.module if world > 1 else model
        records.append(
            {
                "loss": out["loss"].item(),
                "grads": {k: p.grad.clone() for k, p in core.named_parameters() if p.grad is not None},
            }
        )
        optimizer.step()
    core = model.module if world > 1 else model
    records.append({"state": {k: v.clone() for k, v in core.state_dict().items()}})
    return records


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        torch.save({case: run(case, rank, world) for case in CASES}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_results():
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_worker, args=(2, _free_port(), out_dir), nprocs=2, join=True)
        return [torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=False) for r in range(2)]


@pytest.mark.parametrize("case", CASES)
def test_two_processes_match_one_process_on_the_global_batch(case, ddp_results):
    reference = run(case)
    for rank, results in enumerate(ddp_results):
        got = results[case]
        for step in range(STEPS):
            assert got[step]["loss"] == pytest.approx(reference[step]["loss"], rel=1e-9, abs=1e-12), (rank, step)
            assert got[step]["grads"].keys() == reference[step]["grads"].keys()
            for name, grad in reference[step]["grads"].items():
                torch.testing.assert_close(
                    got[step]["grads"][name],
                    grad,
                    rtol=1e-8,
                    atol=1e-12,
                    msg=f"{case} rank {rank} step {step}: gradient of {name}",
                )
        for name, value in reference[-1]["state"].items():  # parameters after 3 updates, memory bank, pointers
            torch.testing.assert_close(
                got[-1]["state"][name], value, rtol=1e-8, atol=1e-12, msg=f"{case} rank {rank}: state {name}"
            )
