"""`train(cfg)`: config → objects → Lightning trainer → metrics (and files in the output folder)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from isc_research.augment import eval_transform
from isc_research.callbacks import RetrievalEvaluation
from isc_research.checkpoints import init_from_weights, load_lightning_checkpoint
from isc_research.config import check_required
from isc_research.data.datamodule import DiscDataModule
from isc_research.images import draft_floor
from isc_research.loggers import ResumableCSVLogger
from isc_research.metric import EVALUATION_METRICS
from isc_research.losses.build import build_loss
from isc_research.module import CopyDetectionModule
from isc_research.runs import start_run_folder
from isc_research.scaling import configure_threads, fit_to_hardware
from isc_research.trainer import build_trainer

log = logging.getLogger(__name__)


def build_datamodule(cfg: DictConfig) -> DiscDataModule:
    return DiscDataModule(
        dataset=cfg.dataset,
        train_transform=instantiate(cfg.augmentation),
        eval_transform=eval_transform(cfg.data.eval_size),
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.data.eval_batch_size,
        num_workers=cfg.data.num_workers,
        n_views=cfg.data.n_views,
        draft_size=draft_floor(cfg.data.draft_size, cfg.data.train_size, cfg.data.eval_size),
        skip_bad_eval_images=cfg.data.skip_bad_eval_images,
        extra_negatives=cfg.data.extra_negatives,
        gt_pairs=cfg.data.get("gt_pairs"),
        plain_transform=eval_transform(cfg.data.train_size),
        seed=cfg.seed,
        steps_per_epoch=cfg.data.get("steps_per_epoch"),
        first_anchor=(cfg.data.get("neighbour_batches") or {}).get("first_anchor"),
        extra_classes=cfg.data.get("extra_classes"),
        policy=instantiate(cfg.augmentation, _partial_=True),  # drip stages rebuild it at their intensity
        shared_augmentation_draws=cfg.data.shared_augmentation_draws,
    )


def model_arguments(cfg: DictConfig) -> dict:
    """DescriptorModel's arguments from the `backbone` group and the `model` block."""
    return {
        "backbone": cfg.backbone.name,
        "pretrained": cfg.backbone.pretrained,
        "weights_file": cfg.backbone.weights_file,
        "backbone_kwargs": OmegaConf.to_container(cfg.backbone.kwargs, resolve=True)
        if cfg.backbone.get("kwargs")
        else {},
        **OmegaConf.to_container(cfg.model, resolve=True),
    }


def build_module(cfg: DictConfig, loss: torch.nn.Module) -> CopyDetectionModule:
    return CopyDetectionModule(
        model=model_arguments(cfg),
        loss=loss,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        scheduler_interval=cfg.scheduler_interval,
        config=OmegaConf.to_container(cfg, resolve=True),
        batch_mix=instantiate(cfg.batch_mix) if cfg.get("batch_mix") else None,
    )


def resume_checkpoint(cfg: DictConfig, output_dir: Path) -> Path | None:
    """The checkpoint to continue from. `ckpt_path=last`: this run folder's checkpoints/last.ckpt, else the newest
    last.ckpt of the task's earlier runs (`paths.log_dir/task_name/runs/*`) made with the same result settings
    (isc_research.runs.result_settings; runs of other experiments are passed over, and named); `ckpt_path=<file>`: that
    file; null: this folder's last.ckpt if it exists (`resume: true`, the default), so that rerunning the same
    command into the same folder — a requeued SLURM job, `paths.output_dir=<folder>` — continues the run.
    Any checkpoint found is checked: it must be a readable isc-train checkpoint made with the same settings."""
    requested = cfg.get("ckpt_path")
    own = output_dir / "checkpoints" / "last.ckpt"
    if requested == "last":
        found = own if own.is_file() else _newest_matching_run(cfg, output_dir)
    elif requested:
        found = Path(requested).expanduser()
        if not found.is_file():
            raise FileNotFoundError(f"ckpt_path={requested!r} does not exist (ckpt_path=last finds the newest run's)")
    else:
        found = own if cfg.resume and own.is_file() else None
    if found is not None:
        check_resume_config(found, cfg)
    return found


def _newest_matching_run(cfg: DictConfig, output_dir: Path) -> Path:
    """The newest last.ckpt under paths.log_dir/task_name/runs whose run recorded the same result settings."""
    from isc_research.runs import differences, read_status

    runs = Path(cfg.paths.log_dir) / cfg.task_name / "runs"
    found = sorted(runs.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not found:
        raise FileNotFoundError(
            f"ckpt_path=last: no checkpoints/last.ckpt in {output_dir} nor in any run under "
            f"{runs}; give the checkpoint file, ckpt_path=<run>/checkpoints/last.ckpt"
        )
    passed_over = []
    for path in found:
        run = path.parents[1]
        status = read_status(run)
        settings = (status or {}).get("settings")
        if settings is None and (run / "config.yaml").is_file():
            settings = OmegaConf.load(run / "config.yaml")
        diff = differences(settings, cfg) if settings is not None else ["no recorded config"]
        if not diff:
            return path
        passed_over.append(f"{run.name} ({'; '.join(diff[:2])})")
    raise FileNotFoundError(
        f"ckpt_path=last: none of the {len(found)} runs under {runs} was made with this "
        f"configuration: {', '.join(passed_over[:3])}; give the checkpoint to continue explicitly, "
        "ckpt_path=<run>/checkpoints/last.ckpt, if it is the right one"
    )


def check_resume_config(path: Path, cfg: DictConfig) -> None:
    """Refuse to continue a checkpoint made with other result settings (see isc_research.runs.FREE_KEYS for what may
    differ: e.g. trainer.max_epochs, paths, logger, data.num_workers), except the keys the config declares in
    `resume_changes` (glob patterns): a recipe stage that continues the whole training state of the previous
    one with new values (S-square sjy_test5's 512-px second stage resumed the 384-px run, RECIPES §3.1)."""
    import fnmatch

    from isc_research.runs import differences

    recorded = (load_lightning_checkpoint(path).get("hyper_parameters") or {}).get("config")
    if not recorded:
        raise ValueError(
            f"ckpt_path={str(path)!r} records no run config (not written by isc-train); start from its "
            "weights with init_from= instead"
        )
    allowed = list(cfg.get("resume_changes") or [])
    diff = [
        d
        for d in differences(recorded, cfg, limit=10**9)
        if not any(fnmatch.fnmatch(d.split(": ", 1)[0], pattern) for pattern in allowed)
    ][:6]
    if diff:
        raise ValueError(
            f"{path} was made with other settings than this command ({'; '.join(diff)}); continuing it "
            "would mix two configurations. Give the same settings, start from its weights with "
            "init_from=<checkpoint> (a new run), or choose another run"
        )


def _last_good_checkpoint(output_dir: Path) -> str:
    last = output_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return "No checkpoint was written before it (the failure came in the first epoch)."
    epoch = torch.load(last, map_location="cpu", weights_only=False).get("epoch")
    return (
        f"The last good checkpoint is {last} (end of epoch {epoch}); lower the learning rate or clip gradients "
        f"(trainer.gradient_clip_val=1.0) and continue from it with ckpt_path={last}"
    )


def _floats(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def _evaluation_metrics(evaluation: RetrievalEvaluation, prefix: str) -> dict[str, float | None]:
    """The last validation's metrics, exactly as computed (recall_at_p90 is None if P90 is never reached)."""
    if evaluation.last_metrics is None:
        return {}
    values = evaluation.last_metrics.to_dict()
    return {f"{prefix}/{k}": values[k] for k in EVALUATION_METRICS}


def initialise_from(module: CopyDetectionModule, checkpoint: str | Path) -> None:
    """Load the model weights (backbone, pooling, neck) of an earlier isc-train checkpoint — the previous
    stage of a multi-stage recipe (e.g. lyakaap 256 → 384 → 512 px, RECIPES §2.2). Optimizer, scheduler and
    loss state (memory bank, ArcFace weights) start fresh; `ckpt_path=` resumes a run instead."""
    path = Path(checkpoint).expanduser()
    weights = init_from_weights(path, "model.")
    own = module.model.state_dict()
    mismatched = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in weights.items()
        if k in own and v.shape != own[k].shape
    ]
    missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    if mismatched or missing or unexpected:
        raise ValueError(
            f"init_from={str(path)!r} does not fit this model (backbone / model.* settings differ): "
            f"shape mismatches {mismatched[:5]}, missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    module.model.load_state_dict(weights)
    log.info("initialised the model from %s", path)


def neighbour_batches(
    cfg: DictConfig,
    module: CopyDetectionModule,
    datamodule: DiscDataModule,
    output_dir: Path,
    ckpt_path: Path | None = None,
):
    """The neighbour lists of `data.neighbour_batches` (batches of mutually similar training images, RECIPES §6):
    the given file; else the run's own neighbours.npy (a resumed run reads the lists it started with, also when
    `ckpt_path` is another folder's checkpoint); else computed now from the model as initialised (timm weights
    or init_from) and written to the run folder. Under DDP the first process computes them and the others wait
    for its file."""
    import time

    from lightning.pytorch.utilities import rank_zero_only

    from isc_research.data.neighbours import compute_neighbour_lists, load_neighbour_lists, save_neighbour_lists

    settings = cfg.data.neighbour_batches
    n_images = len(datamodule.data.training)
    batch = int(cfg.data.batch_size) * int(cfg.trainer.get("devices") or 1) * int(cfg.trainer.get("num_nodes") or 1)
    own = output_dir / "neighbours.npy"
    resumed = ckpt_path.parent.parent / "neighbours.npy" if ckpt_path is not None else None  # <run>/checkpoints/x.ckpt
    path = (
        Path(settings.neighbours).expanduser()
        if settings.get("neighbours")
        else resumed
        if resumed is not None and resumed.is_file()
        else own
    )
    if path == own and not own.is_file():
        if rank_zero_only.rank == 0:
            gpu = cfg.trainer.get("accelerator") != "cpu" and torch.cuda.is_available()
            compute_neighbour_lists(
                module.model,
                datamodule.data.training,
                cfg.data.eval_size,
                int(settings.k),
                output_dir,
                device="cuda" if gpu else "cpu",
                batch_size=cfg.data.eval_batch_size,
                num_workers=cfg.data.num_workers,
                draft_size=draft_floor(cfg.data.draft_size, cfg.data.eval_size),
            )
        else:
            waited = 0
            while not own.is_file():  # the first process is computing them
                if waited >= settings.wait_s:
                    raise TimeoutError(
                        f"process {rank_zero_only.rank}: {own} did not appear within "
                        f"data.neighbour_batches.wait_s={settings.wait_s} s; did the first process fail?"
                    )
                time.sleep(5)
                waited += 5
    lists = load_neighbour_lists(path, n_images, batch)
    if path == resumed and not own.is_file() and rank_zero_only.rank == 0:
        save_neighbour_lists(lists, own)  # this folder's own copy, for its next resume
    return lists


def check_loader_settings(cfg: DictConfig) -> None:
    """data.batch_size and co. must be integers in range; else an error naming the key (not a DataLoader traceback)."""
    for key, low in (("batch_size", 1), ("eval_batch_size", 1), ("num_workers", 0), ("n_views", 2)):
        value = cfg.data.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"data.{key} must be an integer >= {low}, got {value!r}")


class SkippedImageLimit(L.Callback):
    """Stop the run when no training image of an epoch was readable, or more than `max_fraction` of them were
    skipped as unreadable: a run on a few readable images is not the configured experiment."""

    def __init__(self, max_fraction: float):
        if not 0 <= float(max_fraction) <= 1:
            raise ValueError(f"data.max_skipped_fraction must be in [0, 1], got {max_fraction!r}")
        self.max_fraction = float(max_fraction)
        self.skipped = self.total = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.skipped = self.total = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        kept = len(batch["views"]) if "views" in batch else 0
        self.skipped += int(batch.get("skipped", 0))
        self.total += kept + int(batch.get("skipped", 0))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        counts = trainer.strategy.reduce(
            torch.tensor([self.skipped, self.total], dtype=torch.float64, device=pl_module.device), reduce_op="sum"
        )
        skipped, total = (int(x) for x in counts.tolist())
        if total and skipped == total:
            raise RuntimeError(
                f"no training image was readable in epoch {trainer.current_epoch} ({skipped} skipped); "
                "check dataset.training_dir (the warnings above name the files)"
            )
        if total and skipped / total > self.max_fraction:
            raise RuntimeError(
                f"{skipped} of {total} training images ({skipped / total:.1%}) were unreadable in epoch "
                f"{trainer.current_epoch}, more than data.max_skipped_fraction={self.max_fraction}; "
                "repair or remove them (the warnings above name them), or raise the limit"
            )


class ValidateLastEpoch(L.Callback):
    """Validate after the last epoch even when trainer.check_val_every_n_epoch skips it, inside `fit`, so that the
    final weights reach ModelCheckpoint's selection (best/uAP is the best of every validation). A run ended by
    max_steps in the middle of an epoch is validated after `fit` instead (val/* only)."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        every = trainer.check_val_every_n_epoch
        last = (
            trainer.max_epochs is not None
            and trainer.max_epochs > 0
            and trainer.current_epoch == trainer.max_epochs - 1
        )
        if last and every is not None and every > 1:
            trainer.check_val_every_n_epoch = 1  # read by Lightning's epoch loop at each epoch's end


def train(cfg: DictConfig) -> dict[str, float]:
    """Train as configured and return the metrics: `init/*` (before training, if enabled), `val/*` after the
    last epoch, `best/uAP` of the monitored checkpoint. Writes config.yaml and metrics.json to paths.output_dir,
    and the run's state to run_status.json (isc_research.runs). SIGTERM: the run stops after the current step with exit
    status 143 (Lightning alone would exit 0); checkpoints/last.ckpt is the last epoch's end, to resume from."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from isc_research.runs import Stopped, recorded_run

    check_required(cfg)  # an unset mandatory value stops the run before any work
    fit_to_hardware(cfg)  # data.num_workers: auto, trainer.total_batch → accumulate_grad_batches
    output_dir = Path(cfg.paths.output_dir)
    check_loader_settings(cfg)
    start_run_folder(cfg, output_dir)
    ckpt_path = resume_checkpoint(cfg, output_dir)  # before any work: a wrong or damaged checkpoint stops here
    with recorded_run(output_dir, cfg):
        try:
            return _train(cfg, output_dir, ckpt_path)
        except SIGTERMException:
            last = output_dir / "checkpoints" / "last.ckpt"
            resume = (
                f"rerun the same command to resume from {last}" if last.is_file() else "no checkpoint was written yet"
            )
            log.error("isc-train: stopped by SIGTERM; %s", resume)
            raise Stopped("SIGTERM", 143) from None


def _train(cfg: DictConfig, output_dir: Path, ckpt_path: Path | None) -> dict[str, float]:
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True)
    configure_threads(cfg.get("torch_threads"), cfg.data.num_workers)

    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")  # the loss may need the number of training classes
    loss, loss_callbacks = build_loss(cfg.loss, num_classes=datamodule.num_train_labels)
    module = build_module(cfg, loss)
    if cfg.get("init_from"):
        initialise_from(module, cfg.init_from)
    if (cfg.data.get("neighbour_batches") or {}).get("enabled"):
        datamodule.neighbours = neighbour_batches(cfg, module, datamodule, output_dir, ckpt_path)
    trainer = build_trainer(
        cfg,
        output_dir,
        [*loss_callbacks, ValidateLastEpoch(), SkippedImageLimit(cfg.data.max_skipped_fraction)],
    )
    evaluation = next((c for c in trainer.callbacks if isinstance(c, RetrievalEvaluation)), None)
    if evaluation is None:
        log.warning("no RetrievalEvaluation callback configured: no val/* metrics will be computed")

    if ckpt_path is not None:
        log.info("resuming from %s (optimizer, scheduler, loss state and data order restored)", ckpt_path)
        step = load_lightning_checkpoint(ckpt_path).get("global_step")
        for logger in trainer.loggers:
            if isinstance(logger, ResumableCSVLogger):
                logger.keep_before_step = step  # keep the crashed part's rows up to the checkpoint
    metrics: dict[str, float] = {}
    if evaluation is not None and cfg.validate_before_training and ckpt_path is None:
        trainer.validate(module, datamodule=datamodule, verbose=False)
        metrics.update(_evaluation_metrics(evaluation, "init"))
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except FloatingPointError as error:
        raise FloatingPointError(f"{error}; training stopped. {_last_good_checkpoint(output_dir)}") from error
    metrics.update(_floats(trainer.callback_metrics))
    if evaluation is not None and evaluation.scored_at_step != trainer.global_step:
        # check_val_every_n_epoch skipped the last epoch: score the final weights, so val/* is "after training"
        trainer.validate(module, datamodule=datamodule, verbose=False)
    if evaluation is not None:
        metrics.update(_evaluation_metrics(evaluation, "val"))  # full precision, and null-aware
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.best_model_score is not None:
        metrics["best/uAP"] = float(checkpoint.best_model_score)
        log.info("best checkpoint: %s", checkpoint.best_model_path)
    if evaluation is not None and cfg.dataset.get("compare_hashes") and trainer.is_global_zero:
        from isc_research.hash_comparison import (
            hash_metrics,
        )  # the hashes on the same validation queries, cached per build

        metrics.update(
            hash_metrics(datamodule.data, list(cfg.dataset.compare_hashes), Path(cfg.paths.data_dir) / "hash_baselines")
        )
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    return metrics
