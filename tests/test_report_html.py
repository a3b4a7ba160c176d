"""report.html of isc-eval: its content against isc_research.analysis, escaping, self-containment, and a render in
headless Chromium (screenshot + the decoded images and laid-out sections, read back from the DOM)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from isc_research.analysis import (
    QueryEdits,
    SliceMetrics,
    breakdown,
    edit_groups,
    false_positives,
    missed_matches,
    read_query_edits,
)
from isc_research.data.disc import load_disc
from isc_research.evaluate import evaluate_checkpoint
from isc_research.formats import read_predictions
from isc_research.hash_comparison import hash_results
from isc_research.report_html import ReportOptions, Thumbnails, render, report_options
from tests.test_evaluate import eval_cfg, save_checkpoint


class Page(HTMLParser):
    """Sections (id → text), images (section id, src, alt) and table rows of a page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.section, self.sections, self.images, self.rows, self._row = None, {}, [], [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.section = attrs.get("id")
            self.sections[self.section] = ""
        elif tag == "img":
            self.images.append((self.section, attrs.get("src", ""), attrs.get("alt", "")))
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._row.append("")

    def handle_endtag(self, tag):
        if tag == "tr" and self._row is not None:
            self.rows.append((self.section, self._row))
            self._row = None

    def handle_data(self, data):
        if self.section is not None:
            self.sections[self.section] += data
        if self._row:
            self._row[-1] += data


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    """One isc-eval run (two chains) of an untrained tiny model on the smoke mini-DISC."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("report")
    ckpt = save_checkpoint(out / "a.ckpt")
    cfg = eval_cfg(
        data_dir,
        out / "eval",
        f"ckpt_path={ckpt}",
        "+postprocess@eval_grid.chains.pca=pca",
        "eval.report.top_k=5",
        "eval.report.thumbnail=64",
    )
    summary = evaluate_checkpoint(cfg)
    torch.set_num_threads(before)
    return cfg, summary, out / "eval"


def test_report_content_matches_the_analysis(run):
    cfg, summary, out = run
    html = (out / "report.html").read_text(encoding="utf-8")
    page = Page(html)
    assert list(page.sections) == ["metrics", "plots", "ablation", "edits", "false-positives", "missed"]
    metrics = {row[0]: row[1] for section, row in page.rows if section == "metrics"}
    assert metrics["µAP"] == f"{summary['uAP']:.4f}" and metrics["true pairs"] == str(summary["n_gt_pairs"])
    # one scale for thresholds and scores: similarity = 1 − d²/2 of the raw chain's −d² scores (as isc-search)
    assert summary["similarity_at_p90"] == pytest.approx(1 + summary["threshold_at_p90"] / 2)
    assert metrics["similarity threshold at 90 % precision"] == f"{summary['similarity_at_p90']:.4f}"
    assert [row[0] for section, row in page.rows if section == "ablation"][1:] == ["raw", "pca"]
    # one chart per question: the primary chain's PR curve and histogram name it; the other chain in a grid
    plots = {alt: src for section, src, alt in page.images if section == "plots"}
    assert set(plots) == {
        "precision-recall curve of chain raw",
        "precision-recall curves of the other chains",
        "similarity histograms of true pairs and non-matches of chain raw",
    }
    assert (out / "pr_curves_chains.png").is_file() and "chain raw" in page.sections["plots"]

    data = load_disc(cfg.dataset)
    gt, preds = data.ground_truth, read_predictions(out / "predictions.csv")
    fps = false_positives(gt, preds, 5)
    captions = re.findall(r"similarity (-?\d+\.\d{4}) · rank (\d+) overall", page.sections["false-positives"])
    assert captions == [(f"{1 + fp.score / 2:.4f}", str(fp.rank)) for fp in fps] and len(fps) == 5
    fp_alts = [alt for section, _, alt in page.images if section == "false-positives"]
    expected = [i for fp in fps for i in (fp.query_id, fp.reference_id, fp.true_reference_id) if i]
    assert fp_alts == expected
    missed = missed_matches(gt, preds, gt.n_pairs, threshold=summary["threshold_at_p90"])
    assert f"the {min(5, len(missed))} hardest of {len(missed)}" in page.sections["missed"]
    assert page.sections["missed"].count("true match: ") == min(5, len(missed)) > 0
    assert [alt for section, _, alt in page.images if section == "missed"][:2] == [
        missed[0].query_id,
        missed[0].reference_id,
    ]

    edits = read_query_edits(data.root / "query_edits.csv")
    table = {row[0]: row[1:] for section, row in page.rows if section == "edits"}
    for s in breakdown(gt, preds, edit_groups(edits)):
        assert table[s.group][:2] == [str(s.n_queries), str(s.n_matched)]
        assert table[s.group][4] == ("–" if s.uAP is None else f"{s.uAP:.3f}")
    assert table["all queries"][4] == f"{summary['uAP']:.3f}"
    # the classical hashes on the same queries (dataset.compare_hashes), next to the model, per edit
    header = next(row for section, row in page.rows if section == "edits")
    assert header[6:] == ["PDQ recall@rank1", "PDQ µAP", "pHash recall@rank1", "pHash µAP"]
    pdq = hash_results(data, "pdq", Path(cfg.paths.data_dir) / "hash_baselines")  # cached by the run: no recompute
    assert table["all queries"][5:7] == [f"{pdq['recall_at_rank1']:.3f}", f"{pdq['uAP']:.3f}"]
    for group, row in pdq["edits"].items():
        assert table[group][6] == ("–" if row["uAP"] is None else f"{row['uAP']:.3f}"), group
    markdown = (out / "per_edit.md").read_text().splitlines()  # the same table, for a README
    assert markdown[0] == "| " + " | ".join(header) + " |" and len(markdown) == 1 + len(table)  # table: header + rows
    assert markdown[2] == "| all queries | " + " | ".join(table["all queries"]) + " |"


def test_report_is_self_contained(run):
    _, _, out = run
    html = (out / "report.html").read_text(encoding="utf-8")
    assert not re.search(
        r"(?:https?:|file:|//)[^\s'\"<>]*\w", re.sub(r"data:image/[a-z]+;base64,[A-Za-z0-9+/=]+", "", html)
    )
    assert "<script" not in html and "<link" not in html
    page = Page(html)
    assert len(page.images) > 10
    for section, src, _ in page.images:
        kind, payload = re.fullmatch(r"data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)", src).groups()
        image = Image.open(io.BytesIO(base64.b64decode(payload)))
        image.load()
        assert image.format.lower() == kind
        if section in ("false-positives", "missed"):
            assert max(image.size) <= 64
    assert len(html) < 400_000


def test_report_disabled_and_option_errors(tmp_path, data_dir):
    ckpt = save_checkpoint(tmp_path / "a.ckpt")
    evaluate_checkpoint(eval_cfg(data_dir, tmp_path / "eval", f"ckpt_path={ckpt}", "eval.report.enabled=false"))
    assert (tmp_path / "eval" / "metrics.json").is_file() and not (tmp_path / "eval" / "report.html").exists()
    with pytest.raises(ValueError, match=r"eval.report has unknown key\(s\) \['topk'\]"):
        report_options({"topk": 3})
    with pytest.raises(ValueError, match="eval.report.thumbnail must be a positive integer"):
        ReportOptions(thumbnail=0)


def _tiny_page(tmp_path: Path, edits: dict, slices, title: str = "run") -> str:
    from isc_research.analysis import FalsePositive, MissedMatch

    image = tmp_path / "Q1.jpg"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(image)
    return render(
        title=title,
        dataset=str(tmp_path),
        summary={"uAP": 0.5, "primary_chain": "raw<b>"},
        n_queries=1,
        n_matched=1,
        n_references=1,
        pr_curve=None,
        histogram=b"\x89PNG",
        ablation=[{"chain": "raw", "steps": "a → b & <c>"}],
        slices=slices,
        false_positives=[FalsePositive("Q1", "R<1>", 0.25, 1, None)],
        missed=[MissedMatch("Q1", "R1", None, None, None, None)],
        n_missed=3,
        edits=edits,
        thumbnails=Thumbnails({"Q1": image, "R1": image}, 32, 80),
    )


def test_all_text_is_escaped(tmp_path):
    evil = "<script>alert(1)</script>"
    html = _tiny_page(
        tmp_path,
        {"Q1": QueryEdits("Q1", "R1", (evil, "crop & pad"), None)},
        [SliceMetrics(evil, 1, 1, 1.0, 1.0, 1.0)],
        title=evil,
    )
    assert "<script" not in html and '<b>"' not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "crop &amp; pad" in html
    assert "raw&lt;b&gt;" in html and "a → b &amp; &lt;c&gt;" in html and "R&lt;1&gt;" in html
    assert "no pr_curve.png" in html
    alts = [alt for section, _, alt in Page(html).images if section in ("false-positives", "missed")]
    assert alts == ["Q1", "R<1>", "Q1", "R1"]


def test_missing_and_unreadable_images_become_logged_placeholders(tmp_path, caplog):
    (tmp_path / "R1.jpg").write_bytes(b"")
    thumbnails = Thumbnails({"R1": tmp_path / "R1.jpg"}, 32, 80)
    for image_id in ("R1", "R2"):
        payload = base64.b64decode(thumbnails.uri(image_id).split(",", 1)[1])
        assert Image.open(io.BytesIO(payload)).size == (32, 32)
    assert "R1.jpg': file is empty" in caplog.text and "no image for id R2" in caplog.text


def test_dataset_without_query_edits(tmp_path):
    html = _tiny_page(tmp_path, {}, None)
    assert "has no query_edits.csv" in Page(html).sections["edits"]


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
CHECK_SCRIPT = """<script>window.addEventListener('load', () => {
  const images = [...document.images];
  const result = {images: images.length, decoded: images.filter(i => i.complete && i.naturalWidth > 0).length,
    sections: Object.fromEntries([...document.querySelectorAll('section')].map(
      s => [s.id, Math.round(s.getBoundingClientRect().height)])),
    charts: Object.fromEntries(images.filter(i => i.id).map(i => [i.id, Math.round(i.getBoundingClientRect().width)]))};
  const pre = document.createElement('pre'); pre.id = 'render-check'; pre.textContent = JSON.stringify(result);
  document.body.appendChild(pre);
});</script>"""


def chromium() -> str:
    """The Chromium binary; skipped when absent, except in CI (.ci/run sets CI=1 and installs it)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.environ.get("CI"):
        pytest.fail("CI is set but no chromium binary is on PATH: .ci/run installs it with apt-get install -y chromium")
    pytest.skip("headless Chromium is not installed (apt-get install -y chromium); the browser test needs it")


def _chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def test_report_renders_in_headless_chromium(run, tmp_path):
    binary = chromium()
    _, _, out = run
    report = out / "report.html"
    # 1. screenshot: a full window of rendered content, with the colours of photos and plots
    shot = tmp_path / "report.png"
    _chromium(binary, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2400", report.as_uri())
    if keep := os.environ.get("ISC_KEEP_SCREENSHOT"):  # look at it: ISC_KEEP_SCREENSHOT=report.png pytest -k chromium
        shutil.copyfile(shot, keep)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape == (2400, 1280, 3)
    not_white = (pixels < 245).any(axis=2)
    assert not_white.mean() > 0.05, "the screenshot is (almost) blank"
    rows_with_content = not_white.any(axis=1)
    assert rows_with_content[:300].any() and rows_with_content[1200:].any()  # header and lower sections drawn
    colours = (pixels[..., 0].astype(np.uint32) << 16) | (pixels[..., 1].astype(np.uint32) << 8) | pixels[..., 2]
    assert len(np.unique(colours)) > 2000  # photos, not just text on white
    # 2. the DOM after load: every embedded image decoded, every section laid out
    checked = tmp_path / "check.html"
    checked.write_text(
        report.read_text(encoding="utf-8").replace("</body>", CHECK_SCRIPT + "</body>"), encoding="utf-8"
    )
    dom = _chromium(binary, tmp_path / "profile", "--dump-dom", "--virtual-time-budget=5000", checked.as_uri()).stdout
    result = json.loads(re.search(r'<pre id="render-check">(.*?)</pre>', dom).group(1))
    assert result["images"] == result["decoded"] == len(Page(report.read_text(encoding="utf-8")).images)
    assert set(result["sections"]) == {"metrics", "plots", "ablation", "edits", "false-positives", "missed"}
    assert all(height > 50 for height in result["sections"].values()), result["sections"]
    # the primary chain's PR curve is the large chart (half the page); the other chain is a small panel
    charts = result["charts"]
    assert set(charts) == {"pr-curve", "histogram", "pr-chains"} and charts["pr-curve"] >= 500 > charts["pr-chains"]
