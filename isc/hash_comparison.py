"""The classical hashes' µAP on a run's own validation queries, so that every isc-train summary shows the model
next to PDQ and pHash (`compare_hashes` in conf/train.yaml).

The hashes are scored as `isc-eval baseline=<name>` scores them (isc.baselines' extractors through
`extract_to_hdf5`, the official global rule with 10 results per query, `isc.metric.evaluate`), on the queries,
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
    from isc.data.disc import DiscData

log = logging.getLogger(__name__)

__all__ = ["HASH_LABELS", "cache_key", "hash_metrics", "score_hash"]

HASH_LABELS = {"pdq": "PDQ", "phash": "pHash", "thumbnail": "thumbnail"}
RESULTS_PER_QUERY = 10  # the official global rule (RECIPES §1.4), as isc-eval and the in-loop evaluation use it
DRAFT_SIZE = 256  # conf/eval.yaml eval.draft_size: the same decoded pixels as isc-eval baseline=<name>


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
    from isc.baselines import BaselineExtractor

    gt = data.ground_truth
    return {
        "build": _build_identity(Path(data.root)),
        "queries": _digest(r.id for r in data.queries),
        "references": _digest(r.id for r in data.references),
        "ground_truth": _digest(f"{q},{gt.matches.get(q, '')}" for q in gt.query_ids),
        "hash": BaselineExtractor(name).fingerprint(),
        "results_per_query": RESULTS_PER_QUERY,
    }


def score_hash(name: str, data: DiscData) -> dict[str, float]:
    """µAP and recall at rank 1 of hash `name` on `data`'s queries and references (as isc-eval baseline=name)."""
    from isc.baselines import BaselineExtractor
    from isc.extract import extract_to_hdf5, read_descriptors
    from isc.metric import evaluate
    from isc.search import global_candidates

    extractor = BaselineExtractor(name)
    with tempfile.TemporaryDirectory(prefix=f"isc-{name}-") as folder:
        found = {}
        for split, records in (("query", data.queries), ("reference", data.references)):
            path = extract_to_hdf5(extractor, records, Path(folder) / f"{split}.h5", draft_size=DRAFT_SIZE,
                                   desc=f"{name} {split}")
            found[split] = read_descriptors(path)
    (qids, q), (rids, r) = found["query"], found["reference"]
    predictions = global_candidates(q, r, qids, rids, num_results=RESULTS_PER_QUERY * len(data.queries))
    metrics = evaluate(data.ground_truth, predictions)
    return {"uAP": float(metrics.uAP), "recall_at_rank1": float(metrics.recall_at_rank1)}


def hash_metrics(data: DiscData, names, cache_dir: str | os.PathLike) -> dict[str, float]:
    """`hash/<name>/uAP` and `hash/<name>/recall_at_rank1` for each hash of `names`, from the cache when the same
    images were scored before, else computed (score_hash) and cached."""
    cache_dir = Path(cache_dir)
    out: dict[str, float] = {}
    for name in names:
        if name not in HASH_LABELS:
            raise ValueError(f"compare_hashes: {name!r} is unknown; choose among {', '.join(HASH_LABELS)} "
                             "(or compare_hashes=[] for none)")
        key = cache_key(data, name)
        path = cache_dir / f"{name}-{_digest([json.dumps(key, sort_keys=True)])[:16]}.json"
        entry = json.loads(path.read_text()) if path.is_file() else None
        if entry is None or entry.get("key") != key:
            entry = {"key": key, "metrics": score_hash(name, data)}
            cache_dir.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.{os.getpid()}")
            temporary.write_text(json.dumps(entry, indent=2))
            os.replace(temporary, path)  # atomic: a concurrent run reads the old file or the new one
            log.info("%s on the validation queries: µAP %.4f (cached in %s)", name, entry["metrics"]["uAP"], path)
        out.update({f"hash/{name}/{k}": float(v) for k, v in entry["metrics"].items()})
    return out
