"""data.shared_augmentation_draws (the "separate" retriever's per-step reseeding, RECIPES §6): every image of one
global batch, on every DDP rank, gets the same Python and torch augmentation draws, seeded from (seed, epoch,
batch number), so a resumed run replays them; different batches draw differently; off, each image draws its own."""

from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from isc_research.augment import separate
from isc_research.data.sampling import EpochSampler, SeededSamples
from isc_research.train import build_datamodule
from tests.test_augment_separate import _image, _quiet


class CropsOfOneImage(Dataset):
    """Every index is the same picture under the "separate" policy's crop branch alone (every other step off),
    so two outputs are equal exactly when their crop boxes are; also records the sample's numpy and Python draws."""

    def __init__(self, length: int):
        _, self.view2 = separate.separate_v18(**_quiet(branch_weights=[1, 0, 0]))
        self.image: Image.Image = _image()
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        return self.view2(self.image), float(np.random.random()), random.random()


def _batches(shared: bool, epoch: int = 1, ranks: int = 2) -> dict[int, list]:
    """Samples by global batch number (rank 0's then rank 1's); without `shared`, numbered by position."""
    dataset, out = SeededSamples(CropsOfOneImage(12), seed=7), {}
    for rank in range(ranks):
        sampler = EpochSampler(12, batch_size=2, seed=7, num_replicas=ranks, rank=rank, shared_draws=shared)
        sampler.set_epoch(epoch)
        for n, key in enumerate(sampler):
            batch = key[3] if shared else n // 2
            out.setdefault(batch, []).append(dataset[key])
    return out


def test_one_global_batch_shares_its_draws_on_every_rank():
    batches = _batches(shared=True)
    assert sorted(batches) == [0, 1, 2] and all(len(b) == 4 for b in batches.values())  # 2 per rank × 2 ranks
    for samples in batches.values():
        crops = [s[0] for s in samples]
        assert all(torch.equal(c, crops[0]) for c in crops)  # same crop box for the same image, both ranks
        assert len({s[2] for s in samples}) == 1  # Python's draws too
        assert len({s[1] for s in samples}) == 4  # numpy's stay per image (the source's blur)
    firsts = [b[0][0] for b in batches.values()]
    assert not any(torch.equal(firsts[i], firsts[j]) for i in range(3) for j in range(i + 1, 3))  # batches differ


def test_draws_replay_and_are_per_image_when_off():
    assert all(
        torch.equal(a[0], b[0]) for x, y in zip(_batches(True).values(), _batches(True).values()) for a, b in zip(x, y)
    )  # resumed epoch: same draws
    assert not torch.equal(_batches(True, epoch=2)[0][0][0], _batches(True)[0][0][0])  # another epoch, other draws
    for samples in _batches(shared=False).values():  # default: one batch, different crops
        assert not torch.equal(samples[0][0], samples[1][0])


def test_the_option_reaches_the_sampler(smoke_cfg):
    datamodule = build_datamodule(smoke_cfg("data.shared_augmentation_draws=true"))
    datamodule.prepare_data(), datamodule.setup("fit")
    assert datamodule.train_dataloader().sampler.shared_draws
    assert not build_datamodule(smoke_cfg()).shared_augmentation_draws
