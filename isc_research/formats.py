"""Official ISC2021 file formats (RECIPES §1.2), validated on read and on write.

* ground truth CSV ``query_id,reference_id`` (an empty reference marks a distractor query);
* matching-track predictions CSV ``query_id,reference_id,score`` (≤ 500,000 rows, 6-decimal scores);
* descriptor-track HDF5 with datasets ``query``, ``reference``, ``query_ids``, ``reference_ids``.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from isc_research.metric import GroundTruth, Predictions, _as_ids, _duplicates

__all__ = [
    "DescriptorSubmission",
    "FormatError",
    "read_descriptor_submission",
    "read_ground_truth",
    "read_predictions",
    "write_descriptor_submission",
    "write_ground_truth",
    "write_predictions",
]

GT_HEADER = ["query_id", "reference_id"]
PRED_HEADER = ["query_id", "reference_id", "score"]
MAX_ROWS = 500_000
MAX_DIM = 256
_DATASETS = ("query", "reference", "query_ids", "reference_ids")


class FormatError(ValueError):
    """A file breaks the ISC format; the message names the file, the line where known, and a fix."""

    def __init__(self, path: str | os.PathLike, problem: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {problem}")
        self.path, self.line = str(path), line


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Building ~10^6 small lists triggers many useless GC passes (3× slower parsing)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _read_rows(path: str | os.PathLike, header: list[str]) -> tuple[list[list[str]], Callable[[int], int]]:
    """Non-blank rows after a checked header (fields stripped), and row index -> 1-based line number."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            text = f.read()
    except FileNotFoundError:
        raise FormatError(path, "file not found; check the path") from None
    except UnicodeDecodeError as e:
        raise FormatError(path, _compressed(path) or f"not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise FormatError(path, f"cannot read file ({e.strerror})") from None
    reader = csv.reader(io.StringIO(text))
    first = next(reader, None)
    if first is None:
        raise FormatError(path, f"empty file; expected the header {','.join(header)!r}")
    if [x.strip() for x in first] != header:
        raise FormatError(path, f"expected the header {','.join(header)!r}, got {','.join(first)!r}", 1)
    line_of: Callable[[int], int] = _next_line  # one row per line after the header ...
    try:
        with _gc_paused():
            if '"' in text or "\n\n" in text.replace("\r\n", "\n").rstrip("\r\n"):
                rows, lines = [], []  # ... unless quoted fields or blank lines: track row by row
                for row in reader:
                    if row:
                        rows.append(row)
                        lines.append(reader.line_num)
                line_of = lines.__getitem__
            else:
                rows = [row for row in reader if row]
            if " " in text or "\t" in text:
                rows = [[x.strip() for x in row] for row in rows]
    except csv.Error as e:
        raise FormatError(path, f"not a valid CSV file ({e})", reader.line_num) from None
    return rows, line_of


_COMPRESSIONS = (
    (b"\x1f\x8b", "gzip", "gunzip -k {}"),
    (b"PK\x03\x04", "zip", "unzip {}"),
    (b"BZh", "bzip2", "bunzip2 -k {}"),
    (b"\xfd7zXZ\x00", "xz", "unxz -k {}"),
    (b"\x28\xb5\x2f\xfd", "zstd", "unzstd {}"),
)


def _compressed(path: str | os.PathLike) -> str | None:
    """'compressed (gzip) ...' with the command that decompresses it, if the file starts with a compressor's magic."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    for magic, name, command in _COMPRESSIONS:
        if head.startswith(magic):
            return (
                f"the file is compressed ({name}), not a plain CSV text; decompress it first "
                f"(e.g. {command.format(Path(path).name)}) and pass the .csv"
            )
    return None


def _next_line(index: int) -> int:
    return index + 2


def read_ground_truth(path: str | os.PathLike) -> GroundTruth:
    """Read a ground-truth CSV; every row is an evaluated query, an empty reference a distractor."""
    rows, line_of = _read_rows(path, GT_HEADER)
    query_ids: list[str] = []
    matches: dict[str, str] = {}
    first_index: dict[str, int] = {}
    for i, row in enumerate(rows):
        if len(row) != 2:
            raise FormatError(path, f"expected 2 fields 'query_id,reference_id', got {len(row)}", line_of(i))
        q, r = row
        if not q:
            raise FormatError(path, "empty query_id", line_of(i))
        if q in first_index:
            lines = f"lines {line_of(first_index[q])} and {line_of(i)}"
            raise FormatError(path, f"query {q!r} is listed twice ({lines}); keep one row per query", line_of(i))
        first_index[q] = i
        query_ids.append(q)
        if r:
            matches[q] = r
    return GroundTruth(tuple(query_ids), matches)


def write_ground_truth(path: str | os.PathLike, gt: GroundTruth) -> None:
    """Write a ground-truth CSV, one row per query in ``gt.query_ids`` order."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(GT_HEADER)
        w.writerows((q, gt.matches.get(q, "")) for q in gt.query_ids)


def _check_count(path: str | os.PathLike, n: int, max_rows: int | None, line_of: Callable[[int], int] | None) -> None:
    if max_rows is not None and n > max_rows:
        raise FormatError(
            path,
            f"more than {max_rows} prediction rows (the official limit); keep the {max_rows} best-scored",
            line_of(max_rows) if line_of is not None else None,
        )


def _check_duplicate_rows(path: str | os.PathLike, preds: Predictions, line_of: Callable[[int], int] | None) -> None:
    found = _duplicates(preds.query_ids, preds.reference_ids)
    if found is None:
        return
    i, j, _, n_dup = found
    i, j = min(i, j), max(i, j)
    pair = f"({str(preds.query_ids[i])!r}, {str(preds.reference_ids[i])!r})"
    if line_of is None:
        raise FormatError(path, f"predictions contain duplicates: {n_dup} pair(s), e.g. {pair}; keep one row per pair")
    raise FormatError(
        path,
        f"duplicate prediction {pair} on lines {line_of(i)} and {line_of(j)} "
        f"({n_dup} duplicated pair(s) in all); keep one row per pair",
        line_of(j),
    )


def _check_known(path: str | os.PathLike, name: str, ids: np.ndarray, known: object | None) -> None:
    """Every id must be one of `known` (the dataset's ids), when given."""
    if known is None:
        return
    known_arr = _as_ids(list(known) if not isinstance(known, np.ndarray) else known, name)
    unknown = ids[~np.isin(ids, known_arr)]
    if len(unknown):
        raise FormatError(
            path,
            f"{name} has {len(np.unique(unknown))} id(s) that are not in the dataset, e.g. "
            f"{str(unknown[0])!r}; submit only the dataset's {name.split('_')[0]} images",
        )


def read_predictions(
    path: str | os.PathLike,
    *,
    max_rows: int | None = MAX_ROWS,
    known_query_ids: object | None = None,
    known_reference_ids: object | None = None,
) -> Predictions:
    """Read a predictions CSV (``query_id,reference_id,score``); at most ``max_rows`` rows (None: no cap);
    with ``known_*_ids``, every id must be one of them."""
    rows, line_of = _read_rows(path, PRED_HEADER)
    _check_count(path, len(rows), max_rows, line_of)
    if set(map(len, rows)) - {3}:
        bad = next(i for i, row in enumerate(rows) if len(row) != 3)
        n = len(rows[bad])
        raise FormatError(path, f"expected 3 fields 'query_id,reference_id,score', got {n}", line_of(bad))
    with _gc_paused():
        qs, rs, ss = ([row[c] for row in rows] for c in range(3))
    for name, col in (("query_id", qs), ("reference_id", rs)):
        if "" in col:
            raise FormatError(path, f"empty {name}", line_of(col.index("")))
    try:
        scores = np.array(ss, dtype=np.float64)
    except ValueError:
        scores = np.array([_float(path, s, line_of(i)) for i, s in enumerate(ss)])
    nonfinite = np.flatnonzero(~np.isfinite(scores))
    if len(nonfinite):
        i = int(nonfinite[0])
        raise FormatError(path, f"score {ss[i]!r} is not finite; use real numbers", line_of(i))
    preds = Predictions(np.array(qs, dtype=str), np.array(rs, dtype=str), scores)
    _check_duplicate_rows(path, preds, line_of)
    _check_known(path, "query_ids", preds.query_ids, known_query_ids)
    _check_known(path, "reference_ids", preds.reference_ids, known_reference_ids)
    return preds


def _float(path: str | os.PathLike, text: str, line: int) -> float:
    try:
        return float(text)
    except ValueError:
        raise FormatError(path, f"score {text!r} is not a number", line) from None


def write_predictions(
    path: str | os.PathLike,
    preds: Predictions,
    *,
    max_rows: int | None = MAX_ROWS,
    known_query_ids: object | None = None,
    known_reference_ids: object | None = None,
) -> None:
    """Write a predictions CSV with 6-decimal scores, after the official validity checks (and, with
    ``known_*_ids``, that every id is one of the dataset's)."""
    _check_count(path, len(preds), max_rows, None)
    _check_duplicate_rows(path, preds, None)
    _check_known(path, "query_ids", preds.query_ids, known_query_ids)
    _check_known(path, "reference_ids", preds.reference_ids, known_reference_ids)
    if (preds.query_ids == "").any() or (preds.reference_ids == "").any():
        raise FormatError(path, "predictions contain an empty query or reference id")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(PRED_HEADER)
        w.writerows(
            zip(preds.query_ids.tolist(), preds.reference_ids.tolist(), (f"{s:.6f}" for s in preds.scores.tolist()))
        )


@dataclass(frozen=True, eq=False)
class DescriptorSubmission:
    """Descriptor-track submission: query and reference descriptors with their ids (str arrays)."""

    query_ids: np.ndarray
    query: np.ndarray
    reference_ids: np.ndarray
    reference: np.ndarray


def _check_descriptors(path: str | os.PathLike, name: str, x: np.ndarray, ids: np.ndarray, max_dim: int | None) -> None:
    if x.ndim != 2:
        raise FormatError(path, f"dataset {name!r} must be 2-D (n, dim), got shape {x.shape}")
    if x.dtype.kind not in "fiu":
        raise FormatError(path, f"dataset {name!r} must hold float32 numbers, got dtype {x.dtype}")
    if x.shape[1] == 0:
        raise FormatError(path, f"dataset {name!r} has 0 dimensions")
    if max_dim is not None and x.shape[1] > max_dim:
        problem = f"dataset {name!r} has {x.shape[1]} dimensions, more than the maximum {max_dim}"
        raise FormatError(path, f"{problem}; reduce them (e.g. PCA)")
    for start in range(0, len(x), 65536):
        if not np.isfinite(x[start : start + 65536]).all():
            row = start + int(np.flatnonzero(~np.isfinite(x[start : start + 65536]).all(axis=1))[0])
            raise FormatError(path, f"dataset {name!r} holds NaN or inf in row {row}")
    if ids.ndim != 1 or len(ids) != len(x):
        raise FormatError(path, f"{name}_ids has shape {ids.shape} but {name!r} has {len(x)} rows; give one id per row")
    uniq, counts = np.unique(ids, return_counts=True)
    if len(uniq) != len(ids):
        raise FormatError(path, f"{name}_ids contains duplicates, e.g. {str(uniq[counts > 1][0])!r}")
    if (ids == "").any():
        raise FormatError(path, f"{name}_ids contains an empty id")


def _validate_submission(
    path: str | os.PathLike,
    sub: DescriptorSubmission,
    max_dim: int | None,
    known_query_ids: object | None = None,
    known_reference_ids: object | None = None,
) -> DescriptorSubmission:
    try:
        qids, rids = _as_ids(sub.query_ids, "query_ids"), _as_ids(sub.reference_ids, "reference_ids")
    except (ValueError, UnicodeDecodeError) as e:
        raise FormatError(path, f"ids must be strings ({e})") from None
    query, reference = np.asarray(sub.query), np.asarray(sub.reference)
    _check_descriptors(path, "query", query, qids, max_dim)
    _check_descriptors(path, "reference", reference, rids, max_dim)
    if query.shape[1] != reference.shape[1]:
        raise FormatError(path, f"query has {query.shape[1]} dimensions but reference has {reference.shape[1]}")
    _check_known(path, "query_ids", qids, known_query_ids)
    _check_known(path, "reference_ids", rids, known_reference_ids)
    return DescriptorSubmission(
        qids, np.ascontiguousarray(query, np.float32), rids, np.ascontiguousarray(reference, np.float32)
    )


def read_descriptor_submission(
    path: str | os.PathLike,
    *,
    max_dim: int | None = MAX_DIM,
    known_query_ids: object | None = None,
    known_reference_ids: object | None = None,
) -> DescriptorSubmission:
    """Read and validate a descriptor-track HDF5 submission (ids are returned as str arrays); with
    ``known_*_ids``, every id must be one of them."""
    import h5py

    if not Path(path).is_file():
        raise FormatError(path, "file not found; check the path")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise FormatError(path, f"not a readable HDF5 file ({e})") from None
    with f:
        missing = [name for name in _DATASETS if not isinstance(f.get(name), h5py.Dataset)]
        if missing:
            raise FormatError(path, f"missing HDF5 dataset(s) {', '.join(missing)}; expected {', '.join(_DATASETS)}")
        try:
            data = {name: f[name][()] for name in _DATASETS}
        except (OSError, TypeError) as e:
            raise FormatError(path, f"cannot read the HDF5 datasets ({e})") from None
    return _validate_submission(path, DescriptorSubmission(**data), max_dim, known_query_ids, known_reference_ids)


def write_descriptor_submission(
    path: str | os.PathLike,
    sub: DescriptorSubmission,
    *,
    max_dim: int | None = MAX_DIM,
    known_query_ids: object | None = None,
    known_reference_ids: object | None = None,
) -> None:
    """Validate and write a descriptor-track HDF5 submission (float32 descriptors, byte-string ids, at most
    ``max_dim`` dims, finite, unique ids; with ``known_*_ids``, only those ids)."""
    import h5py

    sub = _validate_submission(path, sub, max_dim, known_query_ids, known_reference_ids)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("query", data=sub.query)
        f.create_dataset("reference", data=sub.reference)
        f.create_dataset("query_ids", data=_encode(sub.query_ids))
        f.create_dataset("reference_ids", data=_encode(sub.reference_ids))


def _encode(ids: np.ndarray) -> np.ndarray:
    try:
        return ids.astype("S")  # fast path for ASCII ids
    except UnicodeEncodeError:
        return np.char.encode(ids, "utf-8")
