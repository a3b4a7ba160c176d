"""Main-process random draws that depend on (seed, epoch, rank) only, so that a resumed run replays them."""

from __future__ import annotations

import lightning as L
import torch

from isc_research.data.sampling import sample_seed


class EpochSeeding(L.Callback):
    """Reseeds torch's RNG at the start of every training epoch from (seed, epoch, rank). The draws made in the
    training process (SSCD's batch mixup, dropout / drop-path) then restart identically when a run resumes from
    an epoch-end checkpoint; the data's own draws are seeded per sample (isc_research.data.sampling.SeededSamples)."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        # the rank enters as a negative "sample index", so these streams never coincide with a sample's
        torch.default_generator.manual_seed(sample_seed(self.seed, trainer.current_epoch, 2**31 + trainer.global_rank))
