"""`isc-train-verifier [overrides]`: a thin Hydra entry point around isc.verifier.train.train_verifier."""

from __future__ import annotations

import json
import logging

import hydra
from omegaconf import DictConfig

from isc.config import config_dir, optimized_value, quiet_third_party_loggers

log = logging.getLogger("isc.train_verifier")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train_verifier")
def main(cfg: DictConfig) -> float | None:
    quiet_third_party_loggers()
    from isc.verifier.train import train_verifier  # heavy imports after Hydra has parsed the command line

    metrics = train_verifier(cfg)
    log.info("metrics: %s", json.dumps(metrics, sort_keys=True))
    for key in ("accuracy", "auc", "uAP"):
        if f"init/{key}" in metrics and f"val/{key}" in metrics:
            log.info("pair %s %s at initialisation → %s after training", key, metrics[f"init/{key}"], metrics[f"val/{key}"])
    return optimized_value(cfg, metrics)


if __name__ == "__main__":
    main()
