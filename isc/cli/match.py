"""`isc-match ckpt_path=... [verifier=sift] [query_crops=grid] [overrides]`: the matching track on a DISC-layout
dataset (predictions.csv for isc-score, metrics.json)."""

from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig

from isc.config import config_dir, quiet_third_party_loggers


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="match")
def main(cfg: DictConfig) -> None:
    quiet_third_party_loggers()
    from isc.match.pipeline import match

    metrics = match(cfg)
    print(json.dumps({k: metrics[k] for k in ("uAP", "descriptor_uAP", "candidates_uAP", "candidate_recall")}
                     | {"ms_per_query": metrics["verification"]["ms_per_query"],
                        "ms_per_pair": metrics["verification"]["ms_per_pair"]}))


if __name__ == "__main__":
    main()
