"""Descriptor-track HDF5 and matching-track CSV: round trips, and each validation error on write and on read."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from isc_research.formats import (
    DescriptorSubmission,
    FormatError,
    read_descriptor_submission,
    read_predictions,
    write_descriptor_submission,
    write_predictions,
)
from isc_research.metric import Predictions

QIDS = np.array(["Q00000", "Q00001", "Q00002"])
RIDS = np.array(["R000000", "R000001", "R000002", "R000003"])


def submission(dim: int = 8) -> DescriptorSubmission:
    rng = np.random.default_rng(0)
    return DescriptorSubmission(
        QIDS, rng.normal(size=(3, dim)).astype(np.float32), RIDS, rng.normal(size=(4, dim)).astype(np.float32)
    )


def raw_h5(path: Path, sub: DescriptorSubmission) -> Path:
    """Write without validation, as a foreign tool might."""
    with h5py.File(path, "w") as f:
        f["query"], f["reference"] = sub.query, sub.reference
        f["query_ids"], f["reference_ids"] = sub.query_ids.astype("S"), sub.reference_ids.astype("S")
    return path


def test_descriptor_submission_round_trip(tmp_path):
    sub = submission(256)
    write_descriptor_submission(tmp_path / "s.h5", sub, known_query_ids=QIDS, known_reference_ids=RIDS)
    back = read_descriptor_submission(tmp_path / "s.h5", known_query_ids=QIDS, known_reference_ids=RIDS)
    assert back.query.dtype == np.float32 and back.query.shape == (3, 256)
    np.testing.assert_array_equal(back.reference, sub.reference)
    assert back.query_ids.tolist() == QIDS.tolist() and back.reference_ids.tolist() == RIDS.tolist()


def _with(sub: DescriptorSubmission, **change) -> DescriptorSubmission:
    return DescriptorSubmission(**{**sub.__dict__, **change})


def _nan(sub):
    q = sub.query.copy()
    q[1, 3] = np.nan
    return _with(sub, query=q)


def _inf(sub):
    r = sub.reference.copy()
    r[2, 0] = np.inf
    return _with(sub, reference=r)


@pytest.mark.parametrize(
    ("make", "known", "words"),
    [
        (lambda: submission(257), {}, ("257 dimensions", "maximum 256")),
        (lambda: _nan(submission()), {}, ("'query'", "NaN or inf", "row 1")),
        (lambda: _inf(submission()), {}, ("'reference'", "NaN or inf", "row 2")),
        (
            lambda: _with(submission(), query_ids=np.array(["Q00000", "Q00000", "Q00002"])),
            {},
            ("query_ids contains duplicates", "Q00000"),
        ),
        (
            lambda: _with(submission(), reference_ids=np.array(["R000000", "R000001", "R000002", "R999999"])),
            {"known_reference_ids": RIDS},
            ("reference_ids has 1 id(s) that are not in the dataset", "R999999"),
        ),
        (
            lambda: _with(submission(), query_ids=np.array(["Q00000", "Q00001", "Q77777"])),
            {"known_query_ids": QIDS},
            ("query_ids has 1 id(s)", "Q77777"),
        ),
    ],
)
def test_descriptor_submission_errors_on_write_and_read(tmp_path, make, known, words):
    with pytest.raises(FormatError) as on_write:
        write_descriptor_submission(tmp_path / "w.h5", make(), **known)
    assert not (tmp_path / "w.h5").exists()  # nothing written
    path = raw_h5(tmp_path / "r.h5", make())
    with pytest.raises(FormatError) as on_read:
        read_descriptor_submission(path, **known)
    for error in (on_write, on_read):
        assert all(w in str(error.value) for w in words), str(error.value)
    assert str(on_read.value).startswith(str(path))


def predictions(n: int) -> Predictions:
    q = np.array([f"Q{i // 4:05d}" for i in range(n)])
    r = np.array([f"R{i % 4:06d}" for i in range(n)])
    return Predictions(q, r, -np.arange(n, dtype=np.float64) / n)


def test_matching_submission_round_trip_and_errors(tmp_path):
    preds = predictions(12)
    write_predictions(tmp_path / "p.csv", preds, known_query_ids=QIDS, known_reference_ids=RIDS)
    back = read_predictions(tmp_path / "p.csv", known_query_ids=QIDS, known_reference_ids=RIDS)
    np.testing.assert_allclose(back.scores, np.round(preds.scores, 6))
    assert back.query_ids.tolist() == preds.query_ids.tolist()

    extra = Predictions(
        np.r_[preds.query_ids, ["Q00009"]], np.r_[preds.reference_ids, ["R000000"]], np.r_[preds.scores, [0.5]]
    )
    with pytest.raises(FormatError, match="query_ids has 1 id.*'Q00009'"):
        write_predictions(tmp_path / "x.csv", extra, known_query_ids=QIDS)
    write_predictions(tmp_path / "x.csv", extra)
    with pytest.raises(FormatError, match=r"x.csv: query_ids has 1 id.*'Q00009'"):
        read_predictions(tmp_path / "x.csv", known_query_ids=QIDS)

    dup = Predictions(
        np.r_[preds.query_ids, ["Q00000"]], np.r_[preds.reference_ids, ["R000001"]], np.r_[preds.scores, [0.1]]
    )
    with pytest.raises(FormatError, match="duplicates"):
        write_predictions(tmp_path / "d.csv", dup)
    (tmp_path / "d.csv").write_text("query_id,reference_id,score\nQ1,R1,0.5\nQ1,R1,0.4\n")
    with pytest.raises(FormatError, match="d.csv:3: duplicate prediction"):
        read_predictions(tmp_path / "d.csv")


def test_matching_submission_row_limit_on_write(tmp_path):
    """(Reading a 500,001-row file is covered in test_formats.)"""
    many = Predictions(np.array([f"Q{i:06d}" for i in range(500_001)]), np.full(500_001, "R000000"), np.zeros(500_001))
    with pytest.raises(FormatError, match="more than 500000 prediction rows"):
        write_predictions(tmp_path / "big.csv", many)
    assert not (tmp_path / "big.csv").exists()
