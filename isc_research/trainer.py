"""The Lightning trainer of every training task (isc-train, isc-train-verifier, isc-train-detector), built from
the `trainer`, `callbacks` and `logger` config groups."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
from omegaconf import DictConfig, OmegaConf

from isc_research.callbacks import EpochSeeding, RetrievalFigures
from isc_research.extras import require_for_target


class LossProgressBar(TQDMProgressBar):
    """Lightning's bar, showing the last logged training loss (the loggers get every term): copied to the host
    when the bar refreshes (every `refresh_rate` steps), not after every batch as Lightning does for metrics
    logged with prog_bar=True."""

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        if "train/loss" in trainer.logged_metrics:
            metrics["loss"] = float(trainer.logged_metrics["train/loss"])
        return metrics


def build_trainer(cfg: DictConfig, output_dir: Path, extra_callbacks: list | tuple = ()) -> L.Trainer:
    """Callbacks of the `callbacks` group, then the loss's, then those of the `trainer` node (e.g. trainer=gpu's
    ModelAcceleration), then EpochSeeding (resumable random draws); figures come last, after the evaluation."""
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks += list(extra_callbacks)
    trainer_node = OmegaConf.to_container(cfg.trainer, resolve=True)
    callbacks += [instantiate(c) for c in trainer_node.pop("callbacks", None) or []]
    trainer_node.pop("total_batch", None)  # isc_research.scaling turned it into accumulate_grad_batches
    callbacks.append(EpochSeeding(cfg.seed))
    if trainer_node.get("enable_progress_bar", True) and not any(isinstance(c, ProgressBar) for c in callbacks):
        # refreshing the loss every step would copy it to the host every step (a GPU sync)
        callbacks.append(LossProgressBar(refresh_rate=int(trainer_node.get("log_every_n_steps") or 50)))
    callbacks.sort(key=lambda c: isinstance(c, RetrievalFigures))  # stable: figures after the evaluation
    for name, node in (cfg.get("logger") or {}).items():
        if node is not None:
            require_for_target(node.get("_target_"), f"logger={name}")
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    return instantiate(trainer_node, callbacks=callbacks, logger=loggers or False, default_root_dir=str(output_dir))
