"""Files of an isc-eval run: the ablation table (CSV + Markdown), the primary chain's precision-recall curve
(pr_curve.png) and the other chains' as small multiples (pr_curves_chains.png)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

TABLE_COLUMNS = (
    "chain",
    "steps",
    "metric",
    "dims",
    "uAP",
    "recall_at_p90",
    "recall_at_rank1",
    "recall_at_rank10",
    "n_predictions",
    "seconds",
)


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


def _pr_axes(ax, title: str) -> None:
    ax.axhline(0.9, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=ax.title.get_fontsize())
    ax.grid(alpha=0.3)


def pr_curve_figure(precision: np.ndarray, recall: np.ndarray, title: str, figsize: tuple[float, float] = (6.4, 4.8)):
    """A matplotlib Figure of one precision-recall curve with the 90 % precision line (isc-eval's pr_curve.png
    and the training figures of isc_research.callbacks.RetrievalFigures)."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend (e.g. a notebook's) alone

    fig = Figure(figsize=figsize, dpi=100)
    ax = fig.subplots()
    ax.plot(recall, precision, linewidth=1.5, color="tab:blue")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    _pr_axes(ax, title)
    fig.tight_layout()
    return fig


def plot_pr_curve(name: str, precision: np.ndarray, recall: np.ndarray, path: str | Path, title: str = "") -> Path:
    """The precision-recall curve of one chain (the primary one) in a PNG."""
    path = Path(path)
    pr_curve_figure(precision, recall, f"{title + ' · ' if title else ''}{name}").savefig(path)
    return path


def plot_pr_grid(curves: Sequence[tuple[str, np.ndarray, np.ndarray]], path: str | Path, columns: int = 4) -> Path:
    """Small multiples: one panel per chain after the first (name, precision, recall), each with the first
    (primary) chain's curve in grey behind it for comparison."""
    from matplotlib.figure import Figure

    (primary, p0, r0), others = curves[0], list(curves[1:])
    if not others:
        raise ValueError("plot_pr_grid needs at least two curves (the primary and one other)")
    columns = min(columns, len(others))
    rows = -(-len(others) // columns)
    fig = Figure(figsize=(2.6 * columns, 2.3 * rows), dpi=100)
    axes = np.atleast_1d(fig.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)).ravel()
    for ax, (name, precision, recall) in zip(axes, others):
        ax.plot(r0, p0, linewidth=1, color="0.7", label=primary)
        ax.plot(recall, precision, linewidth=1.3, color="tab:orange")
        ax.title.set_fontsize(8)
        _pr_axes(ax, name)
        ax.tick_params(labelsize=7)
    for ax in axes[len(others) :]:
        ax.set_visible(False)
    fig.supxlabel("recall", fontsize=8)
    fig.supylabel("precision", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
