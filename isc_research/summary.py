"""What every command prints last: the numbers that matter and the absolute paths of its run folder and files;
and `<log_dir>/<task>/latest`, the link to the task's last finished run.

One helper for every CLI (isc-train, isc-eval, isc-match, isc-search, isc-export, isc-score, isc-make-dataset,
isc-train-verifier, isc-train-detector), so that they all end the same way:

    isc-train finished in 7 min 36 s
      µAP          0.0941 at initialisation → 0.2510 after training (best 0.2510 at epoch 47)
      vs hashes    PDQ 0.2890 · pHash 0.2546 µAP on the same queries (model 0.2510)
      run folder   /home/me/isc/outputs/train/runs/2026-11-29_10-00-00
      checkpoint   /home/me/isc/outputs/train/runs/2026-11-29_10-00-00/checkpoints/epoch047-uAP0.2510.ckpt
      latest       /home/me/isc/outputs/train/latest → runs/2026-11-29_10-00-00

Files that do not exist are left out (e.g. report.html with eval.report.enabled=false), so a summary names
only what is there. The `latest` link is replaced atomically and only when a command succeeds: a failed or
interrupted run never becomes `latest`.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

__all__ = [
    "Timer",
    "best_checkpoint",
    "duration",
    "finish_run",
    "fmt",
    "format_summary",
    "link_latest",
    "print_summary",
    "similarity",
]

LABEL_WIDTH = 12


class Timer:
    """Wall time since construction (a command's start)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started


def duration(seconds: float) -> str:
    """`0.8 s`, `23 s`, `1 min 49 s`, `1 h 02 min`."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def similarity(score, metric: str = "l2"):
    """Candidate scores on the scale users see everywhere (isc-search, isc-eval, report.html): similarity.
    Searches by squared L2 score pairs by −d²; for L2-normalised descriptors d² = 2 − 2·cos, so 1 − d²/2 =
    1 + score/2 is their cosine similarity. Inner-product chains (metric "ip") already score by similarity.
    The map is increasing, so every ranking, µAP and recall is the same on both scales. A float for a number,
    an array for an array, None for None (e.g. no threshold at 90 % precision)."""
    if score is None:
        return None
    if metric not in ("l2", "ip"):
        raise ValueError(f"unknown search metric {metric!r} (l2 or ip)")
    value = np.asarray(score, dtype=np.float64)
    value = value if metric == "ip" else 1.0 + value / 2.0
    return float(value) if value.ndim == 0 else value


_EPOCH = re.compile(r"epoch[=_-]?(\d+)")


def best_checkpoint(run_dir: str | os.PathLike) -> tuple[Path | None, int | None]:
    """The best-epoch checkpoint of a training run folder (checkpoints/*.ckpt other than last.ckpt; the newest
    if several) and its epoch as the file name gives it (`epoch047-…` → 47; None if the name has none)."""
    found = sorted(
        (p for p in (Path(run_dir) / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"),
        key=lambda p: p.stat().st_mtime,
    )
    if not found:
        return None, None
    match = _EPOCH.search(found[-1].name)
    return found[-1], int(match.group(1)) if match else None


def link_latest(run_dir: str | os.PathLike, task_root: str | os.PathLike) -> Path | None:
    """Point `<task_root>/latest` at `run_dir` (a relative link, e.g. `runs/<time>` or
    `multiruns/<time>/<job>`), replacing any earlier link atomically (a new link, then rename over the old one).
    Only for a run folder inside `task_root`: a folder the user named elsewhere gets no link (and nothing is
    written into `task_root`). An existing `latest` that is not a link (the user's file) is left alone.
    Returns the link, or None when none was made."""
    run_dir, task_root = Path(run_dir).absolute(), Path(task_root).absolute()
    try:
        target = run_dir.relative_to(task_root)
    except ValueError:
        return None
    if not run_dir.is_dir() or target == Path("."):
        return None
    link = task_root / "latest"
    if link.exists() and not link.is_symlink():
        return None
    temporary = task_root / f".latest.{os.getpid()}"
    temporary.unlink(missing_ok=True)
    os.symlink(target, temporary, target_is_directory=True)
    os.replace(temporary, link)
    return link


def _path_text(path: Path) -> str:
    path = Path(path)
    if path.is_symlink():
        return f"{path.absolute()} → {os.readlink(path)}"
    return str(path.absolute())


def format_summary(
    tool: str,
    seconds: float | None,
    numbers: Sequence[tuple[str, str]] = (),
    files: Iterable[tuple[str, str | os.PathLike | None]] = (),
    status: str = "finished",
) -> str:
    """The summary block: `<tool> <status> in <time>`, then one `label  value` line per number and per file
    that exists (absolute paths)."""
    head = f"{tool} {status}" + (f" in {duration(seconds)}" if seconds is not None else "")
    lines = [head]
    lines += [f"  {label:<{LABEL_WIDTH}} {value}" for label, value in numbers]
    for label, path in files:
        if path is not None and (Path(path).exists() or Path(path).is_symlink()):
            lines.append(f"  {label:<{LABEL_WIDTH}} {_path_text(Path(path))}")
    return "\n".join(lines)


def print_summary(
    tool: str,
    seconds: float | None,
    numbers: Sequence[tuple[str, str]] = (),
    files: Iterable[tuple[str, str | os.PathLike | None]] = (),
    *,
    stream: TextIO | None = None,
    status: str = "finished",
) -> str:
    """Print the summary block (to stdout unless `stream` is given; tools whose stdout is data, e.g. isc-score's
    JSON, pass sys.stderr) after a blank line, and return it."""
    text = format_summary(tool, seconds, numbers, files, status)
    stream = stream or sys.stdout
    print(f"\n{text}", file=stream, flush=True)
    return text


def fmt(value: float | None, digits: int = 4) -> str:
    """A metric for a summary line: 4 decimals, or – when it was never reached (e.g. recall at P90)."""
    return "–" if value is None else f"{float(value):.{digits}f}"


def finish_run(
    cfg,
    tool: str,
    seconds: float,
    numbers: Sequence[tuple[str, str]],
    files: Iterable[tuple[str, str | os.PathLike | None]] = (),
) -> str | None:
    """The end of a Hydra command that succeeded: `<log_dir>/<task>/latest` → its run folder (paths.output_dir),
    then the summary with the run folder, `files`, the run's log and the link. Only on global rank 0 (under DDP
    every rank runs the command; one summary)."""
    if "lightning" in sys.modules:
        from lightning.fabric.utilities.rank_zero import rank_zero_only

        if getattr(rank_zero_only, "rank", 0) != 0:
            return None
    run_dir = Path(cfg.paths.output_dir)
    link = link_latest(run_dir, Path(cfg.paths.log_dir) / cfg.task_name)
    logs = []
    try:
        from hydra.core.hydra_config import HydraConfig

        logs = [("log", run_dir / f"{HydraConfig.get().job.name}.log")]
    except ValueError:  # not under Hydra (called from Python)
        pass
    return print_summary(tool, seconds, numbers, [("run folder", run_dir), *files, *logs, ("latest", link)])


SWEEP_METRICS = ("init/uAP", "val/uAP", "best/uAP")


def sweep_table(sweep_dir: str | os.PathLike, objective: str | None = None) -> tuple[str, int | None]:
    """A Markdown table of a multirun's jobs (`<sweep_dir>/<job>/`): the overrides that differ between jobs and
    the µAPs of each job's metrics.json (`failed` for a job without one), and the job that is best by
    `objective` (default val/uAP). Returns (table, best job number or None)."""
    sweep_dir = Path(sweep_dir)
    jobs = sorted((d for d in sweep_dir.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name))
    rows = []
    for job in jobs:
        overrides_file = job / ".hydra" / "overrides.yaml"
        overrides = _read_overrides(overrides_file) if overrides_file.is_file() else []
        metrics_file = job / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
        rows.append((int(job.name), dict(o.split("=", 1) for o in overrides if "=" in o), metrics))
    keys = sorted({k for _, o, _ in rows for k in o})
    varying = [k for k in keys if len({o.get(k) for _, o, _ in rows}) > 1] or keys
    objective = objective or "val/uAP"
    columns = [m for m in dict.fromkeys((*SWEEP_METRICS, objective)) if any(r[2] and m in r[2] for r in rows)]
    scored = [(r[2][objective], r[0]) for r in rows if r[2] and r[2].get(objective) is not None]
    best = max(scored)[1] if scored else None
    lines = ["| job | " + " | ".join([*varying, *columns]) + " |", "|" + "---|" * (1 + len(varying) + len(columns))]
    for number, overrides, metrics in rows:
        values = [overrides.get(k, "") for k in varying]
        values += [fmt(metrics.get(m)) for m in columns] if metrics else ["failed"] * len(columns)
        mark = " (best)" if number == best else ""
        lines.append(f"| {number}{mark} | " + " | ".join(str(v) for v in values) + " |")
    return "\n".join(lines), best


def _read_overrides(path: Path) -> list[str]:
    from omegaconf import OmegaConf

    return [str(o) for o in OmegaConf.load(path)]


try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover - hydra is a dependency; a stand-in keeps this module importable
    _HydraCallback = object


class SweepSummary(_HydraCallback):
    """Hydra callback (conf/train.yaml `hydra.callbacks`): at the end of a multirun (a plain sweep, Optuna, or
    SLURM jobs), print the per-job µAP table (sweep_table) and write it to `<sweep dir>/summary.md`."""

    def __init__(self, tool: str = "isc-train") -> None:
        self.tool = tool
        self.timer = Timer()

    def on_multirun_start(self, config, **kwargs) -> None:
        self.timer = Timer()

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        table, best = sweep_table(sweep_dir, config.get("optimized_metric"))
        (sweep_dir / "summary.md").write_text(table + "\n")
        n_jobs = table.count("\n") - 1
        print(f"\n{table}", flush=True)
        print_summary(
            f"{self.tool} sweep",
            self.timer.seconds,
            [("jobs", f"{n_jobs}; best: job {best}" if best is not None else f"{n_jobs}; none finished")],
            [
                ("sweep folder", sweep_dir),
                ("table", sweep_dir / "summary.md"),
                ("best job", sweep_dir / str(best) if best is not None else None),
                ("optuna", sweep_dir / "optimization_results.yaml"),
            ],
        )
