"""DDP through Lightning, as a user launches it: `isc-train trainer=ddp_sim` (2 CPU processes, gloo) trains the
same steps as one process on the global batch, scores the same µAP, and writes one run folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from isc_research.train import train

pytestmark = pytest.mark.slow

# test_efficientnet_gn normalises with GroupNorm: no BatchNorm statistics, which on CPU (no SyncBatchNorm) would be
# each process's own; 15 queries + 24 references = 39 validation images: the DistributedSampler pads one.
SAME = (
    "backbone.name=test_efficientnet_gn",
    "dataset.build.n_queries=15",
    "trainer.check_val_every_n_epoch=1",
    "data.eval_batch_size=8",
)


def step_losses(run: Path) -> pd.Series:
    rows = pd.read_csv(run / "csv" / "metrics.csv").dropna(subset=["train/loss"])
    return rows.set_index("step")["train/loss"]


def test_two_processes_train_like_one_process_on_the_global_batch(smoke_cfg, data_dir, tmp_path):
    logs = tmp_path / "logs"
    command = [
        sys.executable,
        "-m",
        "isc_research.cli.train",
        "debug=smoke",
        f"paths.data_dir={data_dir}",
        f"paths.log_dir={logs}",
        "trainer=ddp_sim",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "data.batch_size=4",
        *SAME,
    ]  # debug=smoke pins one process: ask for two again
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    (ddp_run,) = (logs / "train" / "runs").iterdir()  # the second process wrote into the first's folder
    assert (ddp_run / "train_ddp_process_1.log").is_file()
    single = smoke_cfg("data.batch_size=8", *SAME)
    expected = train(single)
    got = json.loads((ddp_run / "metrics.json").read_text())

    ddp_losses, single_losses = step_losses(ddp_run), step_losses(Path(single.paths.output_dir))
    assert len(single_losses) == 12 and list(ddp_losses.index) == list(single_losses.index)
    assert ddp_losses.to_numpy() == pytest.approx(single_losses.to_numpy(), rel=1e-4)
    # µAP over the gathered, de-duplicated embeddings of both processes = one process's µAP
    for key in ("init/uAP", "val/uAP", "val/recall_at_rank1", "best/uAP"):
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key
