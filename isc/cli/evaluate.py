"""`isc-eval ckpt_path=... [overrides]`: score a checkpoint on a DISC-layout dataset."""

from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig

from isc.config import check_required, config_dir, quiet_third_party_loggers


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="eval")
def main(cfg: DictConfig) -> None:
    check_required(cfg)  # also in evaluate_checkpoint(); here before the heavy imports
    quiet_third_party_loggers()
    from isc.evaluate import evaluate_checkpoint

    metrics = evaluate_checkpoint(cfg)
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
