"""`isc-train-detector [overrides]`: a thin Hydra entry point around isc.detect.train.train_detector."""

from __future__ import annotations

import json
import logging

import hydra
from omegaconf import DictConfig

from isc.config import config_dir, quiet_third_party_loggers

log = logging.getLogger("isc.detect")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train_detector")
def main(cfg: DictConfig) -> float:
    quiet_third_party_loggers()
    from isc.detect.train import train_detector  # heavy imports after Hydra has parsed the command line

    metrics = train_detector(cfg)
    log.info("metrics: %s", json.dumps(metrics, sort_keys=True))
    return float(metrics["val/box_recall"])


if __name__ == "__main__":
    main()
