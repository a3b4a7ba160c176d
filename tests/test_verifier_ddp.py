"""`isc-train-verifier trainer=ddp_sim` (2 CPU processes, gloo), as a user launches it: the processes train the
same steps as one process on the global batch (isc_research.data.sampling's order and draws), and every validation
scores
all pairs, gathered from both processes, so its metrics are one process's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from isc_research.verifier.train import train_verifier
from tests.conftest import compose_config
from tests.test_verifier_train import TINY

pytestmark = pytest.mark.slow

# test_efficientnet_gn normalises with GroupNorm (no BatchNorm statistics, which on CPU would be each process's own);
# 15 queries with 2 candidates each next to their true reference: an odd number of pairs, so that the
# DistributedSampler pads one and the gathered scores must drop the duplicate.
SAME = (
    "backbone=test_resnet",
    "backbone.name=test_efficientnet_gn",
    "dataset.build.n_queries=15",
    "pairs.val_negatives=2",
    "data.pair_size=32",
    "data.num_workers=0",
    "torch_threads=1",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "verifier_device=cpu",
    "mining.device=cpu",
    "augmentation=none",
)


def step_losses(run: Path) -> pd.Series:
    rows = pd.read_csv(run / "csv" / "metrics.csv").dropna(subset=["train/loss"])
    return rows.set_index("step")["train/loss"]


def test_two_processes_train_and_validate_like_one_process(data_dir, tmp_path):
    ddp_run = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "isc_research.cli.train_verifier",
        f"paths.data_dir={data_dir}",
        f"paths.output_dir={ddp_run}",
        *TINY,
        *SAME,
        "trainer=ddp_sim",
        "data.batch_size=4",
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert list(ddp_run.glob("*_process_1.log"))  # the second process wrote into the first's folder
    got = json.loads((ddp_run / "metrics.json").read_text())

    single = compose_config(
        "train_verifier",
        [
            f"paths.data_dir={data_dir}",
            f"paths.output_dir={tmp_path / 'one'}",
            *TINY,
            *SAME,
            "trainer.accelerator=cpu",
            "data.batch_size=8",
        ],
    )
    OmegaConf.resolve(single)
    expected = train_verifier(single)

    assert expected["val/pairs"] % 2 == 1 and got["val/pairs"] == expected["val/pairs"]  # all pairs, once each
    ddp_losses, single_losses = step_losses(ddp_run), step_losses(tmp_path / "one")
    assert len(single_losses) == 12 and list(ddp_losses.index) == list(single_losses.index)  # 48 anchors / 8, 2 epochs
    assert ddp_losses.to_numpy() == pytest.approx(single_losses.to_numpy(), rel=1e-4)
    for key in ("init/uAP", "init/auc", "val/uAP", "val/auc", "val/accuracy", "val/positives"):
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key
