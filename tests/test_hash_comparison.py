"""The hashes' µAP next to the model's in isc-train's summary: the same numbers as isc-eval baseline=<name>,
computed once per dataset build and validation set, recomputed when either changes."""

from __future__ import annotations

import dataclasses
import json

import pytest

from isc_research import hash_comparison
from isc_research.analysis import breakdown, edit_count_groups, edit_groups, read_query_edits
from isc_research.cli.train import summary_numbers
from isc_research.data.disc import load_disc
from isc_research.evaluate import evaluate_checkpoint
from isc_research.formats import read_predictions
from tests.conftest import compose_config
from tests.test_evaluate import eval_cfg

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def counted(monkeypatch):
    calls = []
    real = hash_comparison.score_hash

    def score(name, data):
        calls.append(name)
        return real(name, data)

    monkeypatch.setattr(hash_comparison, "score_hash", score)
    return calls


def test_hash_metrics_match_isc_eval_and_are_cached_per_build(data_dir, tmp_path, counted):
    data = load_disc(compose_config("train", ["debug=smoke", f"paths.data_dir={data_dir}"]).dataset)
    cache = tmp_path / "cache"
    first = hash_comparison.hash_metrics(data, ["pdq", "phash"], cache)
    assert counted == ["pdq", "phash"] and len(list(cache.glob("*.json"))) == 2
    for name in ("pdq", "phash"):
        official = evaluate_checkpoint(
            eval_cfg(data_dir, tmp_path / name, f"baseline={name}", "eval.report.enabled=false")
        )
        assert first[f"hash/{name}/uAP"] == pytest.approx(official["uAP"], abs=1e-9)
        assert first[f"hash/{name}/recall_at_rank1"] == pytest.approx(official["recall_at_rank1"], abs=1e-9)
    # per edit type and per number of edits: isc_research.analysis.breakdown of isc-eval's own predictions
    edits = read_query_edits(data.root / "query_edits.csv")
    slices = breakdown(
        data.ground_truth,
        read_predictions(tmp_path / "pdq" / "predictions.csv"),
        {**edit_groups(edits), **edit_count_groups(edits)},
    )
    cached = hash_comparison.hash_results(data, "pdq", cache)
    assert cached["edits"] == {s.group: s.to_dict() for s in slices} and "1 edit" in cached["edits"]

    assert hash_comparison.hash_metrics(data, ["pdq", "phash"], cache) == first  # a second run: from the cache
    assert counted == ["pdq", "phash"]

    rebuilt = tmp_path / "rebuilt"  # the same spec built again (or by another format): other images, recomputed
    rebuilt.mkdir()
    manifest = json.loads((data.root / "manifest.json").read_text())
    (rebuilt / "manifest.json").write_text(json.dumps({**manifest, "built_at": "2030-01-01T00:00:00+00:00"}))
    hash_comparison.hash_metrics(dataclasses.replace(data, root=rebuilt), ["pdq"], cache)
    assert counted == ["pdq", "phash", "pdq"]

    fewer = dataclasses.replace(data, references=data.references[:-1])  # another validation set
    hash_comparison.hash_metrics(fewer, ["phash"], cache)
    assert counted == ["pdq", "phash", "pdq", "phash"] and len(list(cache.glob("*.json"))) == 4

    with pytest.raises(ValueError, match="dataset.compare_hashes: .sift. is unknown"):
        hash_comparison.hash_metrics(data, ["sift"], cache)


def test_the_summary_prints_the_hashes_next_to_the_model():
    metrics = {
        "init/uAP": 0.1,
        "val/uAP": 0.3012,
        "best/uAP": 0.31,
        "hash/pdq/uAP": 0.289,
        "hash/pdq/recall_at_rank1": 0.29,
        "hash/phash/uAP": 0.25456,
        "hash/phash/recall_at_rank1": 0.28,
    }
    numbers = dict(summary_numbers(metrics, 3))
    assert numbers["vs hashes"] == "PDQ 0.2890 · pHash 0.2546 µAP on the same queries (model 0.3012)"
    assert "vs hashes" not in dict(summary_numbers({"val/uAP": 0.3}, None))
