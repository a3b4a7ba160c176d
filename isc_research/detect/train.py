"""`train_detector(cfg)`: config → synthetic overlays + labelled queries → Lightning → metrics and checkpoint."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from isc_research.checkpoints import init_from_weights
from isc_research.data.datamodule import SeededDataModule
from isc_research.data.disc import load_disc
from isc_research.detect.boxes import read_overlay_boxes
from isc_research.detect.model import DetectorModule
from isc_research.detect.synthetic import LabelledQueries, SyntheticOverlays, collate_detection
from isc_research.scaling import configure_threads
from isc_research.trainer import build_trainer

log = logging.getLogger(__name__)

__all__ = ["labelled_queries", "train_detector"]


def labelled_queries(data) -> list:
    """(query record, recorded overlay box or None) for every query of the dataset, from its query_edits.csv."""
    boxes = read_overlay_boxes(Path(data.root) / "query_edits.csv")
    missing = [q.id for q in data.queries if q.id not in boxes]
    if missing:
        raise ValueError(
            f"{Path(data.root) / 'query_edits.csv'} has no row for {len(missing)} queries "
            f"(e.g. {missing[:3]}); rebuild the mini-DISC"
        )
    return [(q, boxes[q.id]) for q in data.queries]


def initialise_detector(module: DetectorModule, path: str | Path) -> None:
    """Start from the detector weights of an earlier isc-train-detector checkpoint (a longer run in stages);
    the optimizer and schedule start fresh."""
    path = Path(str(path)).expanduser()
    weights = init_from_weights(path, "model.", tool="isc-train-detector")
    try:
        module.model.load_state_dict(weights)
    except RuntimeError as error:
        raise ValueError(f"init_from={str(path)!r} does not fit detector.* of this run: {error}") from None
    log.info("detector initialised from %s", path)


def train_detector(cfg: DictConfig) -> dict:
    """Train as configured; returns the final validation metrics (val/box_recall at validation.min_confidence,
    …), detection ms/image during that validation, and the checkpoint path. Writes config.yaml, metrics.json
    and checkpoints/last.ckpt to paths.output_dir."""
    from isc_research.runs import recorded_run
    from isc_research.runs import start_run_folder

    output_dir = Path(cfg.paths.output_dir)
    start_run_folder(
        cfg, output_dir, "isc-train-detector"
    )  # a finished or other run in the folder stops here (isc_research.runs)
    with recorded_run(output_dir, cfg):
        return _train_detector(cfg, output_dir)


def _train_detector(cfg: DictConfig, output_dir: Path) -> dict:
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(int(cfg.seed), workers=True)
    configure_threads(cfg.get("torch_threads"), int(cfg.data.num_workers))
    data = load_disc(cfg.dataset)
    d, queries = cfg.data, labelled_queries(data)
    n_boxes = sum(box is not None for _, box in queries)
    if n_boxes == 0:
        raise ValueError(f"no query of {data.root} has an overlay box: nothing to validate the detector on")
    log.info(
        "detector: %d training images for synthetic overlays; %d queries (%d with a box) for validation",
        len(data.training),
        len(queries),
        n_boxes,
    )
    overlays = SyntheticOverlays(
        data.training,
        int(d.samples_per_epoch),
        p_overlay=float(d.p_overlay),
        max_side=int(d.max_side),
        draft_size=d.draft_size,
    )
    detection = SeededDataModule(
        overlays,
        LabelledQueries(queries),
        d.batch_size,
        d.val_batch_size,
        d.num_workers,
        cfg.seed,
        train_collate=collate_detection,
        val_collate=collate_detection,
    )

    module = DetectorModule(
        model=OmegaConf.to_container(cfg.detector, resolve=True),
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        scheduler_interval=cfg.scheduler_interval,
        min_confidence=float(cfg.validation.min_confidence),
        iou=float(cfg.validation.iou),
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    if cfg.get("init_from"):
        initialise_detector(module, cfg.init_from)
    trainer = build_trainer(cfg, output_dir)
    started = time.perf_counter()
    trainer.fit(module, datamodule=detection)
    train_seconds = time.perf_counter() - started
    trainer.save_checkpoint(output_dir / "checkpoints" / "last.ckpt")  # the final weights, also after max_time

    started = time.perf_counter()
    trainer.validate(module, datamodule=detection, verbose=False)  # always the final weights
    val_seconds = time.perf_counter() - started
    stats = module.last_validation
    metrics = {
        f"val/box_{k}" if k in ("recall", "top1_recall", "replaced_wrongly") else f"val/{k}": v
        for k, v in stats.items()
    }
    metrics.update(
        {
            "train/steps": int(trainer.global_step),
            "train/seconds": round(train_seconds, 1),
            "val/detect_ms_per_image": round(1000 * val_seconds / len(queries), 1),
            "checkpoint": str(output_dir / "checkpoints" / "last.ckpt"),
        }
    )
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    return metrics
