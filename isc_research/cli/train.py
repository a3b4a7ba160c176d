"""`isc-train [overrides]`: a thin Hydra entry point around isc_research.train.train."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from isc_research.config import (
    check_optimized_metric,
    check_required,
    hydra_entry,
    optimized_value,
    pin_output_dir,
    quiet_third_party_loggers,
)
from isc_research.hash_comparison import HASH_LABELS
from isc_research.summary import Timer, best_checkpoint, finish_run, fmt


def summary_numbers(metrics: dict, best_epoch: int | None) -> list[tuple[str, str]]:
    """µAP before → after training, and the best epoch's (the checkpoint kept by val/uAP)."""
    parts = []
    if "init/uAP" in metrics:
        parts.append(f"{fmt(metrics['init/uAP'])} at initialisation →")
    if "val/uAP" in metrics:
        parts.append(f"{fmt(metrics['val/uAP'])} after training")
    if "best/uAP" in metrics:
        parts.append(
            f"(best {fmt(metrics['best/uAP'])}" + (f" at epoch {best_epoch})" if best_epoch is not None else ")")
        )
    numbers = [("µAP", " ".join(parts))] if parts else []
    hashes = [
        (HASH_LABELS[k.split("/")[1]], v) for k, v in metrics.items() if k.startswith("hash/") and k.endswith("/uAP")
    ]
    if hashes and "val/uAP" in metrics:
        numbers.append(
            (
                "vs hashes",
                " · ".join(f"{label} {fmt(v)}" for label, v in hashes)
                + f" µAP on the same queries (model {fmt(metrics['val/uAP'])})",
            )
        )
    if "val/recall_at_p90" in metrics:
        numbers.append(
            (
                "recall",
                f"{fmt(metrics['val/recall_at_p90'])} at 90 % precision, "
                f"{fmt(metrics.get('val/recall_at_rank1'))} at rank 1",
            )
        )
    return numbers


@hydra_entry("train", "isc-train")
def main(cfg: DictConfig) -> float | None:
    timer = Timer()
    check_optimized_metric(cfg.get("optimized_metric"))
    check_required(cfg)  # also in train(); here before the heavy imports, so that it answers in seconds
    pin_output_dir(cfg)
    quiet_third_party_loggers()
    from isc_research.train import train  # heavy imports after Hydra has parsed the command line (fast --help)

    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    best, epoch = best_checkpoint(run)
    finish_run(
        cfg,
        "isc-train",
        timer.seconds,
        summary_numbers(metrics, epoch),
        [
            ("checkpoint", best),
            ("last", run / "checkpoints" / "last.ckpt"),
            ("metrics", run / "metrics.json"),
            ("figures", run / "figures"),
        ],
    )
    return optimized_value(cfg, metrics)


if __name__ == "__main__":
    main()
