"""`isc-train-detector trainer=ddp_sim` (2 CPU processes, gloo), as a user launches it: every validation scores all
queries, gathered from both processes, so its rates and counts are one process's.

The processes validate the initial weights (no training step): torchvision's MobileNetV3 backbone normalises
with BatchNorm, which on CPU (no SyncBatchNorm) uses each process's share of the batch, so trained weights differ
from one process's by design; the training order itself is isc_research.data.sampling's (epoch_sampler), DDP-exact as
tests/test_ddp.py and tests/test_verifier_ddp.py show for isc-train and isc-train-verifier."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_detect_train import detector_cfg, detector_overrides

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

# 15 queries: an odd number, so that the DistributedSampler pads one and the gathered queries must drop it.
SAME = (
    "dataset.build.n_queries=15",
    "trainer.limit_train_batches=0",
    "validation.min_confidence=0.0",
    "detector.box_score_thresh=0.0",
)


def test_two_processes_validate_like_one_process(data_dir, tmp_path):
    from isc_research.detect.train import train_detector

    expected = train_detector(detector_cfg(data_dir, tmp_path / "one", *SAME))
    command = [
        sys.executable,
        "-m",
        "isc_research.cli.train_detector",
        *detector_overrides(data_dir, tmp_path / "ddp", *SAME, "trainer=ddp_sim", "data.batch_size=1"),
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert list((tmp_path / "ddp").glob("*_process_1.log"))  # the second process wrote into the first's folder
    got = json.loads((tmp_path / "ddp" / "metrics.json").read_text())

    assert expected["val/n_boxes"] + expected["val/n_without_box"] == 15  # every query, once
    assert expected["val/false_positive_rate"] > 0  # min_confidence 0: the untrained detector's boxes count
    for key in (
        "val/n_boxes",
        "val/n_without_box",
        "val/box_recall",
        "val/box_top1_recall",
        "val/false_positive_rate",
        "val/box_replaced_wrongly",
    ):
        assert got[key] == pytest.approx(expected[key], abs=1e-9, nan_ok=True), key
