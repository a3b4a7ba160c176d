"""`train_verifier(cfg)`: config → anchors, negatives and validation pairs → VerifierModule → Lightning trainer →
metrics (and the checkpoint, config.yaml and metrics.json in paths.output_dir)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import lightning as L
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from isc_research.augment import eval_transform
from isc_research.data.datamodule import SeededDataModule
from isc_research.data.datasets import collate_skipping
from isc_research.data.disc import DiscData, hold_out_training_pairs, load_disc
from isc_research.images import load_image
from isc_research.scaling import configure_threads
from isc_research.trainer import build_trainer
from isc_research.verifier.datasets import TrainingPairs, ValidationPairImages
from isc_research.verifier.inference import PairwiseVerifier
from isc_research.verifier.metrics import pair_metrics
from isc_research.verifier.mining import DescriptorIndex
from isc_research.verifier.model import load_backbone_weights
from isc_research.verifier.module import VerifierModule
from isc_research.verifier.pairs import Anchor, ValidationPairs, nearest_negatives, random_negatives, validation_pairs

log = logging.getLogger(__name__)


def query_view(augmentation):
    """The view that plays the query: the policy's last (hardest) view when it defines several (copy_edits:
    the copy-edit view), else the policy itself."""
    return augmentation[-1] if isinstance(augmentation, (tuple, list)) else augmentation


def build_anchors(data: DiscData, gt_pairs: list, index: DescriptorIndex | None, k: int) -> list[Anchor]:
    """One anchor per training image (query = augmented copy) and per held-out ground-truth pair; with a
    descriptor index, each gets its `k` nearest non-matching images of the pool (training + references)."""
    pool = data.training + data.references
    queries = [(t, t, True) for t in data.training] + [(q, r, False) for q, r in gt_pairs]
    if index is None:
        return [Anchor(q, r, augment) for q, r, augment in queries]
    position = {r.id: i for i, r in enumerate(pool)}
    excluded = [{position[r.id]} | ({position[q.id]} if q.id in position else set()) for q, r, _ in queries]
    nearest = nearest_negatives(index.matrix([q for q, _, _ in queries]), index.matrix(pool), excluded, k)
    return [Anchor(q, r, augment, tuple(pool[j] for j in rows)) for (q, r, augment), rows in zip(queries, nearest)]


def build_validation(data: DiscData, index: DescriptorIndex | None, n_negatives: int, seed: int) -> ValidationPairs:
    """Per validation query: its true reference (if any) and `n_negatives` other references, the nearest by
    descriptors (the candidates a retriever would propose) or random ones (seeded)."""
    gt = data.ground_truth
    position = {r.id: i for i, r in enumerate(data.references)}
    excluded = [{position[gt.matches[q.id]]} if q.id in gt.matches else set() for q in data.queries]
    if index is None:
        negatives = random_negatives(len(data.queries), len(data.references), excluded, n_negatives, seed)
    else:
        negatives = nearest_negatives(index.matrix(data.queries), index.matrix(data.references), excluded, n_negatives)
    return validation_pairs(data.queries, data.references, gt.matches, gt.query_ids, negatives)


def descriptor_baseline(pairs: ValidationPairs, index: DescriptorIndex) -> dict[str, float | None]:
    """AUC and µAP of the validation pairs scored by descriptor cosine similarity (the retriever alone)."""
    scores = np.einsum("nd,nd->n", index.matrix(pairs.queries), index.matrix(pairs.references))
    metrics = pair_metrics(pairs, scores)
    return {"auc": metrics["auc"], "uAP": metrics["uAP"]}


def score_checkpoint(path: str, pairs: ValidationPairs, cfg: DictConfig) -> dict[str, float | None]:
    """Load `path` as isc-match will (PairwiseVerifier.from_checkpoint), score the validation pairs from
    decoded images; pairs_per_s times resizing + model (not JPEG decoding)."""
    verifier = PairwiseVerifier.from_checkpoint(path, device=cfg.verifier_device, batch_size=cfg.data.eval_batch_size)
    images = {r.id: load_image(r.path, draft_size=cfg.data.draft_size) for r in pairs.queries + pairs.references}
    queries, references = [images[q.id] for q in pairs.queries], [images[r.id] for r in pairs.references]
    start = time.perf_counter()
    scores = verifier.score_pairs(queries, references)
    seconds = time.perf_counter() - start
    return {**pair_metrics(pairs, scores), "pairs_per_s": len(scores) / seconds}


def _prefixed(prefix: str, metrics: dict) -> dict:
    return {f"{prefix}/{k}": v for k, v in metrics.items()}


def train_verifier(cfg: DictConfig) -> dict:
    """Train as configured; return `init/*` (before training), `val/*` (after), `best/*` (the saved checkpoint,
    reloaded with PairwiseVerifier, with its scoring throughput), `descriptor/*` (the mining checkpoint's cosine
    scores of the same pairs) and `negatives` (how they were drawn). Writes config.yaml and metrics.json."""
    from isc_research.runs import recorded_run
    from isc_research.runs import start_run_folder

    output_dir = Path(cfg.paths.output_dir)
    start_run_folder(
        cfg, output_dir, "isc-train-verifier"
    )  # a finished or other run in the folder stops here (isc_research.runs)
    with recorded_run(output_dir, cfg):
        return _train_verifier(cfg, output_dir)


def _train_verifier(cfg: DictConfig, output_dir: Path) -> dict:
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True)
    configure_threads(cfg.get("torch_threads"), cfg.data.num_workers)

    data = load_disc(cfg.dataset)
    gt_pairs: list = []
    if cfg.pairs.gt_pairs.enabled:
        gt_pairs, data = hold_out_training_pairs(data, cfg.pairs.gt_pairs.train_fraction, cfg.seed)
    index = None
    if cfg.mining.ckpt_path:
        index = DescriptorIndex(
            cfg.mining.ckpt_path, cfg.mining.device, cfg.data.eval_batch_size, cfg.data.num_workers, cfg.data.draft_size
        )
    hard = index is not None and cfg.mining.hard_negatives
    negatives = f"hard: {cfg.mining.k} nearest by {cfg.mining.ckpt_path}" if hard else "random"
    log.info(
        "training negatives: %s; validation candidates: %s; anchors: %d training images + %d ground-truth pairs",
        negatives,
        "nearest references" if index else "random references",
        len(data.training),
        len(gt_pairs),
    )
    anchors = build_anchors(data, gt_pairs, index if hard else None, int(cfg.mining.k))
    validation = build_validation(data, index, int(cfg.pairs.val_negatives), cfg.seed)
    metrics: dict = {"negatives": negatives}
    if index is not None:
        metrics.update(_prefixed("descriptor", descriptor_baseline(validation, index)))

    size = int(cfg.data.pair_size)
    train_set = TrainingPairs(
        anchors,
        query_view(instantiate(cfg.augmentation)),
        eval_transform(size),
        data.training + data.references,
        int(cfg.pairs.negatives_per_positive),
        cfg.data.draft_size,
    )
    if len(train_set) < cfg.data.batch_size:
        raise ValueError(f"data.batch_size={cfg.data.batch_size} is larger than the {len(train_set)} training anchors")
    pairs = SeededDataModule(
        train_set,
        ValidationPairImages(validation, size, cfg.data.draft_size),
        cfg.data.batch_size,
        cfg.data.eval_batch_size,
        cfg.data.num_workers,
        cfg.seed,
        train_collate=collate_skipping,
    )

    model_args = {
        "backbone": cfg.backbone.name,
        "pretrained": cfg.backbone.pretrained,
        "weights_file": cfg.backbone.weights_file,
        "global_pool": cfg.model.global_pool,
        "backbone_kwargs": OmegaConf.to_container(cfg.backbone.kwargs, resolve=True)
        if cfg.backbone.get("kwargs")
        else {},
    }
    module = VerifierModule(
        model_args,
        size,
        instantiate(cfg.optimizer),
        instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        cfg.scheduler_interval,
        OmegaConf.to_container(cfg, resolve=True),
    )
    module.validation = validation
    if cfg.get("init_from"):
        load_backbone_weights(module.model, cfg.init_from)
        log.info("verifier backbone initialised from %s", cfg.init_from)

    trainer = build_trainer(cfg, output_dir)
    if cfg.validate_before_training and not cfg.get("ckpt_path"):
        trainer.validate(module, datamodule=pairs, verbose=False)
        metrics.update(_prefixed("init", module.last_metrics))
    trainer.fit(module, datamodule=pairs, ckpt_path=cfg.get("ckpt_path"))
    metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})
    if module.scored_at_step != trainer.global_step:  # check_val_every_n_epoch skipped the last epoch
        trainer.validate(module, datamodule=pairs, verbose=False)
    metrics.update(_prefixed("val", module.last_metrics))

    checkpoint = trainer.checkpoint_callback
    path = (checkpoint.best_model_path or checkpoint.last_model_path) if checkpoint is not None else ""
    if path:
        metrics["best/checkpoint"] = path
        metrics.update(_prefixed("best", score_checkpoint(path, validation, cfg)))
        log.info("verifier checkpoint: %s", path)
    else:
        log.warning("no ModelCheckpoint callback configured: no checkpoint written, no best/* metrics")
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    return metrics
