"""S-square's "drip" training for ArcFace (RECIPES §3.1): the number of classes grows in stages and each new
class weight starts at the mean embedding of its image (one clean view + augmented views)."""

from __future__ import annotations

import contextlib
import logging

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader

from isc.data.datasets import TrainingViews, collate_skipping
from isc.distributed import all_reduce_sum, gather_uneven, is_distributed

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
    """`stages`: list of {classes, epoch, loss_below}; `classes` is a count, a fraction (float in (0, 1]) of
    all classes, or null for all of them. Stage 0 is active from the start; stage k > 0 starts
    after a training epoch whose mean loss is below `loss_below`, or from epoch `epoch` on (either may be
    null). The stage lives in the loss's `stage` buffer (checkpointed);
    the data module only samples images of active classes."""

    def __init__(self, loss, stages: list[dict], augmented_views: int = 4, batch_size: int = 64):
        if not stages:
            raise ValueError("loss.callbacks.drip.stages needs at least one stage")
        self.loss = loss
        self.stages = [self._stage(i, s) for i, s in enumerate(stages)]
        sizes = [s["classes"] for s in self.stages]
        if sizes != sorted(sizes) or len(set(sizes)) != len(sizes):
            raise ValueError(f"drip stage class counts must increase, got {sizes}")
        if augmented_views < 1:
            raise ValueError(f"drip augmented_views must be >= 1, got {augmented_views}")
        self.augmented_views, self.batch_size = augmented_views, batch_size
        self._loss_sum = self._batches = 0.0

    def _stage(self, index: int, stage: dict) -> dict:
        unknown = set(stage) - {"classes", "epoch", "loss_below"}
        if unknown:
            raise ValueError(f"drip stage {index}: unknown keys {sorted(unknown)} (use classes, epoch, loss_below)")
        classes = stage.get("classes")
        classes = self.loss.num_classes if classes is None else classes  # 0 is an error below, not "all"
        if isinstance(classes, float):  # a fraction of all classes
            if not 0 < classes <= 1:
                raise ValueError(f"drip stage {index}: classes={classes} must be an int count or a fraction in (0, 1]")
            classes = max(1, round(classes * self.loss.num_classes))
        if not 1 <= classes <= self.loss.num_classes:
            raise ValueError(f"drip stage {index}: classes={classes} not in [1, {self.loss.num_classes}]")
        if index and stage.get("epoch") is None and stage.get("loss_below") is None:
            raise ValueError(f"drip stage {index} needs a trigger: epoch and/or loss_below")
        return {"classes": int(classes), "epoch": stage.get("epoch"), "loss_below": stage.get("loss_below")}

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            datamodule = trainer.datamodule
            if datamodule.train_pairs is not None:
                raise ValueError("ArcFace drip training classifies training images: set data.gt_pairs.enabled=false")
            # read when an epoch's sampler starts, which may precede on_train_start (worker prefetch); a resumed
            # run restores the loss buffers before any loader is iterated
            datamodule.class_limit = lambda: int(self.loss.active_classes)
            if int(self.loss.stage) < 0:
                self.loss.active_classes.fill_(self.stages[0]["classes"])

    def on_train_start(self, trainer, pl_module) -> None:
        if int(self.loss.stage) < 0:  # a fresh run (a resumed one restores stage and weights)
            self._enter(trainer, pl_module, 0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if outputs is not None:
            self._loss_sum = self._loss_sum + outputs["loss"].detach().double()  # on the device: no sync per step
            self._batches += 1

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        loss_sum = torch.as_tensor(self._loss_sum, dtype=torch.float64, device=pl_module.device)
        totals = all_reduce_sum(torch.stack([loss_sum, torch.tensor(float(self._batches), dtype=torch.float64,
                                                                      device=pl_module.device)]))
        self._loss_sum = self._batches = 0.0
        mean_loss = float(totals[0] / totals[1]) if totals[1] else float("inf")
        current = int(self.loss.stage)
        if current + 1 >= len(self.stages):
            return
        upcoming = self.stages[current + 1]
        next_epoch = trainer.current_epoch + 1
        by_epoch = upcoming["epoch"] is not None and next_epoch >= upcoming["epoch"]
        by_loss = upcoming["loss_below"] is not None and mean_loss < upcoming["loss_below"]
        if by_epoch or by_loss:
            log.info("ArcFace drip: stage %d (%d classes) after epoch %d, mean loss %.3f",
                     current + 1, upcoming["classes"], trainer.current_epoch, mean_loss)
            self._enter(trainer, pl_module, current + 1)

    @torch.no_grad()
    def _enter(self, trainer, pl_module, stage: int) -> None:
        start = 0 if stage == 0 else self.stages[stage - 1]["classes"]
        end = self.stages[stage]["classes"]
        centres = self.class_centres(trainer.datamodule, pl_module, start, end)
        self.loss.set_classes(start, centres)
        self.loss.stage.fill_(stage)

    def class_centres(self, datamodule, pl_module, start: int, end: int) -> torch.Tensor:
        """Mean embedding (clean + `augmented_views` training augmentations) of training images start…end−1,
        with BatchNorm on batch statistics as in training (see `batch_statistics`); under DDP each rank embeds a contiguous share and the shares are gathered in rank order. A class whose
        image is unreadable keeps its current weight."""
        rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if is_distributed() else (0, 1)
        bounds = [start + (end - start) * r // world for r in range(world + 1)]
        records = datamodule.data.training[bounds[rank]: bounds[rank + 1]]
        train_views = datamodule.train_transform
        hard = train_views[-1] if isinstance(train_views, (tuple, list)) else train_views
        views = (datamodule.plain_transform, *([hard] * self.augmented_views))
        dataset = TrainingViews(records, views, n_views=len(views), draft_size=datamodule.draft_size)
        loader = DataLoader(dataset, batch_size=self.batch_size, num_workers=datamodule.num_workers,
                            collate_fn=collate_skipping)
        local = self.loss.weight[bounds[rank]: bounds[rank + 1]].detach().clone()
        with batch_statistics(pl_module.model) as model:
            for batch in loader:
                if "views" not in batch:
                    continue
                b, v = batch["views"].shape[:2]
                embeddings = model(batch["views"].flatten(0, 1).to(pl_module.device)).view(b, v, -1)
                local[batch["label"].to(local.device)] = embeddings.mean(dim=1).to(local)
        return gather_uneven(local)
