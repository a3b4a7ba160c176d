"""The classical hashes' µAP on a run's own validation queries, so that every isc-train summary shows the model
next to PDQ and pHash, and isc-eval's report.html their per-edit metrics next to the model's
(`dataset.compare_hashes`: [pdq, phash] for the mini-DISC, none for DISC21, where hashing 1M references takes hours).

The hashes are scored as `isc-eval baseline=<name>` scores them (isc_research.baselines' extractors through
`extract_to_hdf5`, the official global rule with 10 results per query, `isc_research.metric.evaluate`), on the queries,
references and ground truth that the run validates on. They depend only on those images, so each result is
computed once and cached in `<cache_dir>/<key digest>.json`, keyed by what identifies the images: the dataset
build (a mini-DISC's manifest: format version, spec, library versions, build time; else the dataset folder), the
validation selection (query, reference and ground-truth ids) and the hash's parameters. A rebuilt or other
mini-DISC, another validation subset or another hash setting gets its own entry; nothing is recomputed otherwise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from isc_research.data.disc import DiscData

log = logging.getLogger(__name__)

__all__ = ["HASH_LABELS", "cache_key", "hash_metrics", "hash_results", "score_hash"]

HASH_LABELS = {"pdq": "PDQ", "phash": "pHash", "thumbnail": "thumbnail"}
RESULTS_PER_QUERY = 10  # the official global rule (RECIPES §1.4), as isc-eval and the in-loop evaluation use it
DRAFT_SIZE = 256  # conf/eval.yaml eval.draft_size: the same decoded pixels as isc-eval baseline=<name>


def _records(records, root: Path):
    for r in records:
        yield f"{r.id} {os.path.relpath(r.path, root)} {r.crop}"


def _digest(items) -> str:
    return hashlib.sha1("\n".join(items).encode()).hexdigest()


def _build_identity(root: Path) -> dict:
    """What identifies the dataset's images: a mini-DISC's manifest (the build), else the folder."""
    manifest = root / "manifest.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        return {k: m.get(k) for k in ("format", "format_version", "spec", "versions", "built_at")}
    return {"root": str(root.absolute())}


def cache_key(data: DiscData, name: str) -> dict:
    """Everything a hash's µAP on `data` depends on."""
    from isc_research.baselines import BaselineExtractor

    gt = data.ground_truth
    return {
        "build": _build_identity(Path(data.root)),
        "queries": _digest(_records(data.queries, Path(data.root))),  # a detected query crop is another image
        "references": _digest(_records(data.references, Path(data.root))),
        "ground_truth": _digest(f"{q},{gt.matches.get(q, '')}" for q in gt.query_ids),
        "hash": BaselineExtractor(name).fingerprint(),
        "results_per_query": RESULTS_PER_QUERY,
    }


def score_hash(name: str, data: DiscData) -> dict:
    """µAP and recall at rank 1 of hash `name` on `data`'s queries and references (as isc-eval baseline=name),
    and under "edits" the same per edit type and per number of edits (isc_research.analysis.breakdown, as report.html's
    table) when the dataset has query_edits.csv."""
    from isc_research.analysis import breakdown, edit_count_groups, edit_groups, read_query_edits
    from isc_research.baselines import BaselineExtractor
    from isc_research.extract import extract_to_hdf5, read_descriptors
    from isc_research.metric import evaluate
    from isc_research.search import global_candidates

    extractor = BaselineExtractor(name)
    with tempfile.TemporaryDirectory(prefix=f"isc-{name}-") as folder:
        found = {}
        for split, records in (("query", data.queries), ("reference", data.references)):
            path = extract_to_hdf5(
                extractor, records, Path(folder) / f"{split}.h5", draft_size=DRAFT_SIZE, desc=f"{name} {split}"
            )
            found[split] = read_descriptors(path)
    (qids, q), (rids, r) = found["query"], found["reference"]
    predictions = global_candidates(q, r, qids, rids, num_results=RESULTS_PER_QUERY * len(data.queries))
    metrics = evaluate(data.ground_truth, predictions)
    result = {"uAP": float(metrics.uAP), "recall_at_rank1": float(metrics.recall_at_rank1)}
    edits_file = Path(data.root) / "query_edits.csv"
    if edits_file.is_file():
        edits = read_query_edits(edits_file)
        slices = breakdown(data.ground_truth, predictions, {**edit_groups(edits), **edit_count_groups(edits)})
        result["edits"] = {s.group: s.to_dict() for s in slices}
    return result


def hash_results(data: DiscData, name: str, cache_dir: str | os.PathLike) -> dict:
    """score_hash's result for `name` on `data`: from `cache_dir` when the same images were scored before, else
    computed and cached."""
    if name not in HASH_LABELS:
        raise ValueError(
            f"dataset.compare_hashes: {name!r} is unknown; choose among {', '.join(HASH_LABELS)} "
            "(or dataset.compare_hashes=[] for none)"
        )
    cache_dir = Path(cache_dir)
    key = cache_key(data, name)
    path = cache_dir / f"{name}-{_digest([json.dumps(key, sort_keys=True)])[:16]}.json"
    try:
        entry = json.loads(path.read_text()) if path.is_file() else None
    except ValueError:  # a damaged cache file (e.g. a disk that filled up): computed again and replaced
        log.warning("%s is not valid JSON; scoring %s again", path, name)
        entry = None
    if not isinstance(entry, dict) or entry.get("key") != key:
        entry = {"key": key, "result": score_hash(name, data)}
        cache_dir.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(json.dumps(entry, indent=2))
        os.replace(temporary, path)  # atomic: a concurrent run reads the old file or the new one
        log.info("%s on the validation queries: µAP %.4f (cached in %s)", name, entry["result"]["uAP"], path)
    return entry["result"]


def hash_metrics(data: DiscData, names, cache_dir: str | os.PathLike) -> dict[str, float]:
    """`hash/<name>/uAP` and `hash/<name>/recall_at_rank1` for each hash of `names` (hash_results)."""
    out: dict[str, float] = {}
    for name in names:
        result = hash_results(data, name, cache_dir)
        out.update({f"hash/{name}/{k}": float(result[k]) for k in ("uAP", "recall_at_rank1")})
    return out
