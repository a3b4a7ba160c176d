"""The copy threshold of `isc-search`: the score above which a match is called a copy, chosen on validation data.

How: the checkpoint's validation data (the DISC-layout dataset recorded in its training config — queries,
references and a ground truth, e.g. the mini-DISC it was validated on — or another DISC-layout folder) is
embedded with the same model and transform as the index; every query's k nearest references (inner product
of the L2-normalised descriptors = cosine similarity) are pooled over all queries and sorted by score, the
precision-recall curve of this pooled list is computed against the ground truth (`isc_research.metric.precision_recall`,
the official µAP's curve), and the threshold is the score of the rank that reaches the highest recall while
keeping precision ≥ the target (0.9 by default, the challenge's recall@P90 operating point). Every pair
scored ≥ the threshold on the validation data is then a copy with that precision.

The precision holds for collections like the validation data: with more non-copies per copy among your
images the same threshold gives lower precision. Without a pair reaching the target precision (an untrained
model), there is no threshold (None) and nothing is flagged: set one by hand.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from isc_research.config import config_dir
from isc_research.data.disc import select_validation
from isc_research.data.records import ImageRecord, layout_help, list_split
from isc_research.formats import read_ground_truth
from isc_research.metric import GroundTruth, Predictions, evaluate, precision_recall
from isc_research.search import knn_candidates

__all__ = ["Calibration", "ValidationSet", "calibrate", "threshold_at_precision", "validation_set"]


@dataclass
class ValidationSet:
    root: Path
    queries: list[ImageRecord]
    references: list[ImageRecord]
    ground_truth: GroundTruth


@dataclass
class Calibration:
    """The threshold and how it was obtained; `precision`/`recall` are measured at it on the validation data."""

    threshold: float | None
    method: str  # "validation" or "manual"
    target_precision: float | None = None
    precision: float | None = None
    recall: float | None = None
    uAP: float | None = None
    data: str | None = None
    k: int | None = None
    n_queries: int = 0
    n_references: int = 0
    n_gt_pairs: int = 0
    unreadable: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def manual(cls, threshold: float) -> Calibration:
        return cls(threshold=float(threshold), method="manual")


def threshold_at_precision(gt: GroundTruth, preds: Predictions, target: float) -> tuple[float, float, float] | None:
    """(threshold, precision, recall) at the highest-recall rank of the pooled, score-sorted predictions whose
    precision is ≥ `target`; None when no rank reaches it."""
    if not 0 < target <= 1:
        raise ValueError(f"target precision must be in (0, 1], got {target}")
    if len(preds) == 0:
        return None
    precision, recall, scores = precision_recall(gt, preds)
    ok = np.flatnonzero(precision >= target)
    if not len(ok):
        return None
    best = ok[np.argmax(recall[ok])]
    return float(scores[best]), float(precision[best]), float(recall[best])


def _layout(root: Path) -> dict:
    """The dataset config of a DISC-layout folder: a mini-DISC (query/, reference/, ground_truth.csv) or a
    DISC21 download (dev_queries/, references_*/, public_ground_truth.csv; validation subset of conf/dataset)."""
    if (root / "ground_truth.csv").is_file():
        return {
            "query_dir": "query",
            "reference_dir": "reference",
            "ground_truth": "ground_truth.csv",
            "validation": {"max_queries": None, "max_references": None, "seed": 0},
        }
    disc21 = OmegaConf.to_container(OmegaConf.load(config_dir() / "dataset" / "disc21.yaml"))
    if (root / disc21["ground_truth"]).is_file():
        return disc21
    raise FileNotFoundError(
        f"{root} is not a DISC-layout dataset with ground truth: expected query/, reference/ and "
        f"ground_truth.csv (a mini-DISC, see isc-make-dataset) or the DISC21 download "
        f"(dev_queries/, references_*/, public_ground_truth.csv)"
    )


def validation_set(train_config: dict, root: str | os.PathLike | None = None) -> ValidationSet:
    """The validation queries, references and ground truth of a DISC-layout folder `root`, or (root None) of the
    dataset recorded in the checkpoint's training config, with its validation subset."""
    if root is not None:
        folder = Path(root).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"calibration data {folder} is not a folder")
        ds = _layout(folder)
    else:
        ds = train_config.get("dataset")
        if not ds:
            raise ValueError(
                "the checkpoint records no dataset to calibrate on: pass --calibration-data DIR "
                "(a DISC-layout folder with ground truth) or --threshold T"
            )
        if ds.get("kind") == "mini_disc":
            from isc_research.data.mini_disc import MiniDiscSpec

            folder = Path(ds["root"]).expanduser() / MiniDiscSpec(**ds["build"]).name()
        else:
            folder = Path(str(ds.get("root"))).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(
                f"the checkpoint's validation data {folder} is not there (a relative path is taken from the current "
                "folder): run from the training folder, or pass --calibration-data DIR, or --threshold T"
            )
    help_text = layout_help(folder, {"query": ds["query_dir"], "reference": ds["reference_dir"]}, ds["ground_truth"])
    queries = list_split(folder, ds["query_dir"], "query", help_text=help_text)
    references = list_split(folder, ds["reference_dir"], "reference", help_text=help_text)
    gt_path = folder / ds["ground_truth"]
    val = ds.get("validation") or {}
    queries, references, gt = select_validation(
        queries,
        references,
        read_ground_truth(gt_path),
        max_queries=val.get("max_queries"),
        max_references=val.get("max_references"),
        seed=int(val.get("seed", 0)),
        gt_path=gt_path,
    )
    return ValidationSet(folder, queries, references, gt)


def calibrate(
    embedder,
    data: ValidationSet,
    *,
    target_precision: float = 0.9,
    k: int = 10,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
) -> Calibration:
    """Embed the validation set with `embedder` (an `isc_research.index.embed.Embedder`) and choose the threshold."""
    common = dict(batch_size=batch_size, num_workers=num_workers, progress=progress)
    q = embedder.embed_files([r.path for r in data.queries], desc="calibration queries", **common)
    r = embedder.embed_files([r.path for r in data.references], desc="calibration references", **common)
    if not len(q.paths) or not len(r.paths):
        raise ValueError(f"no readable calibration {'query' if not len(q.paths) else 'reference'} image in {data.root}")
    qids = np.array([p.stem for p in q.paths])
    rids = np.array([p.stem for p in r.paths])
    gt = data.ground_truth
    if len(qids) < len(gt.query_ids):  # unreadable queries are left out of the ground truth, and listed
        gt = gt.restricted(qids.tolist())
    preds = knn_candidates(q.vectors, r.vectors, qids, rids, k=k, metric="ip")
    found = threshold_at_precision(gt, preds, target_precision)
    threshold, precision, recall = found if found is not None else (None, None, None)
    return Calibration(
        threshold=threshold,
        method="validation",
        target_precision=target_precision,
        precision=precision,
        recall=recall,
        uAP=evaluate(gt, preds).uAP,
        data=str(data.root),
        k=k,
        n_queries=len(qids),
        n_references=len(rids),
        n_gt_pairs=gt.n_pairs,
        unreadable=[f"{p}: {reason}" for p, reason in q.failed + r.failed],
    )
