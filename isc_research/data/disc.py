"""Resolve a dataset config into image records and ground truth (mini-DISC or a real DISC21 folder)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from isc_research.data.records import ImageRecord, layout_help, list_split
from isc_research.images import scan_files, warn_unused
from isc_research.formats import read_ground_truth
from isc_research.metric import GroundTruth

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiscData:
    """Training images, and the validation queries/references with their ground truth."""

    root: Path
    training: list[ImageRecord]
    queries: list[ImageRecord]
    references: list[ImageRecord]
    ground_truth: GroundTruth


def resolve_root(dataset_cfg) -> Path:
    """The dataset folder; for the mini-DISC it is built on first use inside `root`."""
    if dataset_cfg.kind == "mini_disc":
        from isc_research.data.mini_disc import MiniDiscSpec, ensure_mini_disc

        spec = MiniDiscSpec(**dataset_cfg.build)
        return ensure_mini_disc(Path(dataset_cfg.root).expanduser() / spec.name(), spec)
    if dataset_cfg.kind == "disc21":
        if dataset_cfg.root in (None, "", "???"):
            raise ValueError("dataset=disc21 needs the download folder: add dataset.root=/path/to/DISC21")
        root = Path(dataset_cfg.root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"dataset.root={str(root)!r} is not a folder.\n{_help(dataset_cfg, root)}")
        return root
    raise ValueError(f"dataset.kind={dataset_cfg.kind!r} is unknown; use mini_disc or disc21.")


def _help(dataset_cfg, root: Path) -> str:
    dirs = {
        "query": dataset_cfg.query_dir,
        "reference": dataset_cfg.reference_dir,
        "training": dataset_cfg.training_dir,
    }
    return layout_help(root, dirs, dataset_cfg.ground_truth)


def load_disc(dataset_cfg) -> DiscData:
    """Records of every split plus the ground truth, restricted to the configured validation subset."""
    root = resolve_root(dataset_cfg)
    help_text = _help(dataset_cfg, root)
    gt_path = root / dataset_cfg.ground_truth
    if not gt_path.is_file():
        raise FileNotFoundError(f"Ground-truth file {gt_path} is missing.\n{help_text}")
    training = list_split(root, dataset_cfg.training_dir, "training", help_text=help_text)
    queries = list_split(root, dataset_cfg.query_dir, "query", help_text=help_text)
    references = list_split(root, dataset_cfg.reference_dir, "reference", help_text=help_text)
    gt = read_ground_truth(gt_path)
    val = dataset_cfg.validation
    queries, references, gt = select_validation(
        queries,
        references,
        gt,
        max_queries=val.max_queries,
        max_references=val.max_references,
        seed=val.seed,
        gt_path=gt_path,
    )
    if dataset_cfg.get("training_every"):  # every k-th training image (VisionForce: every 10th, RECIPES §4)
        training = training[:: int(dataset_cfg.training_every)]
    if dataset_cfg.get("max_training"):
        training = training[: int(dataset_cfg.max_training)]
    return DiscData(root, training, queries, references, gt)


def select_validation(
    queries: list[ImageRecord],
    references: list[ImageRecord],
    gt: GroundTruth,
    *,
    max_queries: int | None,
    max_references: int | None,
    seed: int,
    gt_path: Path,
) -> tuple[list[ImageRecord], list[ImageRecord], GroundTruth]:
    """Keep the queries listed in the ground truth (optionally a random subset) and the references they
    match, topped up with random other references up to `max_references`."""
    query_by_id = {r.id: r for r in queries}
    reference_by_id = {r.id: r for r in references}
    missing = [q for q in gt.query_ids if q not in query_by_id]
    if missing:
        raise FileNotFoundError(
            f"{gt_path} lists {len(missing)} queries without an image (e.g. {missing[0]}). "
            f"Point dataset.query_dir at the folder holding them, or use the ground truth of your query set."
        )
    missing_refs = sorted({r for r in gt.matches.values() if r not in reference_by_id})
    if missing_refs:
        raise FileNotFoundError(
            f"{gt_path} matches {len(missing_refs)} references that have no image (e.g. {missing_refs[0]}). "
            f"Check dataset.reference_dir."
        )
    rng = np.random.default_rng(seed)
    query_ids = list(gt.query_ids)
    if max_queries and max_queries < len(query_ids):
        keep = set(rng.choice(len(query_ids), size=int(max_queries), replace=False).tolist())
        query_ids = [q for i, q in enumerate(query_ids) if i in keep]
    matches = {q: gt.matches[q] for q in query_ids if q in gt.matches}
    needed = sorted(set(matches.values()))
    needed_set = set(needed)
    others = [r.id for r in references if r.id not in needed_set]
    if max_references and max_references < len(references):
        n_extra = max(0, int(max_references) - len(needed))
        others = sorted(rng.choice(others, size=min(n_extra, len(others)), replace=False).tolist())
    reference_ids = sorted(needed + others)
    subset_gt = GroundTruth.from_pairs(query_ids, matches)
    return [query_by_id[q] for q in sorted(query_ids)], [reference_by_id[r] for r in reference_ids], subset_gt


def hold_out_training_pairs(
    data: DiscData, fraction: float, seed: int
) -> tuple[list[tuple[ImageRecord, ImageRecord]], DiscData]:
    """Move `fraction` of the matched validation queries into (query, reference) training pairs (lyakaap's
    stage 4 fine-tunes on ground-truth pairs, RECIPES §2.2) and drop those queries from validation, so that
    the validation µAP is never measured on pairs the model was trained on."""
    if not 0 < fraction < 1:
        raise ValueError(f"data.gt_pairs.train_fraction must be in (0, 1), got {fraction}")
    matched = sorted(data.ground_truth.matches)
    if len(matched) < 2:
        raise ValueError("data.gt_pairs needs at least two matched queries in the dataset's ground truth")
    rng = np.random.default_rng(seed)
    n_train = min(len(matched) - 1, max(1, int(round(fraction * len(matched)))))
    train_ids = set(rng.choice(matched, size=n_train, replace=False).tolist())
    query_by_id = {r.id: r for r in data.queries}
    reference_by_id = {r.id: r for r in data.references}
    pairs = [(query_by_id[q], reference_by_id[data.ground_truth.matches[q]]) for q in sorted(train_ids)]
    kept_set = set(data.ground_truth.query_ids) - train_ids
    gt = data.ground_truth.restricted(kept_set)
    queries = [r for r in data.queries if r.id in kept_set]
    return pairs, DiscData(data.root, data.training, queries, data.references, gt)


def load_training_pairs(data: DiscData, ground_truth: str, query_dir: str) -> list[tuple[ImageRecord, ImageRecord]]:
    """(query, reference) training pairs from a separate ground-truth CSV (e.g. DISC21's phase-1 public GT
    while validating on other queries); queries are looked up in `query_dir` (glob under the dataset root),
    references among the dataset's references."""
    path = data.root / ground_truth
    if not path.is_file():
        raise FileNotFoundError(f"data.gt_pairs.ground_truth={ground_truth!r}: {path} does not exist")
    gt = read_ground_truth(path)
    queries = {
        r.id: r for r in list_split(data.root, query_dir, "query", help_text=f"(data.gt_pairs.query_dir={query_dir!r})")
    }
    references = {r.id: r for r in data.references}
    pairs = []
    for q, r in sorted(gt.matches.items()):
        if q not in queries:
            raise FileNotFoundError(f"{path}: query {q} has no image in data.gt_pairs.query_dir={query_dir!r}")
        if r not in references:
            raise FileNotFoundError(
                f"{path}: reference {r} of query {q} is not among the dataset's references "
                f"(check dataset.reference_dir and dataset.validation.max_references)"
            )
        pairs.append((queries[q], references[r]))
    if not pairs:
        raise ValueError(f"{path} has no matched (query, reference) pair")
    return pairs


def load_extra_classes(node, seed: int = 0) -> list[ImageRecord]:
    """`data.extra_classes` = {root, count}: `count` images of the folder `root` (searched recursively), each an
    extra instance class after the training images (S-square added ImageNet images as classes, RECIPES §3.1).
    Which ones: a permutation of the sorted file list drawn from `seed` (their own list and order are a pickle
    not in their repository; source silent), so that a drip stage's first k come from all over the folder
    (ImageNet's is sorted by class). count 0 (or no node) = none."""
    count = int((node or {}).get("count") or 0)
    if count < 0:
        raise ValueError(f"data.extra_classes.count must be >= 0, got {count}")
    if count == 0:
        return []
    root = node.get("root")
    if root in (None, "", "???"):
        raise ValueError(
            f"data.extra_classes.count={count} needs the folder of images: add "
            f"data.extra_classes.root=/path/to/images (e.g. ImageNet's train folder), or "
            f"data.extra_classes.count=0 to train without extra classes"
        )
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"data.extra_classes.root={str(folder)!r} is not a folder")
    images, others, broken = scan_files(sorted(folder.rglob("*")))
    warn_unused(folder, others, broken, log)
    if len(images) < count:
        raise ValueError(
            f"data.extra_classes.root={str(folder)!r} holds {len(images)} images, fewer than "
            f"data.extra_classes.count={count}: point it at a larger folder or lower the count"
        )
    chosen = np.random.default_rng(seed).permutation(len(images))[:count]
    return [ImageRecord(f"X{int(i):07d}", "extra", images[int(i)]) for i in chosen]
