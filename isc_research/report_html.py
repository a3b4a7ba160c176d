"""report.html of an isc-eval run: metrics, PR curve, score histograms, ablation table, per-edit-type
breakdown and thumbnails of the top false positives and missed matches. One self-contained file (images
embedded as base64, no external URL), built from the files isc-eval wrote and the dataset's images."""

from __future__ import annotations

import base64
import csv
import dataclasses
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from isc_research.analysis import (
    FalsePositive,
    MissedMatch,
    QueryEdits,
    SliceMetrics,
    breakdown,
    edit_count_groups,
    edit_groups,
    false_positives,
    missed_matches,
    read_query_edits,
    score_histograms,
)
from isc_research.data.disc import DiscData
from isc_research.formats import read_predictions
from isc_research.hash_comparison import HASH_LABELS
from isc_research.images import ImageLoadError, load_image
from isc_research.metric import GroundTruth, Predictions
from isc_research.report import TABLE_COLUMNS
from isc_research.summary import similarity

log = logging.getLogger(__name__)

METRIC_ROWS = (
    ("uAP", "µAP"),
    ("recall_at_p90", "recall at 90 % precision"),
    ("similarity_at_p90", "similarity threshold at 90 % precision"),
    ("recall_at_rank1", "recall@rank1"),
    ("recall_at_rank10", "recall@rank10"),
    ("n_predictions", "predictions"),
    ("n_gt_pairs", "true pairs"),
)


@dataclass(frozen=True)
class ReportOptions:
    """conf/eval.yaml `eval.report`."""

    enabled: bool = True
    top_k: int = 12  # false positives and missed matches shown
    thumbnail: int = 128  # long side of the embedded thumbnails, pixels
    jpeg_quality: int = 80
    histogram_bins: int = 40

    def __post_init__(self) -> None:
        for name in ("top_k", "thumbnail", "histogram_bins"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"eval.report.{name} must be a positive integer, got {getattr(self, name)!r}")
        if not 1 <= int(self.jpeg_quality) <= 95:
            raise ValueError(f"eval.report.jpeg_quality must be in 1..95, got {self.jpeg_quality!r}")


def report_options(values) -> ReportOptions:
    """ReportOptions from the `eval.report` mapping; an unknown key is an error naming it."""
    values = dict(values)
    unknown = sorted(set(values) - set(ReportOptions.__dataclass_fields__))
    if unknown:
        raise ValueError(
            f"eval.report has unknown key(s) {unknown}; known: {sorted(ReportOptions.__dataclass_fields__)}"
        )
    return ReportOptions(**values)


def write_report(
    output_dir: str | Path,
    data: DiscData,
    gt: GroundTruth,
    options: ReportOptions | dict,
    title: str = "",
    hashes: dict[str, dict] | None = None,
) -> Path:
    """Read metrics.json, predictions.csv, ablation.csv and pr_curve.png of an isc-eval folder and write
       report.html next to them; returns its path. `hashes`: {name: isc_research.hash_comparison.hash_results}
    of the classical
       hashes on the same queries, shown next to the model in the per-edit table."""
    output_dir = Path(output_dir)
    options = options if isinstance(options, ReportOptions) else report_options(options)
    summary = json.loads((output_dir / "metrics.json").read_text())
    preds = read_predictions(output_dir / "predictions.csv", max_rows=None)
    edits_path = data.root / "query_edits.csv"
    edits = read_query_edits(edits_path) if edits_path.is_file() else None
    images = {r.id: r.path for r in (*data.queries, *data.references)}
    primary = str(summary.get("primary_chain", ""))
    metric = (summary.get("chains") or {}).get(primary, {}).get("metric", "l2")

    def sim(value):  # every score of the page on the similarity scale (isc_research.summary.similarity)
        return similarity(value, metric)

    fps = [dataclasses.replace(fp, score=sim(fp.score)) for fp in false_positives(gt, preds, options.top_k)]
    missed = [
        dataclasses.replace(m, score=sim(m.score), top_score=sim(m.top_score))  # all, hardest first
        for m in missed_matches(gt, preds, gt.n_pairs, threshold=summary.get("threshold_at_p90"))
    ]
    slices = _slices(gt, preds, edits) if edits is not None else None
    shown = Predictions(preds.query_ids, preds.reference_ids, sim(preds.scores))
    histogram = _histogram_png(
        *score_histograms(gt, shown, options.histogram_bins), sim(summary.get("threshold_at_p90")), chain=primary
    )
    thumbs = Thumbnails(images, options.thumbnail, options.jpeg_quality)
    page = render(
        title=title,
        dataset=str(data.root),
        summary=summary,
        n_queries=len(gt.query_ids),
        n_matched=gt.n_pairs,
        n_references=len(data.references),
        pr_curve=_read_optional(output_dir / "pr_curve.png"),
        histogram=histogram,
        ablation=_read_ablation(output_dir / "ablation.csv"),
        slices=slices,
        false_positives=fps,
        missed=missed[: options.top_k],
        n_missed=len(missed),
        edits=edits or {},
        thumbnails=thumbs,
        chain_curves=_read_optional(output_dir / "pr_curves_chains.png"),
        hashes=hashes,
    )
    if slices is not None:
        write_slice_markdown(slices, hashes or {}, output_dir / "per_edit.md")
    path = output_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    log.info("wrote %s (%.0f KB)", path, path.stat().st_size / 1024)
    return path


def _slices(gt: GroundTruth, preds, edits: dict[str, QueryEdits]) -> list[SliceMetrics]:
    """All queries, then every edit type (worst µAP first), then by number of edits."""
    by_edit = breakdown(gt, preds, edit_groups(edits))
    by_edit.sort(key=lambda s: (s.uAP is None, s.uAP if s.uAP is not None else 0.0, s.group))
    return [
        *breakdown(gt, preds, {"all queries": gt.query_ids}),
        *by_edit,
        *breakdown(gt, preds, edit_count_groups(edits)),
    ]


def _read_optional(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def _read_ablation(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _histogram_png(
    edges: np.ndarray, matches: np.ndarray, others: np.ndarray, threshold: float | None, chain: str = ""
) -> bytes:
    """Histograms of the similarity of true pairs and non-matches among one chain's predictions."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend (e.g. a notebook's) alone

    fig = Figure(figsize=(6.4, 3.6), dpi=100)
    ax = fig.subplots()
    ax.stairs(others, edges, label=f"non-matches ({int(others.sum())})", fill=True, alpha=0.5, color="tab:red")
    ax.stairs(matches, edges, label=f"true pairs ({int(matches.sum())})", fill=True, alpha=0.6, color="tab:blue")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle=":", linewidth=1, label="threshold at 90 % precision")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_title(f"chain {chain}: similarity of the predicted pairs" if chain else "similarity of the predicted pairs")
    ax.set_xlabel("similarity (1 − d²/2 = cosine of unit descriptors)")
    ax.set_ylabel("predictions")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


class Thumbnails:
    """Data URIs of small JPEG thumbnails by image id, each image encoded once."""

    def __init__(self, paths: dict[str, Path], size: int, quality: int) -> None:
        self.paths, self.size, self.quality = paths, int(size), int(quality)
        self._cache: dict[str, str] = {}

    def uri(self, image_id: str) -> str:
        if image_id not in self._cache:
            self._cache[image_id] = _data_uri(self._thumbnail(image_id), self.quality)
        return self._cache[image_id]

    def _thumbnail(self, image_id: str) -> Image.Image:
        path = self.paths.get(image_id)
        if path is None:
            log.warning("report: no image for id %s among the evaluated queries and references", image_id)
            return _placeholder(self.size, "no image")
        try:
            image = load_image(path, draft_size=self.size)
        except ImageLoadError as e:
            log.warning("report: %s", e)
            return _placeholder(self.size, "unreadable")
        image.thumbnail((self.size, self.size))
        return image


def _placeholder(size: int, text: str) -> Image.Image:
    image = Image.new("RGB", (size, size), (230, 230, 230))
    ImageDraw.Draw(image).text((8, size // 2 - 6), text, fill=(90, 90, 90))
    return image


def _data_uri(image: Image.Image, quality: int) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _number(value, digits: int = 4) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return escape(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value))


STYLE = """
body{font:14px/1.4 system-ui,-apple-system,"DejaVu Sans",sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.sub{color:#555;margin:0}table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}th:first-child,td:first-child{text-align:left}
td.steps{text-align:left;color:#555}tr.total td{font-weight:600}.plots{display:flex;flex-wrap:wrap;gap:16px}
.plots img{max-width:calc(50% - 10px);border:1px solid #eee}
img.wide{max-width:100%;border:1px solid #eee}h3{font-size:14px;margin:16px 0 6px;color:#444}
.cards{display:flex;flex-wrap:wrap;gap:12px}
figure.pair{margin:0;padding:8px;border:1px solid #ddd;border-radius:6px;background:#fafafa}
.imgs{display:flex;gap:6px}.imgs div{display:flex;flex-direction:column;align-items:center;font-size:11px;color:#555}
.imgs img{display:block;border:1px solid #ccc;background:#fff;object-fit:contain}
figcaption{font-size:12px;margin-top:4px;max-width:420px}
.ok{color:#1a7f37}.bad{color:#c62828}.note{color:#666;font-size:12px}
"""


def render(
    *,
    title: str,
    dataset: str,
    summary: dict,
    n_queries: int,
    n_matched: int,
    n_references: int,
    pr_curve: bytes | None,
    histogram: bytes,
    ablation: Sequence[dict],
    slices: list[SliceMetrics] | None,
    false_positives: Sequence[FalsePositive],
    missed: Sequence[MissedMatch],
    n_missed: int,
    edits: dict[str, QueryEdits],
    thumbnails: Thumbnails,
    chain_curves: bytes | None = None,
    hashes: dict[str, dict] | None = None,
) -> str:
    """The whole page as a string; every piece of text is HTML-escaped. `missed` are the hardest of the
    `n_missed` missed matches; scores (of `false_positives`, `missed`) are similarities. `chain_curves`: the
    other chains' PR curves as small multiples (pr_curves_chains.png), when the grid has more than one chain.
    `hashes`: the classical hashes' results on the same queries (write_report), columns of the per-edit table."""
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = (
        f"<h1>isc-eval report</h1><p class=sub>{escape(title or 'isc-eval')} · primary chain "
        f"<b>{escape(str(summary.get('primary_chain', '')))}</b> · {n_queries} queries ({n_matched} with a match), "
        f"{n_references} references · {escape(dataset)}</p>"
    )
    primary = str(summary.get("primary_chain", ""))
    parts = [
        head,
        _metrics_section(summary),
        _plots_section(pr_curve, histogram, chain_curves, primary),
        _ablation_section(ablation),
        _slices_section(slices, hashes or {}),
        _fp_section(false_positives, edits, thumbnails),
        _missed_section(missed, n_missed, edits, thumbnails, summary.get("similarity_at_p90")),
    ]
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>isc-eval report · {escape(title or 'isc-eval')}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(parts)
        + f"\n<p class=note>written by isc-eval, {generated}</p>\n</body></html>\n"
    )


def _metrics_section(summary: dict) -> str:
    rows = "".join(
        f"<tr><td>{escape(label)}</td><td>{_number(summary.get(key))}</td></tr>" for key, label in METRIC_ROWS
    )
    return f"<section id=metrics><h2>Metrics</h2><table>{rows}</table></section>"


def _plots_section(pr_curve: bytes | None, histogram: bytes, chain_curves: bytes | None, primary: str) -> str:
    """One chart per question: how good is the primary chain (its PR curve, large), how well does a threshold
    separate copies (its histogram), and how do the other chains compare (small multiples, primary in grey)."""
    pr = (
        f"<img id=pr-curve alt='precision-recall curve of chain {escape(primary)}' src='{_png_uri(pr_curve)}'>"
        if pr_curve
        else "<p class=note>no pr_curve.png</p>"
    )
    grid = (
        ""
        if chain_curves is None
        else f"<h3>The other chains (grey: {escape(primary)})</h3><img id=pr-chains class=wide "
        f"alt='precision-recall curves of the other chains' src='{_png_uri(chain_curves)}'>"
    )
    return (
        f"<section id=plots><h2>Precision–recall and similarity of chain {escape(primary)}</h2><div class=plots>"
        f"{pr}<img id=histogram alt='similarity histograms of true pairs and non-matches of chain "
        f"{escape(primary)}' src='{_png_uri(histogram)}'></div>{grid}</section>"
    )


def _ablation_section(rows: Sequence[dict]) -> str:
    if not rows:
        return ""
    header = "".join(f"<th>{escape(c)}</th>" for c in TABLE_COLUMNS)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class=steps>{escape(row.get(c) or '')}</td>"
            if c == "steps"
            else f"<td>{_number(row.get(c), 2 if c == 'seconds' else 4)}</td>"
            for c in TABLE_COLUMNS
        )
        + "</tr>"
        for row in rows
    )
    return f"<section id=ablation><h2>Ablation (eval grid)</h2><table><tr>{header}</tr>{body}</table></section>"


def slice_table(slices: list[SliceMetrics], hashes: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the per-edit table: each slice's counts and the model's recall, recall@rank1 and µAP, then
    recall@rank1 and µAP of each hash on the same queries (the first row, all queries, from the hash's totals).
    One table for report.html and per_edit.md."""
    header = ["queries made with", "queries", "with a match", "recall", "recall@rank1", "µAP"]
    for name in hashes:
        label = HASH_LABELS.get(name, name)
        header += [f"{label} recall@rank1", f"{label} µAP"]
    rows = []
    for i, s in enumerate(slices):
        row = [
            s.group,
            str(s.n_queries),
            str(s.n_matched),
            _number(s.recall, 3),
            _number(s.recall_at_rank1, 3),
            _number(s.uAP, 3),
        ]
        for result in hashes.values():
            numbers = result if i == 0 else (result.get("edits") or {}).get(s.group) or {}
            row += [_number(numbers.get("recall_at_rank1"), 3), _number(numbers.get("uAP"), 3)]
        rows.append(row)
    return header, rows


def _slices_section(slices: list[SliceMetrics] | None, hashes: dict[str, dict]) -> str:
    if slices is None:
        return (
            "<section id=edits><h2>Per edit type</h2><p class=note>The dataset has no query_edits.csv (the "
            "mini-DISC builder writes one), so no breakdown by edit.</p></section>"
        )
    header, rows = slice_table(slices, hashes)
    head = "<tr>" + "".join(f"<th>{escape(c)}</th>" for c in header) + "</tr>"
    body = "".join(
        f"<tr{' class=total' if i == 0 else ''}>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>"
        for i, row in enumerate(rows)
    )
    compared = (
        f" Next to the model: {', '.join(HASH_LABELS.get(n, n) for n in hashes)} on the same queries (as "
        "isc-eval baseline=<name> scores them)."
        if hashes
        else ""
    )
    return (
        "<section id=edits><h2>Per edit type</h2><p class=note>µAP of the queries made with an edit (alone or "
        "with others: matched queries and distractors), worst first; recall = share of their true pairs among "
        f"the predictions.{escape(compared)}</p><table>{head}{body}</table></section>"
    )


def write_slice_markdown(slices: list[SliceMetrics], hashes: dict[str, dict], path: Path) -> Path:
    """per_edit.md: the per-edit table of report.html as Markdown (for a README or a notebook)."""
    header, rows = slice_table(slices, hashes)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _tile(thumbnails: Thumbnails, image_id: str, label: str) -> str:
    side = thumbnails.size
    return (
        f"<div><img alt='{escape(image_id)}' width={side} height={side} src='{thumbnails.uri(image_id)}'>"
        f"<span>{escape(label)}: {escape(image_id)}</span></div>"
    )


def _edits_text(edits: dict[str, QueryEdits], query_id: str) -> str:
    e = edits.get(query_id)
    return f" · edits: {escape(', '.join(e.edits))}" if e else ""


def _fp_section(items: Sequence[FalsePositive], edits: dict[str, QueryEdits], thumbnails: Thumbnails) -> str:
    cards = []
    for fp in items:
        tiles = [_tile(thumbnails, fp.query_id, "query"), _tile(thumbnails, fp.reference_id, "predicted")]
        if fp.true_reference_id:
            tiles.append(_tile(thumbnails, fp.true_reference_id, "true match"))
        truth = "distractor (no match)" if fp.true_reference_id is None else "has another match"
        cards.append(
            f"<figure class=pair><div class=imgs>{''.join(tiles)}</div><figcaption><b class=bad>similarity "
            f"{fp.score:.4f}</b> · rank {fp.rank} overall · {truth}{_edits_text(edits, fp.query_id)}"
            "</figcaption></figure>"
        )
    body = "".join(cards) or "<p class=note>no false positive among the predictions</p>"
    return (
        f"<section id=false-positives><h2>Top {len(items)} false positives</h2><p class=note>The most confident "
        f"wrong predictions, in the order of the pooled list.</p><div class=cards>{body}</div></section>"
    )


def _missed_section(
    items: Sequence[MissedMatch],
    n_missed: int,
    edits: dict[str, QueryEdits],
    thumbnails: Thumbnails,
    threshold: float | None,
) -> str:
    cards = []
    for m in items:
        tiles = [_tile(thumbnails, m.query_id, "query"), _tile(thumbnails, m.reference_id, "true match")]
        if m.top_reference_id:
            tiles.append(_tile(thumbnails, m.top_reference_id, f"top wrong ({m.top_score:.4f})"))
        found = (
            "not among the predictions"
            if m.score is None
            else f"similarity {m.score:.4f} · rank {m.rank_in_query} in its query"
        )
        cards.append(
            f"<figure class=pair><div class=imgs>{''.join(tiles)}</div><figcaption><b class=bad>{found}"
            f"</b>{_edits_text(edits, m.query_id)}</figcaption></figure>"
        )
    rule = (
        f"or below the similarity threshold at 90 % precision ({threshold:.4f})"
        if threshold is not None
        else "(precision never reaches 90 %, so no threshold applies)"
    )
    body = "".join(cards) or "<p class=note>no missed match</p>"
    return (
        f"<section id=missed><h2>Missed matches: the {len(items)} hardest of {n_missed}</h2><p class=note>True "
        f"pairs absent from the predictions, outranked by another reference of their query, {escape(rule)}; "
        "hardest first.</p>"
        f"<div class=cards>{body}</div></section>"
    )
