"""`isc-train [overrides]`: a thin Hydra entry point around isc.train.train."""

from __future__ import annotations

import json
import logging

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from isc.config import check_optimized_metric, check_required, config_dir, optimized_value, quiet_third_party_loggers

log = logging.getLogger("isc.train")


def pin_output_dir(cfg: DictConfig) -> None:
    """Write into the folder Hydra made for this job. A multirun job's folder is <sweep dir>/<job number>
    (not a fresh timestamp, which two jobs of one second would share); Lightning's DDP launcher starts the other
    ranks with `hydra.run.dir=<this folder>`, so they write into it too instead of each resolving `${now:}`
    anew (lightning-hydra-template #393)."""
    cfg.paths.output_dir = HydraConfig.get().runtime.output_dir


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float | None:
    check_optimized_metric(cfg.get("optimized_metric"))
    check_required(cfg)  # also in train(); here before the heavy imports, so that it answers in seconds
    pin_output_dir(cfg)
    quiet_third_party_loggers()
    from isc.train import train  # heavy imports after Hydra has parsed the command line (fast --help)

    metrics = train(cfg)
    log.info("metrics: %s", json.dumps(metrics, sort_keys=True))
    if "init/uAP" in metrics and "val/uAP" in metrics:
        log.info("µAP %.4f at initialisation → %.4f after training", metrics["init/uAP"], metrics["val/uAP"])
    return optimized_value(cfg, metrics)


if __name__ == "__main__":
    main()
