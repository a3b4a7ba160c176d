"""`isc-train-detector [overrides]`: a thin Hydra entry point around isc_research.detect.train.train_detector."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from isc_research.config import hydra_entry, pin_output_dir, quiet_third_party_loggers
from isc_research.summary import Timer, finish_run, fmt


@hydra_entry("train_detector", "isc-train-detector")
def main(cfg: DictConfig) -> float:
    timer = Timer()
    pin_output_dir(cfg)
    quiet_third_party_loggers()
    from isc_research.detect.train import train_detector  # heavy imports after Hydra has parsed the command line

    metrics = train_detector(cfg)
    run = Path(cfg.paths.output_dir)
    finish_run(
        cfg,
        "isc-train-detector",
        timer.seconds,
        [
            (
                "box recall",
                f"{fmt(metrics['val/box_recall'])} (top-1 {fmt(metrics.get('val/box_top1_recall'))}) after "
                f"{metrics['train/steps']} steps; {metrics['val/detect_ms_per_image']} ms/image",
            )
        ],
        [("checkpoint", metrics["checkpoint"]), ("metrics", run / "metrics.json")],
    )
    return float(metrics["val/box_recall"])


if __name__ == "__main__":
    main()
