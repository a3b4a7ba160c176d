"""The default experiment against the classical hashes (issue 20's bar): `isc-train` for each training seed on each
mini-DISC build (`dataset.build.seed`: another seed draws another split of the source photos), then, per build, the
model's raw µAP (val/uAP, every query of the build, as `isc-eval` scores it) as mean, sample standard deviation and
mean − std over the seeds, next to PDQ's and pHash's µAP on the same queries (each run's `hash/*/uAP`). Prints JSON.

    .venv/bin/python scripts/bench/default_vs_hashes.py [--seeds 0 1 2] [--builds 0 1] [--out DIR] [-- OVERRIDES]

A run folder that already holds a finished run of the same configuration (seed, build seed and every override, read
back from its config.yaml) is reused, so the script can be stopped and rerun; one holding another configuration is
an error. Wall time is each isc-train process's, the mini-DISC build and the hashes included when they ran there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf


def run_folder_matches(folder: Path, overrides: list[str]) -> bool:
    """True when `folder` holds a finished isc-train run whose config has every `key=value` of `overrides`."""
    status, config = folder / "run_status.json", folder / "config.yaml"
    if not status.is_file() or json.loads(status.read_text()).get("status") != "finished":
        return False
    cfg = OmegaConf.load(config)
    for item in overrides:
        key, _, value = item.partition("=")
        if OmegaConf.select(cfg, key) != OmegaConf.create(f"v: {value}").v:  # the value as YAML reads it
            raise SystemExit(f"{folder}: holds a run with {key}={OmegaConf.select(cfg, key)}, not {value}; use --out")
    return True


def train(folder: Path, overrides: list[str]) -> float | None:
    """Run isc-train into `folder` unless it already holds this run; returns the wall time, None when reused."""
    if run_folder_matches(folder, overrides):
        return None
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "isc_research.cli.train", *overrides, f"paths.output_dir={folder}"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def summarise(values: list[float]) -> dict:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": round(mean, 4), "std": round(std, 4), "mean_minus_std": round(mean - std, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--builds", type=int, nargs="+", default=[0, 1], help="dataset.build.seed of each build")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/default_vs_hashes"))
    parser.add_argument("overrides", nargs="*", help="isc-train overrides (after --)")
    args = parser.parse_args()
    builds = []
    for build in args.builds:
        runs, hashes = [], None
        for seed in args.seeds:
            overrides = [*args.overrides, f"seed={seed}", f"dataset.build.seed={build}"]
            folder = args.out / f"build{build}_seed{seed}"
            wall = train(folder, overrides)
            metrics = json.loads((folder / "metrics.json").read_text())
            runs.append(
                {
                    "seed": seed,
                    "uAP": round(metrics["val/uAP"], 4),
                    "init_uAP": round(metrics["init/uAP"], 4),
                    "recall_at_rank1": round(metrics["val/recall_at_rank1"], 4),
                    "wall_s": None if wall is None else round(wall, 1),
                    "run": str(folder),
                }
            )
            run_hashes = {name: round(metrics[f"hash/{name}/uAP"], 4) for name in ("pdq", "phash")}
            if hashes not in (None, run_hashes):  # one build, the same queries: the hashes cannot differ
                raise SystemExit(f"{folder}: hashes {run_hashes} differ from the build's other runs' {hashes}")
            hashes = run_hashes
        model = summarise([r["uAP"] for r in runs])
        best_hash = max(hashes.values())
        builds.append(
            {
                "build_seed": build,
                "model": model,
                "hashes": hashes,
                "margin_over_best_hash": round(model["mean_minus_std"] - best_hash, 4),
                "model_ahead": model["mean_minus_std"] > best_hash,
                "runs": runs,
            }
        )
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
                "overrides": args.overrides,
                "builds": builds,
                "model_ahead_on_every_build": all(b["model_ahead"] for b in builds),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
