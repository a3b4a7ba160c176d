"""S-square's "drip" training for ArcFace (RECIPES §3.1): the number of classes grows in stages and each new
class weight starts at the mean embedding of its image (one clean view + augmented views)."""

from __future__ import annotations

import contextlib
import inspect
import logging

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader

from isc_research.data.datasets import TrainingViews, collate_skipping
from isc_research.data.sampling import ClassStage
from isc_research.distributed import all_reduce_sum, gather_uneven, is_distributed

log = logging.getLogger(__name__)


@contextlib.contextmanager
def batch_statistics(model: nn.Module):
    """Evaluation mode except that BatchNorm layers normalise with the statistics of the batch, as in a
    training step, while their running statistics stay untouched. The training loss sees train-mode
    embeddings; before the first step (a fresh run's stage 0) the running statistics are still the
    initial (0, 1) and eval-mode embeddings of a random-init mobilenetv3_small_050 were all alike (cosine
    0.994) and unrelated to the train-mode ones (cosine 0.22 to every class centre, own or not)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in norms]
    was_training = model.training
    model.eval()
    for m in norms:
        m.train()
    try:
        yield model
    finally:
        for m, state in zip(norms, saved):
            m.load_state_dict(state)
        model.train(was_training)


class ArcFaceDrip(L.Callback):
    """S-square's drip training, one stage after the other in one run (RECIPES §3.1; their
    ensemble_training_scripts/*/README.md run each stage as a new trainer.py call).

    `stages`: list of {classes, extra_classes, intensity, batch_size, epoch, loss_below}.
    - `classes`: training images that are classes: a count, a fraction (float in (0, 1]) of the training
      images, or null for all of them; `extra_classes`: images of data.extra_classes (their ImageNet
      classes), a count or a fraction of them, null for all (default 0).
    - `intensity`: the augmentation intensity from this stage on (null: the previous stage's; stage 0: the
      policy's own); the data workers get it with every sample (isc_research.data.sampling.ClassStage).
    - `batch_size`: the per-process training batch in this stage (null: data.batch_size); the optimiser step
      holds batch_size × processes × accumulated micro-batches, as with data.batch_size.
    - Stage 0 is active from the start; stage k > 0 starts after a training epoch whose mean loss is below
      `loss_below`, or from epoch `epoch` on (either may be null).
    A stage's classes are positions: its training images, then its extra images. On entering a stage every
    class weight of the stage is set to the mean embedding of its image, as S-square rebuilt the whole W
    matrix from the previous stage's model for every class of the new stage (`--build-w-matrix`,
    `calc_w_matrix`); so a stage may even hold fewer training images than the one before (sjy_test10's
    last). The stage lives in the loss's `stage` buffer (checkpointed); the data module samples only the
    stage's classes. `final_stage_epochs`: stop the run after that many epochs in the last stage (S-square's
    ensemble epochs count from the start of the last stage's own run, e.g. sjy_test9's ep9 = 10 epochs);
    null = run to trainer.max_epochs.

    `restart_each_stage`: each stage runs as S-square's new trainer.py run did: an epoch is one pass over the
    stage's classes, and at the stage's first training step the optimiser and the LR scheduler are built
    afresh (Adam's moments empty, the learning rate back to optimizer.lr, ReduceLROnPlateau's best and bad-epoch
    count reset) by calling the module's configure_optimizers again. Off: the stages share one epoch length
    (all samples) and one optimiser and schedule. Stage batch sizes and restart_each_stage rebuild the training
    loader every epoch (trainer.reload_dataloaders_every_n_epochs=1): its length is read when it is built."""

    STAGE_KEYS = {"classes", "extra_classes", "intensity", "batch_size", "epoch", "loss_below"}

    def __init__(
        self,
        loss,
        stages: list[dict],
        augmented_views: int = 4,
        batch_size: int = 64,
        final_stage_epochs: int | None = None,
        restart_each_stage: bool = False,
    ):
        if not stages:
            raise ValueError("loss.callbacks.drip.stages needs at least one stage")
        for index, stage in enumerate(stages):
            unknown = set(stage) - self.STAGE_KEYS
            if unknown:
                raise ValueError(f"drip stage {index}: unknown keys {sorted(unknown)} (use {sorted(self.STAGE_KEYS)})")
            if index and stage.get("epoch") is None and stage.get("loss_below") is None:
                raise ValueError(f"drip stage {index} needs a trigger: epoch and/or loss_below")
            intensity = stage.get("intensity")
            if intensity is not None and not 0.0 <= intensity <= 1.0:
                raise ValueError(f"drip stage {index}: intensity={intensity} must be in [0, 1]")
            stage_batch = stage.get("batch_size")
            if stage_batch is not None and (not isinstance(stage_batch, int) or stage_batch < 1):
                raise ValueError(
                    f"drip stage {index}: batch_size={stage_batch} must be a positive int or null "
                    f"(null: data.batch_size)"
                )
        if augmented_views < 1:
            raise ValueError(f"drip augmented_views must be >= 1, got {augmented_views}")
        if final_stage_epochs is not None and final_stage_epochs < 1:
            raise ValueError(f"drip final_stage_epochs must be >= 1 or null, got {final_stage_epochs}")
        self.final_stage_epochs = final_stage_epochs
        self.final_stage_start: int | None = None  # the first epoch of the last stage (checkpointed)
        self.restart_each_stage = restart_each_stage
        self.restart_pending = False  # a stage was entered; its first step builds a new optimiser (checkpointed)
        self.loss = loss
        self.configured = [dict(s) for s in stages]
        self.stages: list[ClassStage] = []
        self.triggers = [{"epoch": s.get("epoch"), "loss_below": s.get("loss_below")} for s in stages]
        self.augmented_views, self.batch_size = augmented_views, batch_size
        self._loss_sum = self._batches = 0.0

    def resolve_stages(self, n_training: int, n_extra: int = 0) -> list[ClassStage]:
        """The stages as counts of `n_training` training images and `n_extra` extra images."""
        stages, intensity = [], None
        for index, stage in enumerate(self.configured):
            classes = _count(stage.get("classes"), n_training, f"drip stage {index}: classes", minimum=0)
            extra = _count(
                stage.get("extra_classes", 0),
                n_extra,
                f"drip stage {index}: extra_classes",
                minimum=0,
                what="data.extra_classes images",
            )
            if classes + extra < 1:
                raise ValueError(
                    f"drip stage {index}: classes={stage.get('classes')} and extra_classes="
                    f"{stage.get('extra_classes', 0)} leave no class"
                )
            if classes + extra > self.loss.num_classes:
                raise ValueError(
                    f"drip stage {index}: {classes + extra} classes, more than loss.num_classes={self.loss.num_classes}"
                )
            intensity = stage["intensity"] if stage.get("intensity") is not None else intensity
            stages.append(ClassStage(classes, extra, intensity, stage.get("batch_size"), self.restart_each_stage))
        self.stages = stages
        return stages

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            datamodule = trainer.datamodule
            if datamodule.train_pairs is not None:
                raise ValueError("ArcFace drip training classifies training images: set data.gt_pairs.enabled=false")
            self.resolve_stages(len(datamodule.data.training), len(datamodule.extra_classes))
            if any(s.intensity is not None for s in self.stages):
                accepts_intensity(datamodule.policy)
            # read when an epoch's sampler starts, which may precede on_train_start (worker prefetch); a resumed
            # run restores the loss buffers before any loader is iterated
            datamodule.class_stage = lambda: self.stages[max(int(self.loss.stage), 0)]
            if int(self.loss.stage) < 0:
                self.loss.active_classes.fill_(self.stages[0].size)
            if self.restart_each_stage or any(s.batch_size for s in self.stages):
                # public Lightning switch: the loader (its batch size and length) is rebuilt at every epoch start,
                # after the previous epoch's end may have entered a stage; the order stays (seed, epoch)'s
                trainer.reload_dataloaders_every_n_epochs = 1

    def state_dict(self) -> dict:
        return {"final_stage_start": self.final_stage_start, "restart_pending": self.restart_pending}

    def load_state_dict(self, state_dict: dict) -> None:
        self.final_stage_start = state_dict.get("final_stage_start")
        self.restart_pending = state_dict.get("restart_pending", False)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.restart_pending:  # the stage's first step, as the first step of a new trainer.py run
            trainer.strategy.setup_optimizers(trainer)  # configure_optimizers again: fresh optimiser and scheduler
            self.restart_pending = False

    def on_train_start(self, trainer, pl_module) -> None:
        if int(self.loss.stage) < 0:  # a fresh run (a resumed one restores stage and weights)
            self._enter(trainer, pl_module, 0)
            if len(self.stages) == 1:
                self.final_stage_start = trainer.current_epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if outputs is not None:
            self._loss_sum = self._loss_sum + outputs["loss"].detach().double()  # on the device: no sync per step
            self._batches += 1

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        loss_sum = torch.as_tensor(self._loss_sum, dtype=torch.float64, device=pl_module.device)
        totals = all_reduce_sum(
            torch.stack([loss_sum, torch.tensor(float(self._batches), dtype=torch.float64, device=pl_module.device)])
        )
        self._loss_sum = self._batches = 0.0
        mean_loss = float(totals[0] / totals[1]) if totals[1] else float("inf")
        current = int(self.loss.stage)
        if current + 1 >= len(self.stages):
            self._stop_after_final_stage(trainer)
            return
        trigger = self.triggers[current + 1]
        next_epoch = trainer.current_epoch + 1
        by_epoch = trigger["epoch"] is not None and next_epoch >= trigger["epoch"]
        by_loss = trigger["loss_below"] is not None and mean_loss < trigger["loss_below"]
        if by_epoch or by_loss:
            upcoming = self.stages[current + 1]
            log.info(
                "ArcFace drip: stage %d (%d training + %d extra classes, intensity %s) after epoch %d, mean loss %.3f",
                current + 1,
                upcoming.classes,
                upcoming.extra,
                upcoming.intensity,
                trainer.current_epoch,
                mean_loss,
            )
            self._enter(trainer, pl_module, current + 1)
            self.restart_pending = self.restart_each_stage
            if current + 2 == len(self.stages):
                self.final_stage_start = trainer.current_epoch + 1

    def _stop_after_final_stage(self, trainer) -> None:
        if self.final_stage_epochs is None or self.final_stage_start is None:
            return
        if trainer.current_epoch + 1 - self.final_stage_start >= self.final_stage_epochs:
            log.info(
                "ArcFace drip: %d epochs of the last stage done (epochs %d–%d): stopping",
                self.final_stage_epochs,
                self.final_stage_start,
                trainer.current_epoch,
            )
            trainer.should_stop = True

    @torch.no_grad()
    def _enter(self, trainer, pl_module, stage: int) -> None:
        datamodule, current = trainer.datamodule, self.stages[stage]
        records = datamodule.data.training[: current.classes] + datamodule.extra_classes[: current.extra]
        self.loss.set_classes(0, self.class_centres(datamodule, pl_module, records, current.intensity))
        self.loss.stage.fill_(stage)

    def class_centres(self, datamodule, pl_module, records, intensity: float | None = None) -> torch.Tensor:
        """Mean embedding (clean + `augmented_views` training augmentations at `intensity`, None = the policy's
        own) of each of `records`, with BatchNorm on batch statistics as in training (see `batch_statistics`);
        under DDP each rank embeds a contiguous share and the shares are gathered in rank order. A class whose
        image is unreadable keeps the weight its position had."""
        rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if is_distributed() else (0, 1)
        bounds = [len(records) * r // world for r in range(world + 1)]
        policy = datamodule.train_transform if intensity is None else datamodule.policy(intensity=intensity)
        hard = policy[-1] if isinstance(policy, (tuple, list)) else policy
        views = (datamodule.plain_transform, *([hard] * self.augmented_views))
        dataset = TrainingViews(
            records[bounds[rank] : bounds[rank + 1]], views, n_views=len(views), draft_size=datamodule.draft_size
        )
        loader = DataLoader(
            dataset, batch_size=self.batch_size, num_workers=datamodule.num_workers, collate_fn=collate_skipping
        )
        local = self.loss.weight[bounds[rank] : bounds[rank + 1]].detach().clone()
        with batch_statistics(pl_module.model) as model:
            for batch in loader:
                if "views" not in batch:
                    continue
                b, v = batch["views"].shape[:2]
                # descriptor(): the embedding the training step sees (no model.flip_average, which applies to
                # an eval-mode model like this one)
                embeddings = model.descriptor(batch["views"].flatten(0, 1).to(pl_module.device)).view(b, v, -1)
                local[batch["label"].to(local.device)] = embeddings.mean(dim=1).to(local)
        return gather_uneven(local)


def _count(value, total: int, name: str, minimum: int = 1, what: str = "training images") -> int:
    """A stage's count: null = all `total`, a float in (0, 1] = that fraction of them, an int = itself."""
    if value is None:
        return total
    if isinstance(value, float):
        if not 0 < value <= 1:
            raise ValueError(f"{name}={value} must be an int count or a fraction in (0, 1]")
        return max(1, round(value * total))
    if not minimum <= value <= total:
        raise ValueError(f"{name}={value} not in [{minimum}, {total}] (the {what} available)")
    return int(value)


def accepts_intensity(policy) -> None:
    """Stop unless `policy(intensity=…)` can rebuild the augmentation at another intensity."""
    func = getattr(policy, "func", policy)
    try:
        parameters = inspect.signature(func).parameters
    except (TypeError, ValueError):
        parameters = {}
    if policy is None or "intensity" not in parameters:
        raise ValueError(
            f"a drip stage sets an augmentation intensity, but the augmentation policy "
            f"({getattr(func, '__name__', func)}) has no intensity: use augmentation=s_square or remove "
            f"`intensity` from loss.callbacks.drip.stages"
        )
