"""lyakaap's 4-stage chain runs end to end on the smoke mini-DISC: each stage starts from the checkpoint its
recipe names (recipe.init_checkpoint: epoch005 / epoch005 / epoch001, lyakaap's checkpoint_0005 / 0005 / 0001),
kept by the per-epoch checkpoints, and the loaded weights are that checkpoint's tensors, not a fresh init."""

from __future__ import annotations
from pathlib import Path


import pytest
import torch
from omegaconf import OmegaConf

import isc_research.train
from tests.conftest import compose_config

pytestmark = pytest.mark.slow

# epochs each smoke stage runs: enough for the next stage's checkpoint to exist (stage 2 and 3 are picked at
# epoch index 5, stage 4 at index 1)
EPOCHS = {1: 6, 2: 6, 3: 2, 4: 1}


def test_lyakaap_four_stage_chain_starts_each_stage_from_the_previous_one(data_dir, tmp_path, monkeypatch):
    loaded = []
    original = isc_research.train.initialise_from

    def spy(module, checkpoint):
        original(module, checkpoint)
        loaded.append((checkpoint, {k: v.detach().clone() for k, v in module.model.state_dict().items()}))

    monkeypatch.setattr(isc_research.train, "initialise_from", spy)
    previous = None
    for stage in (1, 2, 3, 4):
        name = f"lyakaap_stage{stage}"
        overrides = [
            "debug=smoke",
            f"paths.data_dir={data_dir}",
            f"paths.output_dir={tmp_path / name}",
            f"experiment={name}",
            f"trainer.max_epochs={EPOCHS[stage]}",
            "validate_before_training=false",
            "dataset.max_training=16",
            "trainer.check_val_every_n_epoch=100",
        ]  # small: 2 steps an epoch
        if stage == 4:
            overrides.append("data.batch_size=2")
        if previous is not None:
            selector = compose_config("train", [f"experiment={name}"]).recipe.init_checkpoint
            overrides.append(f"init_from={previous / 'checkpoints' / selector}")
        cfg = compose_config("train", overrides)
        OmegaConf.resolve(cfg)
        isc_research.train.train(cfg)
        if previous is not None:
            path, weights = loaded[-1]
            assert str(path) == cfg.init_from
            saved = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
            saved = {k.removeprefix("model."): v for k, v in saved.items() if k.startswith("model.")}
            assert saved.keys() == weights.keys()
            for key, value in saved.items():
                assert torch.equal(value, weights[key]), f"stage {stage}: {key} is not the previous stage's"
            fresh = isc_research.train.build_module(cfg, torch.nn.Identity()).model.state_dict()
            assert any(not torch.equal(fresh[k], v) for k, v in saved.items() if v.is_floating_point()), (
                f"stage {stage} starts from weights equal to a fresh init"
            )
        previous = tmp_path / name
    assert [Path(p).name for p, _ in loaded] == ["epoch005.ckpt", "epoch005.ckpt", "epoch001.ckpt"]
