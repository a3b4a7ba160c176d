"""`isc-show-augs augmentation=NAME [show.n_images=6 show.draws=3]`: a PNG grid of a policy's views."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from isc_research.config import config_dir, quiet_third_party_loggers

log = logging.getLogger("isc_research.show_augs")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="show_augs")
def main(cfg: DictConfig) -> None:
    quiet_third_party_loggers()
    from isc_research.augment.grid import evenly_spaced, policy_grid, save_new
    from isc_research.data.datasets import TrainingViews
    from isc_research.data.disc import load_disc

    records = load_disc(cfg.dataset).training
    dataset = TrainingViews(
        records, instantiate(cfg.augmentation), n_views=cfg.data.n_views, draft_size=cfg.data.draft_size
    )
    name = cfg.show.name
    grid = policy_grid(
        dataset,
        evenly_spaced(len(records), cfg.show.n_images),
        cfg.show.draws,
        cfg.show.cell,
        title=f"augmentation={name}  size={cfg.data.train_size}  seed={cfg.show.seed}",
        seed=cfg.show.seed,
    )
    path = save_new(grid, Path(cfg.show.out))
    log.info("wrote %s (%d images × %d draws)", path, cfg.show.n_images, cfg.show.draws)


if __name__ == "__main__":
    main()
