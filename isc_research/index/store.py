"""A descriptor index of image files persisted in a folder, with incremental adds.

Folder layout:
  index.faiss  faiss IndexIDMap2(IndexFlatIP): exact inner product of L2-normalised descriptors (cosine
               similarity), each vector under the integer id of its image
  images.csv   id,path,mtime_ns,size: the file (absolute path) and the state (modification time, bytes) it
               was embedded from
  index.json   the model and transform the vectors were made with (queries must use the same), the copy
               threshold and its calibration (isc_research.index.calibrate), counts, times

`add` embeds only new files: a path already indexed with the same modification time and size is a duplicate
(skipped and counted); a path indexed with another modification time or size was edited since and is embedded
again (its old vector removed). Paths are canonical (absolute, `..` resolved: isc_research.index.embed.canonical).
`refresh` does the same for the matches of a query before they are reported, so that an image edited after
indexing is never reported with its old score, and drops the entries whose file is gone. `open` refuses an
index.json edited by hand where it matters: a threshold that is not a finite number, or model
settings that no longer match their check values (the vectors were made with the recorded ones). Unreadable files are
returned with their reason. The files are rewritten atomically after
every `save_every` new images, so an interrupted add keeps what it saved, and a rerun skips it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from isc_research.index.calibrate import Calibration
from isc_research.index.embed import Embedder, canonical, list_images

__all__ = ["AddReport", "SearchIndexError", "SearchIndex"]

INDEX_FILE, IMAGES_FILE, META_FILE = "index.faiss", "images.csv", "index.json"
FORMAT = 1
_COMPARED = ("weights", "size", "resize", "scales", "flip", "dim")  # settings a query must share with the index


class SearchIndexError(ValueError):
    """A missing, foreign, corrupt or incompatible index folder; the message says what to do."""


@dataclass
class AddReport:
    added: list[Path] = field(default_factory=list)
    updated: list[Path] = field(default_factory=list)  # indexed before, modified since: embedded again
    duplicates: list[Path] = field(default_factory=list)  # same path and modification time: skipped
    failed: list[tuple[Path, str]] = field(default_factory=list)  # unreadable: not indexed
    ignored: list[Path] = field(default_factory=list)  # files without an image suffix inside the folders

    def counts(self) -> dict:
        return {k: len(getattr(self, k)) for k in ("added", "updated", "duplicates", "failed", "ignored")}


def _file_state(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


class SearchIndex:
    """Image files → descriptors in a faiss index, with the id ↔ file mapping and the copy threshold."""

    def __init__(self, directory: Path, meta: dict, index: faiss.Index, rows: dict[int, tuple[str, int, int]]):
        self.directory, self.meta, self.index, self.rows = directory, meta, index, rows
        self._by_path = {path: i for i, (path, _, _) in rows.items()}

    # ------------------------------------------------------------------ create / open / save
    @staticmethod
    def check_target(directory: str | os.PathLike, overwrite: bool) -> Path:
        """`directory` as an absolute path if a new index may be written there, else SearchIndexError."""
        directory = Path(directory).expanduser().absolute()
        if directory.exists() and not directory.is_dir():
            raise SearchIndexError(f"{directory} is a file; give a folder for the index")
        if directory.is_dir() and any(directory.iterdir()):
            if not (directory / META_FILE).is_file():
                raise SearchIndexError(
                    f"{directory} is not empty and holds no isc-search index ({META_FILE}); give a new or empty folder"
                )
            if not overwrite:
                raise SearchIndexError(
                    f"{directory} already holds an index: add images to it with `isc-search add "
                    f"{directory} IMAGES...`, or pass --overwrite to replace it"
                )
        return directory

    @classmethod
    def create(
        cls, directory: str | os.PathLike, settings: dict, calibration: Calibration, *, overwrite: bool = False
    ) -> SearchIndex:
        """A new empty index for the model `settings` (Embedder.settings()); written by the first `save`.
        An existing index is replaced only with `overwrite`; a non-empty folder that holds no index never."""
        directory = cls.check_target(directory, overwrite)
        dim = int(settings["dim"])
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        meta = {
            "format": FORMAT,
            "created": now,
            "updated": now,
            "model": settings,
            "model_check": _checks(settings),
            "calibration": calibration.to_dict(),
            "count": 0,
            "next_id": 0,
        }
        return cls(directory, meta, faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), {})

    @classmethod
    def open(cls, directory: str | os.PathLike) -> SearchIndex:
        directory = Path(directory).expanduser().absolute()
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise SearchIndexError(
                f"{directory} holds no isc-search index ({META_FILE} missing); create one with `isc-search build`"
            )
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise SearchIndexError(f"{meta_path} is not valid JSON ({e}); rebuild the index with --overwrite") from None
        if meta.get("format") != FORMAT:
            raise SearchIndexError(
                f"{meta_path}: index format {meta.get('format')!r}, this isc-search reads {FORMAT}; "
                "rebuild the index with --overwrite"
            )
        missing = [
            key
            for key, ok in (
                ("model.dim", "dim" in (meta.get("model") or {})),
                ("calibration.threshold", "threshold" in (meta.get("calibration") or {})),
                ("next_id", "next_id" in meta),
            )
            if not ok
        ]
        if missing:
            raise SearchIndexError(
                f"{meta_path} lacks {', '.join(missing)} (damaged or edited by hand?); "
                "rebuild the index with --overwrite"
            )
        _check_meta(meta_path, meta)
        rows: dict[int, tuple[str, int, int]] = {}
        with open(directory / IMAGES_FILE, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header != ["id", "path", "mtime_ns", "size"]:
                raise SearchIndexError(f"{directory / IMAGES_FILE}: header {header} is not id,path,mtime_ns,size")
            for line, row in enumerate(reader, start=2):
                try:
                    rows[int(row[0])] = (row[1], int(row[2]), int(row[3]))
                except (ValueError, IndexError):
                    raise SearchIndexError(f"{directory / IMAGES_FILE}, line {line}: malformed row {row}") from None
        try:
            index = faiss.read_index(str(directory / INDEX_FILE))
        except RuntimeError as error:  # faiss: "Error in ... read ..." with a C++ trace
            first = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
            raise SearchIndexError(
                f"{directory / INDEX_FILE} is damaged or truncated ({first[:200]}); rebuild the index "
                "with `isc-search build ... --overwrite`"
            ) from None
        if index.ntotal != len(rows) or index.d != int(meta["model"]["dim"]):
            raise SearchIndexError(
                f"{directory}: {INDEX_FILE} holds {index.ntotal} vectors of {index.d} dims but "
                f"{IMAGES_FILE} lists {len(rows)} images of {meta['model']['dim']} dims; "
                "rebuild it with --overwrite"
            )
        return cls(directory, meta, index, rows)

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.meta["count"] = len(self.rows)
        self.meta["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

        def write_rows(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["id", "path", "mtime_ns", "size"])
                w.writerows([i, *self.rows[i]] for i in sorted(self.rows))

        _atomic_write(self.directory / INDEX_FILE, lambda tmp: faiss.write_index(self.index, str(tmp)))
        _atomic_write(self.directory / IMAGES_FILE, write_rows)
        _atomic_write(self.directory / META_FILE, lambda tmp: tmp.write_text(json.dumps(self.meta, indent=2)))

    # ------------------------------------------------------------------ contents
    def __len__(self) -> int:
        return len(self.rows)

    @property
    def threshold(self) -> float | None:
        return self.meta["calibration"]["threshold"]

    def path_of(self, image_id: int) -> str:
        return self.rows[int(image_id)][0]

    def id_of(self, path: str | os.PathLike) -> int | None:
        return self._by_path.get(str(canonical(path)))

    def check_embedder(self, embedder: Embedder) -> None:
        """Raise unless `embedder` makes vectors comparable with the index's (same weights and transform)."""
        mine, theirs = self.meta["model"], embedder.settings()
        diff = [k for k in _COMPARED if mine.get(k) != theirs.get(k)]
        if diff:
            raise SearchIndexError(
                f"{embedder.checkpoint} does not embed like the index {self.directory} "
                f"(different {', '.join(diff)}; the index was built with {mine['checkpoint']}): "
                "use that checkpoint and settings, or build a new index"
            )

    # ------------------------------------------------------------------ add / search
    def add(
        self,
        embedder: Embedder,
        inputs: list[str | os.PathLike],
        *,
        batch_size: int = 64,
        num_workers: int = 0,
        progress: bool = True,
        save_every: int = 2048,
    ) -> AddReport:
        """Embed and add the new or modified image files of `inputs` (files or folders); saves as it goes."""
        self.check_embedder(embedder)
        images, ignored = list_images(inputs)
        report = AddReport(ignored=ignored)
        todo: list[tuple[Path, tuple[int, int]]] = []
        seen: set[str] = set()
        for path in images:
            key = str(path)
            state = _file_state(path)
            old = self._by_path.get(key)
            if key in seen or (old is not None and tuple(self.rows[old][1:]) == state):
                report.duplicates.append(path)
            else:
                todo.append((path, state))
            seen.add(key)
        for start in range(0, len(todo), save_every):
            part = todo[start : start + save_every]
            done = embedder.embed_files(
                [p for p, _ in part],
                batch_size=batch_size,
                num_workers=num_workers,
                progress=progress,
                desc=f"indexing {start + len(part)}/{len(todo)}",
            )
            report.failed += done.failed
            state_of = dict(part)
            replaced = [self._by_path[str(p)] for p in done.paths if str(p) in self._by_path]
            if replaced:
                self.index.remove_ids(np.array(replaced, dtype=np.int64))
                for i in replaced:
                    del self.rows[i]
            ids = np.arange(self.meta["next_id"], self.meta["next_id"] + len(done.paths), dtype=np.int64)
            if len(ids):
                self.index.add_with_ids(done.vectors, ids)
            for i, path in zip(ids.tolist(), done.paths):
                key = str(path)
                (report.updated if key in self._by_path else report.added).append(path)
                self.rows[i] = (key, *state_of[path])
                self._by_path[key] = i
            self.meta["next_id"] += len(ids)
            self.save()
        if not todo:
            self.save()
        return report

    def refresh(self, embedder: Embedder, paths: list[str], **add_options) -> tuple[AddReport, list[str]]:
        """Embed again those of the indexed `paths` whose file changed (modification time or size) since it was
        indexed, and remove those whose file is gone: (the add report, the removed paths)."""
        changed, gone = [], []
        for key in dict.fromkeys(paths):
            i = self._by_path.get(key)
            if i is None:
                continue
            try:
                state = _file_state(Path(key))
            except OSError:
                gone.append(key)
                continue
            if state != tuple(self.rows[i][1:]):
                changed.append(key)
        if gone:
            ids = [self._by_path.pop(key) for key in gone]
            self.index.remove_ids(np.array(ids, dtype=np.int64))
            for i in ids:
                del self.rows[i]
        report = self.add(embedder, changed, **add_options) if changed else AddReport()
        if gone and not changed:
            self.save()
        return report, gone

    def search(self, vectors: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """The k best (path, cosine similarity) of each query vector, best first."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        k = min(k, len(self))
        if k == 0 or len(vectors) == 0:
            return [[] for _ in range(len(vectors))]
        scores, ids = self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
        return [[(self.path_of(i), float(s)) for s, i in zip(srow, irow) if i >= 0] for srow, irow in zip(scores, ids)]


def _checks(settings: dict) -> dict[str, str]:
    """A short hash of each model setting, stored beside them: an edit of index.json is found and named."""
    return {
        k: hashlib.sha1(json.dumps(v, sort_keys=True).encode()).hexdigest()[:12] for k, v in sorted(settings.items())
    }


def _check_meta(meta_path: Path, meta: dict) -> None:
    """Refuse a threshold that is not a finite cosine similarity, or model settings edited since the index was built."""
    threshold = meta["calibration"]["threshold"]
    if threshold is not None and (
        isinstance(threshold, bool) or not isinstance(threshold, int | float) or not math.isfinite(threshold)
    ):
        raise SearchIndexError(
            f"{meta_path}: calibration.threshold={threshold!r} is not a finite number (NaN "
            "flags nothing); fix it, pass --threshold T to `query`, or rebuild the index"
        )
    checks = meta.get("model_check")
    if checks is not None:  # indexes built before the checks existed have none
        edited = sorted(k for k, v in _checks(meta["model"]).items() if checks.get(k) != v)
        edited += sorted(k for k in checks if k not in meta["model"])
        if edited:
            raise SearchIndexError(
                f"{meta_path}: model.{', model.'.join(edited)} edited by hand (the vectors were made "
                "with the recorded value); restore it, or rebuild the index with `isc-search build "
                "... --overwrite`"
            )
