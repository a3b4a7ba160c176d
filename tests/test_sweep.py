"""Hydra multiruns of isc-train: a 2-value sweep, a 2-trial Optuna search over val/uAP, and the SLURM launcher
config (composed only: no cluster here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import CONF

TINY = (
    "debug=smoke",
    "trainer.max_epochs=1",
    "validate_before_training=false",
    "trainer.check_val_every_n_epoch=1",
    "callbacks.retrieval_figures=null",
)


def isc_train(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.run(
        [sys.executable, "-m", "isc_research.cli.train", *args], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.mark.slow
def test_two_value_multirun_writes_one_folder_per_job(data_dir, tmp_path):
    sweep = tmp_path / "sweep"
    done = isc_train(
        "-m",
        *TINY,
        f"paths.data_dir={data_dir}",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"hydra.sweep.dir={sweep}",
        "optimizer.lr=0.05,0.2",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for job, lr in (("0", 0.05), ("1", 0.2)):
        assert OmegaConf.load(sweep / job / "config.yaml").optimizer.lr == lr
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "logs" / "train" / "runs").exists()  # jobs write into the sweep, nowhere else
    # the per-job table at the end of the sweep, printed and in summary.md
    rows = [json.loads((sweep / job / "metrics.json").read_text())["val/uAP"] for job in ("0", "1")]
    table = (sweep / "summary.md").read_text()
    assert table.startswith("| job | optimizer.lr | val/uAP | best/uAP |")
    assert all(f"| {lr} | {uap:.4f} |" in table for lr, uap in zip((0.05, 0.2), rows)) and table in done.stdout + "\n"
    assert "isc-train sweep finished in" in done.stdout


@pytest.mark.slow
def test_optuna_search_maximises_val_uap(data_dir, tmp_path):
    sweep = tmp_path / "optuna"
    done = isc_train(
        "hparams_search=uap_optuna",
        *TINY,
        f"paths.data_dir={data_dir}",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    trials = [json.loads((sweep / job / "metrics.json").read_text())["val/uAP"] for job in ("0", "1")]
    assert not (sweep / "2").exists()
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert result["best_value"] == pytest.approx(max(trials))
    best = OmegaConf.load(sweep / str(trials.index(max(trials))) / "config.yaml")
    assert result["best_params"]["optimizer.lr"] == pytest.approx(best.optimizer.lr)
    assert 0.02 <= best.optimizer.lr <= 0.5 and 0.05 <= best.loss.temperature <= 0.3


def test_optuna_search_rejects_an_unknown_objective_before_training(tmp_path):
    done = isc_train(
        "hparams_search=uap_optuna",
        "debug=smoke",
        "optimized_metric=val/uap",
        f"hydra.sweep.dir={tmp_path / 'optuna'}",
        "hydra.sweeper.n_trials=2",
    )
    assert done.returncode != 0
    assert "optimized_metric='val/uap' is not a metric" in done.stderr and "val/uAP" in done.stderr
    assert not list((tmp_path / "optuna").rglob("metrics.json"))


def test_slurm_launcher_runs_one_task_per_device(tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            [
                "trainer=multi_node",
                "hydra/launcher=slurm",
                f"paths.output_dir={tmp_path}",
                "hydra.launcher.partition=gpu",
            ],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert launcher.tasks_per_node == launcher.gpus_per_node == cfg.trainer.devices == 4
    assert launcher.nodes == cfg.trainer.num_nodes == 2 and launcher.max_num_timeout > 0 and cfg.resume
