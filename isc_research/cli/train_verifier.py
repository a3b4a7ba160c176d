"""`isc-train-verifier [overrides]`: a thin Hydra entry point around isc_research.verifier.train.train_verifier."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from isc_research.config import hydra_entry, optimized_value, pin_output_dir, quiet_third_party_loggers
from isc_research.summary import Timer, best_checkpoint, finish_run, fmt


def summary_numbers(metrics: dict) -> list[tuple[str, str]]:
    """Pair accuracy, AUC and µAP before → after training (and the best checkpoint's)."""
    numbers = []
    for key, label in (("uAP", "pair µAP"), ("auc", "pair AUC"), ("accuracy", "accuracy")):
        steps = [
            f"{fmt(metrics[f'{p}/{key}'])} {w}"
            for p, w in (("init", "at initialisation"), ("val", "after training"), ("best", "best checkpoint"))
            if metrics.get(f"{p}/{key}") is not None
        ]
        if steps:
            numbers.append((label, " → ".join(steps[:2]) + (f" ({steps[2]})" if len(steps) > 2 else "")))
    return numbers


@hydra_entry("train_verifier", "isc-train-verifier")
def main(cfg: DictConfig) -> float | None:
    timer = Timer()
    pin_output_dir(cfg)
    quiet_third_party_loggers()
    from isc_research.verifier.train import train_verifier  # heavy imports after Hydra has parsed the command line

    metrics = train_verifier(cfg)
    run = Path(cfg.paths.output_dir)
    best, epoch = best_checkpoint(run)
    numbers = summary_numbers(metrics) + ([("best epoch", str(epoch))] if epoch is not None else [])
    finish_run(
        cfg,
        "isc-train-verifier",
        timer.seconds,
        numbers,
        [("checkpoint", metrics.get("best/checkpoint") or best), ("metrics", run / "metrics.json")],
    )
    return optimized_value(cfg, metrics)


if __name__ == "__main__":
    main()
