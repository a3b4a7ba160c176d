"""Files of an isc-eval run: the ablation table (CSV + Markdown) and the precision-recall curves (PNG)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

TABLE_COLUMNS = ("chain", "steps", "metric", "dims", "uAP", "recall_at_p90", "recall_at_rank1", "recall_at_rank10",
                 "n_predictions", "seconds")


def write_ablation_table(rows: Sequence[dict], directory: str | Path) -> tuple[Path, Path]:
    """ablation.csv (full precision) and ablation.md (4 decimals), one row per chain, in run order."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = directory / "ablation.csv", directory / "ablation.md"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=TABLE_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if row.get(k) is None else row.get(k)) for k in TABLE_COLUMNS} for row in rows)
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(k)) for k in TABLE_COLUMNS) + " |")
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return csv_path, md_path


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value).replace("|", "\\|")


def plot_pr_curves(curves: Sequence[tuple[str, np.ndarray, np.ndarray]], path: str | Path, title: str = "") -> Path:
    """One precision-recall curve per chain (name, precision, recall) in a PNG."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend (e.g. a notebook's) alone

    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    ax = fig.subplots()
    for name, precision, recall in curves:
        ax.plot(recall, precision, label=name, linewidth=1.2)
    ax.axhline(0.9, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title or "precision-recall of the pooled predictions")
    if curves:
        ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
