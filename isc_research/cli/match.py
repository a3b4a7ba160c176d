"""`isc-match ckpt_path=... [verifier=sift] [query_crops=grid] [overrides]`: the matching track on a DISC-layout
dataset (predictions.csv for isc-score, metrics.json)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from isc_research.config import hydra_entry, pin_output_dir, quiet_third_party_loggers
from isc_research.summary import Timer, finish_run, fmt


@hydra_entry("match", "isc-match")
def main(cfg: DictConfig) -> None:
    timer = Timer()
    pin_output_dir(cfg)
    quiet_third_party_loggers()
    from isc_research.match.pipeline import match

    metrics = match(cfg)
    run, cost = Path(cfg.paths.output_dir), metrics["verification"]
    finish_run(
        cfg,
        "isc-match",
        timer.seconds,
        [
            (
                "µAP",
                f"descriptor-only {fmt(metrics['descriptor_uAP'])} → candidates {fmt(metrics['candidates_uAP'])} "
                f"(recall {fmt(metrics['candidate_recall'], 3)}) → matched {fmt(metrics['uAP'])}",
            ),
            (
                "verification",
                f"{cost['verifier']}: {cost['ms_per_query']:.0f} ms/query, {cost['ms_per_pair']:.2f} ms/pair",
            ),
        ],
        [
            ("predictions", run / "predictions.csv"),
            ("candidates", run / "candidates.csv"),
            ("metrics", run / "metrics.json"),
        ],
    )


if __name__ == "__main__":
    main()
