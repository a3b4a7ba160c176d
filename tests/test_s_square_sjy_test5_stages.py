"""S-square sjy_test5's two stages (RECIPES §3.1; ensemble_training_scripts/sjy_test5/README.md): the 384-px run
ends when its loss is below 2.0, and the 512-px stage resumes its whole training state (weights, ArcFace W, Adam
state, schedule, epoch count) with the new size, the only change it may make."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from isc_research.config import MissingRequiredValue, check_required
from isc_research.train import train
from tests.conftest import compose_config

FAST = (
    "validate_before_training=false",
    "callbacks.retrieval_evaluation=null",
    "callbacks.model_checkpoint=null",
    "trainer.limit_val_batches=0",
)


def test_stage_one_ends_when_the_loss_is_below_two():
    cfg = compose_config("train", ["experiment=s_square_sjy_test5"])
    stop = cfg.callbacks.stage_end
    assert stop._target_.endswith("EarlyStopping") and stop.monitor == "train/epoch_loss"
    assert stop.stopping_threshold == 2.0 and stop.mode == "min" and stop.patience > 10**5
    second = compose_config("train", ["experiment=s_square_sjy_test5_stage2"])
    assert second.callbacks.stage_end is None and second.data.train_size == 512 and cfg.data.train_size == 384
    with pytest.raises(MissingRequiredValue, match=r"ckpt_path \(e\.g\. ckpt_path=\S+last\.ckpt\)"):
        check_required(second)


def test_stage_two_resumes_stage_one_at_its_new_size(data_dir, tmp_path):
    def cfg(name: str, out: Path, *extra: str):
        return compose_config(
            "train",
            [
                "debug=smoke",
                f"experiment={name}",
                f"paths.data_dir={data_dir}",
                f"paths.output_dir={out}",
                *FAST,
                *extra,
            ],
        )

    train(cfg("s_square_sjy_test5", tmp_path / "stage1", "trainer.max_epochs=1"))
    first = tmp_path / "stage1" / "checkpoints" / "last.ckpt"
    before = torch.load(first, map_location="cpu", weights_only=False)
    with pytest.raises(ValueError, match=r"other settings than this command \(optimizer\.lr: 0\.001 → 0\.5\)"):
        train(
            cfg(
                "s_square_sjy_test5_stage2",
                tmp_path / "wrong",
                "data.train_size=64",
                "trainer.max_epochs=2",
                f"ckpt_path={first}",
                "optimizer.lr=0.5",
            )
        )  # only the declared changes may differ
    train(
        cfg(
            "s_square_sjy_test5_stage2",
            tmp_path / "stage2",
            "data.train_size=64",
            "trainer.max_epochs=2",
            f"ckpt_path={first}",
        )
    )
    after = torch.load(tmp_path / "stage2" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    steps = before["global_step"]
    assert steps == 48 // 8 and after["epoch"] == before["epoch"] + 1 and after["global_step"] == 2 * steps
    adam = after["optimizer_states"][0]["state"]
    assert int(next(iter(adam.values()))["step"]) == 2 * steps  # Adam's state went on, not restarted
    assert after["hyper_parameters"]["config"]["data"]["train_size"] == 64
    assert not after["state_dict"]["loss.weight"].equal(before["state_dict"]["loss.weight"])  # W trained on
