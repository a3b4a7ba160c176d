"""Official ISC file formats: round trips and every validation error (file name + line number)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest

from isc_research.formats import (
    DescriptorSubmission,
    FormatError,
    read_descriptor_submission,
    read_ground_truth,
    read_predictions,
    write_descriptor_submission,
    write_ground_truth,
    write_predictions,
)
from isc_research.metric import GroundTruth, Predictions
from tests.call_count import python_calls

GT_HEADER = "query_id,reference_id\n"
PRED_HEADER = "query_id,reference_id,score\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@contextlib.contextmanager
def raises_at(path: Path, line: int | None, *words: str) -> Iterator[None]:
    """Expect a FormatError whose message starts with 'path:line:' and contains every word."""
    with pytest.raises(FormatError) as info:
        yield
    msg = str(info.value)
    assert msg.startswith(f"{path}:{line}: " if line is not None else f"{path}: "), msg
    for word in words:
        assert word in msg, (word, msg)


# --------------------------------------------------------------------------- ground truth


def test_ground_truth_round_trip(tmp_path: Path) -> None:
    gt = GroundTruth.from_pairs(["Q2", "Q0", "Q1"], {"Q2": "R7", "Q1": "R1"})
    path = tmp_path / "sub" / "gt.csv"
    write_ground_truth(path, gt)
    assert path.read_text() == GT_HEADER + "Q2,R7\nQ0,\nQ1,R1\n"
    back = read_ground_truth(path)
    assert back == gt and back.n_pairs == 2


def test_ground_truth_tolerates_crlf_bom_spaces_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "gt.csv"
    path.write_bytes(b"\xef\xbb\xbfquery_id,reference_id\r\nQ1, R1\r\n\r\nQ2,\r\n")
    assert read_ground_truth(path) == GroundTruth.from_pairs(["Q1", "Q2"], {"Q1": "R1"})


def test_ground_truth_errors(tmp_path: Path) -> None:
    p = tmp_path / "gt.csv"
    with raises_at(p, None, "not found"):
        read_ground_truth(p)
    with raises_at(write(p, ""), None, "empty file", "query_id,reference_id"):
        read_ground_truth(p)
    with raises_at(write(p, "query,reference\nQ1,R1\n"), 1, "expected the header"):
        read_ground_truth(p)
    with raises_at(write(p, GT_HEADER + "Q1,R1\nQ2,R2,R3\n"), 3, "expected 2 fields"):
        read_ground_truth(p)
    with raises_at(write(p, GT_HEADER + "Q1,R1\n,R2\n"), 3, "empty query_id"):
        read_ground_truth(p)
    with raises_at(write(p, GT_HEADER + "Q1,R1\nQ2,\n\nQ1,\n"), 5, "'Q1' is listed twice (lines 2 and 5)"):
        read_ground_truth(p)
    p.write_bytes(GT_HEADER.encode() + b"Q1,\xff\n")
    with raises_at(p, None, "not a UTF-8 text file"):
        read_ground_truth(p)


# --------------------------------------------------------------------------- predictions


def test_predictions_round_trip_with_six_decimals(tmp_path: Path) -> None:
    preds = Predictions.from_rows([("Q1", "R1", 0.1234567), ("Q1", "R2", -3.0), ("Q2", "R1", 1e-9)])
    path = tmp_path / "pred.csv"
    write_predictions(path, preds)
    assert path.read_text() == PRED_HEADER + "Q1,R1,0.123457\nQ1,R2,-3.000000\nQ2,R1,0.000000\n"
    back = read_predictions(path)
    assert back.query_ids.tolist() == ["Q1", "Q1", "Q2"] and back.reference_ids.tolist() == ["R1", "R2", "R1"]
    np.testing.assert_array_equal(back.scores, [0.123457, -3.0, 0.0])


def test_predictions_quoted_fields_and_blank_lines_keep_line_numbers(tmp_path: Path) -> None:
    p = write(tmp_path / "pred.csv", PRED_HEADER + '"Q1","R1",0.5\n\nQ2,R2,0.25\n\nQ3,R3,abc\n')
    with raises_at(p, 6, "'abc' is not a number"):
        read_predictions(p)
    write(p, PRED_HEADER + '"Q1","R1",0.5\n\nQ2, R2 ,0.25\n\n')
    back = read_predictions(p)
    assert back.reference_ids.tolist() == ["R1", "R2"] and back.scores.tolist() == [0.5, 0.25]


@pytest.mark.parametrize(
    ("body", "line", "words"),
    [
        ("Q1,R1,0.5\nQ2,R2\n", 3, ("expected 3 fields", "got 2")),
        ("Q1,R1,0.5\nQ2,R2,0.1,7\n", 3, ("expected 3 fields", "got 4")),
        ("Q1,R1,0.5\n,R2,0.1\n", 3, ("empty query_id",)),
        ("Q1,R1,0.5\nQ2,,0.1\n", 3, ("empty reference_id",)),
        ("Q1,R1,0.5\nQ1,R2,high\n", 3, ("'high' is not a number",)),
        ("Q1,R1,0.5\nQ1,R2,nan\n", 3, ("'nan' is not finite",)),
        ("Q1,R1,inf\n", 2, ("'inf' is not finite",)),
        ("Q1,R1,0.5\nQ2,R1,0.4\nQ1,R1,0.1\n", 4, ("duplicate prediction ('Q1', 'R1') on lines 2 and 4",)),
    ],
)
def test_predictions_row_errors(tmp_path: Path, body: str, line: int, words: tuple[str, ...]) -> None:
    p = write(tmp_path / "pred.csv", PRED_HEADER + body)
    with raises_at(p, line, *words):
        read_predictions(p)


def test_predictions_header_only_is_empty(tmp_path: Path) -> None:
    assert len(read_predictions(write(tmp_path / "pred.csv", PRED_HEADER))) == 0


def test_predictions_header_and_file_errors(tmp_path: Path) -> None:
    p = tmp_path / "pred.csv"
    with raises_at(p, None, "file not found"):
        read_predictions(p)
    with raises_at(write(p, "query_id,reference_id\nQ1,R1\n"), 1, "expected the header 'query_id,reference_id,score'"):
        read_predictions(p)


def test_predictions_row_limit(tmp_path: Path) -> None:
    p = write(tmp_path / "pred.csv", PRED_HEADER + "".join(f"Q{i},R{i},{i}\n" for i in range(4)))
    with raises_at(p, 5, "more than 3 prediction rows"):
        read_predictions(p, max_rows=3)
    assert len(read_predictions(p, max_rows=4)) == 4 and len(read_predictions(p, max_rows=None)) == 4
    preds = read_predictions(p)
    with raises_at(tmp_path / "out.csv", None, "more than 2 prediction rows"):
        write_predictions(tmp_path / "out.csv", preds, max_rows=2)
    assert not (tmp_path / "out.csv").exists()


def test_write_predictions_rejects_duplicates(tmp_path: Path) -> None:
    preds = Predictions.from_rows([("Q1", "R1", 0.5), ("Q1", "R1", 0.4)])
    with raises_at(tmp_path / "out.csv", None, "duplicates", "('Q1', 'R1')"):
        write_predictions(tmp_path / "out.csv", preds)


def test_read_predictions_does_no_python_work_per_row(tmp_path: Path) -> None:
    """The reader parses in C loops (csv, list comprehensions, numpy): 20× the rows make exactly as many
    Python calls (the per-row float fallback or a row loop would add one or more per row). Its time at 500k
    rows is measured by scripts/bench/predictions_io.py."""
    rng = np.random.default_rng(0)
    calls = {}
    for n in (2_000, 40_000):
        q = np.char.add("Q", np.char.zfill(rng.integers(50_000, size=n).astype(str), 5))
        r = np.char.add("R", np.char.zfill(rng.permutation(1_000_000)[:n].astype(str), 6))
        write_predictions(tmp_path / f"{n}.csv", Predictions(q, r, rng.normal(size=n)))
        back = read_predictions(tmp_path / f"{n}.csv")
        assert len(back) == n and (back.query_ids == q).all()
        calls[n] = python_calls(lambda: read_predictions(tmp_path / f"{n}.csv"))
    assert calls[40_000] == calls[2_000]


# --------------------------------------------------------------------------- descriptors


def submission(n_q: int = 4, n_r: int = 6, d: int = 8, seed: int = 0) -> DescriptorSubmission:
    rng = np.random.default_rng(seed)
    return DescriptorSubmission(
        query_ids=np.array([f"Q{i:05d}" for i in range(n_q)]),
        query=rng.normal(size=(n_q, d)).astype(np.float32),
        reference_ids=np.array([f"R{i:06d}" for i in range(n_r)]),
        reference=rng.normal(size=(n_r, d)).astype(np.float32),
    )


def raw_h5(path: Path, **datasets) -> Path:
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f.create_dataset(name, data=value)
    return path


def raw_of(sub: DescriptorSubmission) -> dict:
    return {
        "query": sub.query,
        "reference": sub.reference,
        "query_ids": sub.query_ids.astype("S"),
        "reference_ids": sub.reference_ids.astype("S"),
    }


def test_descriptor_round_trip(tmp_path: Path) -> None:
    sub = submission(d=256)
    path = tmp_path / "sub.h5"
    write_descriptor_submission(path, sub)
    with h5py.File(path) as f:
        assert f["query_ids"].dtype.kind == "S" and f["query"].dtype == np.float32
        assert f["reference_ids"][0] == b"R000000"
    back = read_descriptor_submission(path)
    assert back.query_ids.tolist() == sub.query_ids.tolist() and back.reference_ids.dtype.kind == "U"
    np.testing.assert_array_equal(back.query, sub.query)
    np.testing.assert_array_equal(back.reference, sub.reference)


def test_descriptor_reads_variable_length_string_ids(tmp_path: Path) -> None:
    sub = submission()
    raw = raw_of(sub) | {"query_ids": np.array([s.encode() for s in sub.query_ids], dtype=h5py.string_dtype())}
    back = read_descriptor_submission(raw_h5(tmp_path / "s.h5", **raw))
    assert back.query_ids.tolist() == sub.query_ids.tolist()


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda s: {"query": np.zeros((4, 257), np.float32), "reference": np.zeros((6, 257), np.float32)},
         ("'query' has 257 dimensions, more than the maximum 256",)),
        (lambda s: {"reference": np.where(np.arange(8) == 3, np.nan, s.reference).astype(np.float32)},
         ("'reference' holds NaN or inf in row 0",)),
        (lambda s: {"query": s.query.ravel()}, ("'query' must be 2-D",)),
        (lambda s: {"query_ids": s.query_ids[:3].astype("S")}, ("query_ids has shape (3,) but 'query' has 4 rows",)),
        (lambda s: {"reference_ids": np.array([b"R1"] * 6)}, ("reference_ids contains duplicates, e.g. 'R1'",)),
        (lambda s: {"reference": s.reference[:, :4]}, ("query has 8 dimensions but reference has 4",)),
    ],
)  # fmt: skip
def test_descriptor_errors(tmp_path: Path, change, words: tuple[str, ...]) -> None:
    sub = submission()
    path = raw_h5(tmp_path / "bad.h5", **(raw_of(sub) | change(sub)))
    with raises_at(path, None, *words):
        read_descriptor_submission(path)


def test_descriptor_missing_datasets_and_files(tmp_path: Path) -> None:
    sub = submission()
    raw = raw_of(sub)
    del raw["reference"], raw["query_ids"]
    path = raw_h5(tmp_path / "partial.h5", **raw)
    with raises_at(path, None, "missing HDF5 dataset(s) reference, query_ids"):
        read_descriptor_submission(path)
    with raises_at(tmp_path / "none.h5", None, "file not found"):
        read_descriptor_submission(tmp_path / "none.h5")
    with raises_at(write(tmp_path / "text.h5", "hello"), None, "not a readable HDF5 file"):
        read_descriptor_submission(tmp_path / "text.h5")


def test_descriptor_dim_limit_is_configurable_and_checked_on_write(tmp_path: Path) -> None:
    sub = submission(d=300)
    with raises_at(tmp_path / "w.h5", None, "300 dimensions, more than the maximum 256"):
        write_descriptor_submission(tmp_path / "w.h5", sub)
    write_descriptor_submission(tmp_path / "w.h5", sub, max_dim=None)
    assert read_descriptor_submission(tmp_path / "w.h5", max_dim=512).query.shape == (4, 300)
    with raises_at(tmp_path / "w.h5", None, "more than the maximum 256"):
        read_descriptor_submission(tmp_path / "w.h5")
