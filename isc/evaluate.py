"""Evaluate a checkpoint on a DISC-layout dataset: descriptors → candidates → metrics and files."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from tqdm import tqdm

from isc.augment import eval_transform
from isc.data.datasets import EvalImages, collate_skipping
from isc.data.disc import load_disc
from isc.data.records import ImageRecord
from isc.formats import DescriptorSubmission, write_descriptor_submission, write_predictions
from isc.metric import GroundTruth, evaluate
from isc.model import DescriptorModel
from isc.search import global_candidates, knn_candidates

log = logging.getLogger(__name__)


def load_checkpoint(path: str | Path) -> tuple[DescriptorModel, dict]:
    """The descriptor model of an isc-train checkpoint, and the run config stored in it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={str(path)!r} does not exist (isc-train writes <run>/checkpoints/*.ckpt).")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    hparams = checkpoint.get("hyper_parameters", {})
    if "model" not in hparams:
        raise ValueError(f"{path} is not an isc-train checkpoint: it has no hyper_parameters.model entry.")
    arguments = dict(hparams["model"], pretrained=False, weights_file=None)  # the weights come from the checkpoint
    model = DescriptorModel(**arguments)
    state = {k[len("model."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state)
    return model.eval(), hparams.get("config", {})


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def extract(
    model: DescriptorModel,
    records: Sequence[ImageRecord],
    size: int,
    *,
    batch_size: int = 128,
    num_workers: int = 0,
    device: torch.device = torch.device("cpu"),
    skip_bad_images: bool = False,
    draft_size: int | None = None,
    desc: str = "descriptors",
) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors of `records` (ids, float32 vectors); unreadable images raise, or are skipped and counted."""
    dataset = EvalImages(records, eval_transform(size), skip_bad_images, draft_size)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_skipping)
    model = model.to(device)
    vectors, indices, skipped = [], [], 0
    for batch in tqdm(loader, desc=desc, unit="batch"):
        skipped += batch["skipped"]
        if "image" in batch:
            vectors.append(model(batch["image"].to(device)).float().cpu().numpy())
            indices.append(batch["index"].numpy())
    if skipped:
        log.warning("%s: skipped %d unreadable images of %d", desc, skipped, len(records))
    index = np.concatenate(indices) if indices else np.zeros(0, dtype=np.int64)
    ids = np.array([records[i].id for i in index], dtype=object)
    return ids, (np.concatenate(vectors) if vectors else np.zeros((0, model.embedding_dim), np.float32))


def evaluate_checkpoint(cfg: DictConfig) -> dict:
    """Run isc-eval as configured; returns the metrics and writes metrics.json, predictions.csv and
    descriptors.h5 (the descriptor-track submission format) to paths.output_dir."""
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model, train_config = load_checkpoint(cfg.ckpt_path)
    size = cfg.eval.size or train_config.get("data", {}).get("eval_size")
    if not size:
        raise ValueError("eval.size is not set and the checkpoint does not record data.eval_size: pass eval.size=N")
    data = load_disc(cfg.dataset)
    device = resolve_device(cfg.eval.device)
    common = dict(batch_size=cfg.eval.batch_size, num_workers=cfg.eval.num_workers, device=device,
                  skip_bad_images=cfg.eval.skip_bad_images, draft_size=cfg.eval.draft_size)
    query_ids, queries = extract(model, data.queries, size, desc="queries", **common)
    reference_ids, references = extract(model, data.references, size, desc="references", **common)

    if queries.shape[1] <= 256:
        write_descriptor_submission(output_dir / "descriptors.h5",
                                    DescriptorSubmission(query_ids, queries, reference_ids, references))
    else:
        log.warning("descriptors have %d dims > 256: descriptors.h5 is not written (descriptor track limit)",
                    queries.shape[1])
    gt = data.ground_truth
    seen = set(query_ids)
    if len(seen) < len(gt.query_ids):  # skipped queries: score the rest, and say so
        log.warning("%d ground-truth queries have no descriptor and are left out", len(gt.query_ids) - len(seen))
        gt = GroundTruth.from_pairs([q for q in gt.query_ids if q in seen], {q: r for q, r in gt.matches.items() if q in seen})
    if cfg.eval.candidates == "global":
        predictions = global_candidates(queries, references, query_ids, reference_ids,
                                        num_results=cfg.eval.results_per_query * len(query_ids))
    else:
        predictions = knn_candidates(queries, references, query_ids, reference_ids, k=cfg.eval.k)
    write_predictions(output_dir / "predictions.csv", predictions)  # ≤ 500,000 rows, the official limit
    metrics = evaluate(gt, predictions).to_dict()
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
