"""`isc-score` run in-process: JSON equals `evaluate`; bad input gives exit 2 and a one-line message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from isc_research.cli.score import main
from isc_research.formats import (
    DescriptorSubmission,
    write_descriptor_submission,
    write_ground_truth,
    write_predictions,
)
from isc_research.metric import GroundTruth, Predictions, evaluate
from isc_research.search import global_candidates, knn_candidates

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A GT with 6 matched and 6 distractor queries, predictions, and a descriptor submission."""
    rng = np.random.default_rng(0)
    queries = [f"Q{i:05d}" for i in range(12)]
    gt = GroundTruth.from_pairs(queries, {q: f"R{i:06d}" for i, q in enumerate(queries[:6])})
    write_ground_truth(tmp_path / "gt.csv", gt)
    rows = [(q, f"R{j:06d}", float(rng.normal())) for q in queries for j in rng.choice(range(6, 40), 2, replace=False)]
    rows += [(q, r, float(rng.normal()) + 1) for q, r in gt.matches.items()]
    write_predictions(tmp_path / "pred.csv", Predictions.from_rows(rows))
    refs = rng.normal(size=(40, 16)).astype(np.float32)
    extra = [f"Q{i:05d}" for i in range(100, 105)]  # queries outside the GT must be ignored
    query = np.concatenate([refs[:12] + 0.3 * rng.normal(size=(12, 16)), rng.normal(size=(5, 16))])
    sub = DescriptorSubmission(
        np.array(queries + extra), query.astype(np.float32), np.array([f"R{i:06d}" for i in range(40)]), refs
    )
    write_descriptor_submission(tmp_path / "sub.h5", sub)
    return {"gt": tmp_path / "gt.csv", "pred": tmp_path / "pred.csv", "h5": tmp_path / "sub.h5", "dir": tmp_path}


def run_ok(capsys: pytest.CaptureFixture, argv: list[str]) -> dict:
    assert main(argv) == 0
    out = capsys.readouterr()
    result = json.loads(out.out)  # stdout: only the JSON; stderr: the summary, nothing else
    assert out.err.startswith("\nisc-score finished in ") and f"µAP          {result['uAP']:.4f}" in out.err
    assert "error" not in out.err and "warning" not in out.err.lower()
    return result


def run_error(capsys: pytest.CaptureFixture, argv: list[str], *words: str) -> str:
    assert main(argv) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.startswith("isc-score: error: ") and out.err.count("\n") == 1, out.err
    for word in words:
        assert word in out.err, (word, out.err)
    return out.err


def assert_same(result: dict, expected: dict) -> None:
    assert set(result) == set(expected) >= {"uAP", "recall_at_p90", "recall_at_rank1", "recall_at_rank10"}
    for key, value in expected.items():
        assert result[key] == (None if value is None else pytest.approx(value)), key


def test_predictions_mode(capsys: pytest.CaptureFixture, files: dict[str, Path]) -> None:
    from isc_research.formats import read_ground_truth, read_predictions

    result = run_ok(capsys, ["--gt", str(files["gt"]), "--predictions", str(files["pred"])])
    expected = evaluate(read_ground_truth(files["gt"]), read_predictions(files["pred"])).to_dict()
    assert_same(result, expected)
    assert result["n_predictions"] == 30 and result["n_gt_pairs"] == 6 and 0 < result["uAP"] < 1


def test_hand_checked_json(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    (tmp_path / "gt.csv").write_text("query_id,reference_id\nQ1,R1\nQ2,\nQ3,R3\n")
    (tmp_path / "p.csv").write_text("query_id,reference_id,score\nQ1,R1,0.9\nQ2,R5,0.8\nQ3,R4,0.7\nQ3,R3,0.5\n")
    result = run_ok(capsys, ["--gt", str(tmp_path / "gt.csv"), "--predictions", str(tmp_path / "p.csv")])
    # TP (P=1), FP, FP, TP (P=2/4): µAP = (1 + 0.5) / 2; P >= 0.9 only at k=1 (R = 0.5)
    assert result == {
        "uAP": 0.75, "recall_at_p90": 0.5, "threshold_at_p90": 0.9, "recall_at_rank1": 0.5,
        "recall_at_rank10": 1.0, "n_predictions": 4, "n_gt_pairs": 2,
    }  # fmt: skip


def _sub_for_gt(files: dict[str, Path]) -> tuple[GroundTruth, tuple]:
    from isc_research.formats import read_descriptor_submission, read_ground_truth

    gt = read_ground_truth(files["gt"])
    sub = read_descriptor_submission(files["h5"])
    return gt, (sub.query[:12], sub.reference, sub.query_ids[:12], sub.reference_ids)


def test_descriptor_mode_global(capsys: pytest.CaptureFixture, files: dict[str, Path]) -> None:
    result = run_ok(capsys, ["--gt", str(files["gt"]), "--descriptors", str(files["h5"])])
    gt, args = _sub_for_gt(files)
    expected = evaluate(gt, global_candidates(*args)).to_dict()  # 10 × 12 GT queries
    assert_same(result, expected)
    assert result["n_predictions"] == 120 and result["recall_at_rank1"] > 0.5


def test_descriptor_mode_options(capsys: pytest.CaptureFixture, files: dict[str, Path]) -> None:
    gt, args = _sub_for_gt(files)
    base = ["--gt", str(files["gt"]), "--descriptors", str(files["h5"])]
    assert_same(run_ok(capsys, [*base, "--knn", "3"]), evaluate(gt, knn_candidates(*args, k=3)).to_dict())
    assert_same(
        run_ok(capsys, [*base, "--max-results", "17", "--metric", "ip"]),
        evaluate(gt, global_candidates(*args, num_results=17, metric="ip")).to_dict(),
    )


def test_duplicate_pairs(capsys: pytest.CaptureFixture, files: dict[str, Path]) -> None:
    p = files["dir"] / "dup.csv"
    p.write_text("query_id,reference_id,score\nQ00000,R000000,0.5\nQ00001,R000000,0.5\nQ00000,R000000,0.1\n")
    run_error(capsys, ["--gt", str(files["gt"]), "--predictions", str(p)], f"{p}:4:", "lines 2 and 4")


def test_malformed_row(capsys: pytest.CaptureFixture, files: dict[str, Path]) -> None:
    p = files["dir"] / "bad.csv"
    p.write_text("query_id,reference_id,score\nQ00000,R000000,0.5\nQ00001;R000000;0.5\n")
    run_error(capsys, ["--gt", str(files["gt"]), "--predictions", str(p)], f"{p}:3:", "expected 3 fields")


def test_unknown_query_ids(capsys: pytest.CaptureFixture, files: dict[str, Path]) -> None:
    p = files["dir"] / "unknown.csv"
    p.write_text("query_id,reference_id,score\nQ00000,R000000,0.5\nQ99999,R000001,0.5\n")
    run_error(capsys, ["--gt", str(files["gt"]), "--predictions", str(p)], str(p), "'Q99999'", str(files["gt"]))


def test_too_many_dimensions(capsys: pytest.CaptureFixture, files: dict[str, Path]) -> None:
    p = files["dir"] / "wide.h5"
    with h5py.File(p, "w") as f:
        f["query"] = np.zeros((12, 300), np.float32)
        f["reference"] = np.zeros((3, 300), np.float32)
        f["query_ids"] = np.array([f"Q{i:05d}" for i in range(12)], "S")
        f["reference_ids"] = np.array([b"R1", b"R2", b"R3"])
    run_error(capsys, ["--gt", str(files["gt"]), "--descriptors", str(p)], str(p), "300 dimensions")


def test_gt_query_without_descriptor(capsys: pytest.CaptureFixture, files: dict[str, Path]) -> None:
    (files["dir"] / "gt2.csv").write_text("query_id,reference_id\nQ00000,R000000\nQ77777,\n")
    argv = ["--gt", str(files["dir"] / "gt2.csv"), "--descriptors", str(files["h5"])]
    run_error(capsys, argv, str(files["h5"]), "1 ground-truth query id(s) have no descriptor", "'Q77777'")


def test_missing_files(capsys: pytest.CaptureFixture, files: dict[str, Path]) -> None:
    missing = files["dir"] / "nope.csv"
    run_error(capsys, ["--gt", str(missing), "--predictions", str(files["pred"])], str(missing), "not found")
    run_error(capsys, ["--gt", str(files["gt"]), "--predictions", str(missing)], str(missing), "not found")
    run_error(capsys, ["--gt", str(files["gt"]), "--descriptors", str(missing)], str(missing), "not found")


def test_gt_without_pairs(capsys: pytest.CaptureFixture, files: dict[str, Path]) -> None:
    (files["dir"] / "empty_gt.csv").write_text("query_id,reference_id\nQ00000,\n")
    argv = ["--gt", str(files["dir"] / "empty_gt.csv"), "--predictions", str(files["pred"])]
    run_error(capsys, argv, "no matched pair")


def test_usage_errors(capsys: pytest.CaptureFixture, files: dict[str, Path]) -> None:
    assert main(["--gt", str(files["gt"])]) == 2
    assert main(["--gt", str(files["gt"]), "--predictions", str(files["pred"]), "--knn", "5"]) == 2
    assert main(["--gt", str(files["gt"]), "--descriptors", str(files["h5"]), "--knn", "0"]) == 2
    assert "isc-score: error:" in capsys.readouterr().err


def test_module_entry_point(files: dict[str, Path]) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ok = subprocess.run(
        [sys.executable, "-m", "isc_research.cli.score", "--gt", str(files["gt"]), "--predictions", str(files["pred"])],
        capture_output=True, text=True, env=env, cwd=REPO,
    )  # fmt: skip
    assert ok.returncode == 0 and "uAP" in json.loads(ok.stdout)
    bad = subprocess.run(
        [sys.executable, "-m", "isc_research.cli.score", "--gt", str(files["gt"]), "--predictions", "missing.csv"],
        capture_output=True, text=True, env=env, cwd=REPO,
    )  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("isc-score: error: missing.csv: file not found")
