"""Resume after a crash (kill -9 mid-epoch, then the same command again) ends exactly where an uninterrupted run
ends; a non-finite loss stops the run naming the step and leaves the last good checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from isc_research.train import resume_checkpoint, train

# memory bank (XBM) + SGD momentum + per-step warmup-cosine schedule + augmentations drawn in a data worker:
# every piece of state a resume must restore
RUN = (
    "loss=contrastive_xbm",
    "loss.memory_size=200",
    "data.num_workers=1",
    "trainer.max_epochs=3",
    "trainer.check_val_every_n_epoch=3",
    "validate_before_training=false",
)


class KillOnce(L.Callback):
    """Test helper: SIGKILL this process after training step `step`, unless `marker` exists (then it was
    killed already and this is the rerun)."""

    def __init__(self, step: int, marker: str):
        self.step, self.marker = step, Path(marker)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and not self.marker.exists():
            self.marker.write_text(str(trainer.global_step))
            os.kill(os.getpid(), signal.SIGKILL)


class PoisonWeights(L.Callback):
    """Test helper: sets the model's weights to NaN before training step `step` (a diverged run)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.model.projection.parameters()).fill_(float("nan"))


def final_state(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result_as_an_uninterrupted_run(smoke_cfg, data_dir, tmp_path):
    crashed = tmp_path / "crashed"
    # 6 steps per epoch: killed in the middle of the second epoch, after epoch 1's last.ckpt (step 6)
    command = [
        sys.executable,
        "-m",
        "isc_research.cli.train",
        "debug=smoke",
        f"paths.data_dir={data_dir}",
        f"paths.output_dir={crashed}",
        *RUN,
        "+callbacks.kill._target_=tests.test_resume.KillOnce",
        "+callbacks.kill.step=9",
        f"+callbacks.kill.marker={tmp_path / 'killed'}",
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    assert final_state(crashed)["global_step"] == 6 and not (crashed / "metrics.json").exists()

    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)  # the same command
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming from" in again.stderr + again.stdout

    reference = smoke_cfg(*RUN)
    expected = train(reference)
    got = json.loads((crashed / "metrics.json").read_text())
    for key in ("val/uAP", "val/recall_at_rank10", "best/uAP", "train/loss", "train/epoch_loss"):
        assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-7), key
    # the CSV log holds every step once: the crashed part up to the checkpoint, then the resumed part
    losses = [
        pd.read_csv(run / "csv" / "metrics.csv").dropna(subset=["train/loss"]).set_index("step")["train/loss"]
        for run in (crashed, Path(reference.paths.output_dir))
    ]
    assert list(losses[0].index) == list(range(18))
    assert losses[0].to_numpy() == pytest.approx(losses[1].to_numpy(), rel=1e-5)
    resumed, uninterrupted = final_state(crashed), final_state(Path(reference.paths.output_dir))
    assert resumed["global_step"] == uninterrupted["global_step"] == 18
    for key, value in uninterrupted["state_dict"].items():  # weights and memory bank
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_ckpt_path_last_finds_this_folder_or_the_newest_run_of_the_same_settings(tmp_path):
    from isc_research.runs import write_status

    def cfg(ckpt_path, resume=True, seed=0):
        return OmegaConf.create(
            {
                "ckpt_path": ckpt_path,
                "resume": resume,
                "task_name": "train",
                "seed": seed,
                "paths": {"log_dir": str(tmp_path / "logs")},
            }
        )

    runs = tmp_path / "logs" / "train" / "runs"
    older, newer, other = (
        runs / name / "checkpoints" for name in ("2026-01-01_00-00-00", "2026-01-02_00-00-00", "2026-01-03_00-00-00")
    )
    for folder, mtime, seed in ((older, 1000, 0), (newer, 2000, 0), (other, 3000, 1)):
        folder.mkdir(parents=True)
        made_with = OmegaConf.to_container(cfg(None, seed=seed))
        torch.save({"state_dict": {}, "hyper_parameters": {"config": made_with}}, folder / "last.ckpt")
        write_status(folder.parent, "finished", made_with)
        os.utime(folder / "last.ckpt", (mtime, mtime))
    here = runs / "now"

    assert resume_checkpoint(cfg("last"), here) == newer / "last.ckpt"  # the newest run (seed 1) is another experiment
    assert resume_checkpoint(cfg("last", seed=1), here) == other / "last.ckpt"
    assert resume_checkpoint(cfg(None), here) is None  # a fresh folder: a fresh run
    assert resume_checkpoint(cfg(None), older.parent) == older / "last.ckpt"  # same folder again: continue
    assert resume_checkpoint(cfg(None, resume=False), older.parent) is None
    assert resume_checkpoint(cfg("last"), older.parent) == older / "last.ckpt"
    with pytest.raises(ValueError, match=r"other settings than this command \(seed: 0 → 2\)"):
        resume_checkpoint(cfg("last", seed=2), older.parent)  # this folder's checkpoint, another experiment
    with pytest.raises(FileNotFoundError, match="none of the 3 runs .* was made with this configuration"):
        resume_checkpoint(cfg("last", seed=2), here)
    with pytest.raises(FileNotFoundError, match="ckpt_path='nope.ckpt'"):
        resume_checkpoint(cfg("nope.ckpt"), here)
    with pytest.raises(FileNotFoundError, match="no checkpoints/last.ckpt"):
        resume_checkpoint(OmegaConf.merge(cfg("last"), {"task_name": "other"}), here)


@pytest.mark.slow
def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(smoke_cfg):
    cfg = smoke_cfg(
        "validate_before_training=false",
        "trainer.max_epochs=3",
        "+callbacks.poison._target_=tests.test_resume.PoisonWeights",
        "+callbacks.poison.step=8",
    )
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    with pytest.raises(
        FloatingPointError,
        match=r"(?s)loss is nan at global step 8.*last good checkpoint is "
        rf".*{last.name} \(end of epoch 0\)",
    ):
        train(cfg)
    state = final_state(Path(cfg.paths.output_dir))
    assert state["global_step"] == 6
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
