"""`isc-eval ckpt_path=... [overrides]`: score a checkpoint on a DISC-layout dataset."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from isc_research.config import check_required, hydra_entry, pin_output_dir, quiet_third_party_loggers
from isc_research.summary import Timer, finish_run, fmt


def summary_numbers(metrics: dict) -> list[tuple[str, str]]:
    """The primary chain's µAP, recalls and threshold (as a similarity, as isc-search and report.html show it),
    and every other chain's µAP."""
    primary = metrics["primary_chain"]
    numbers = [
        (
            "µAP",
            f"{fmt(metrics['uAP'])} ({primary}, {metrics['n_gt_pairs']} true pairs, "
            f"{metrics['n_predictions']} predictions)",
        ),
        (
            "recall",
            f"{fmt(metrics['recall_at_p90'])} at 90 % precision, {fmt(metrics['recall_at_rank1'])} at "
            f"rank 1, {fmt(metrics['recall_at_rank10'])} at rank 10",
        ),
    ]
    threshold = metrics.get("similarity_at_p90")
    if threshold is not None:
        numbers.append(("threshold", f"similarity {threshold:.4f} at 90 % precision"))
    others = [f"{name} {fmt(c['uAP'])}" for name, c in metrics["chains"].items() if name != primary]
    if others:
        numbers.append(("other chains", ", ".join(others)))
    return numbers


@hydra_entry("eval", "isc-eval")
def main(cfg: DictConfig) -> None:
    check_required(cfg)  # also in evaluate_checkpoint(); here before the heavy imports
    timer = Timer()
    pin_output_dir(cfg)
    quiet_third_party_loggers()
    from isc_research.evaluate import evaluate_checkpoint

    metrics = evaluate_checkpoint(cfg)
    run = Path(cfg.paths.output_dir)
    finish_run(
        cfg,
        "isc-eval",
        timer.seconds,
        summary_numbers(metrics),
        [
            ("metrics", run / "metrics.json"),
            ("predictions", run / "predictions.csv"),
            ("descriptors", run / "descriptors.h5"),
            ("ablation", run / "ablation.md"),
            ("report", run / "report.html"),
        ],
    )


if __name__ == "__main__":
    main()
