"""ArcFace instance classification (S-square, RECIPES §3.1): every training image is its own class.

The class-weight matrix is allocated for `num_classes` up front; only the first `active_classes` rows take
part ("drip" training grows that number in stages, see isc_research.callbacks.drip). The stage and the active count are
buffers, so they are saved in checkpoints.

`view_weights` weights the views of each image (rows come image by image, views in order; S-square's policy
gives (clean reference view, query view)): S-square trained on the query view only ([0, 1]; do_ref_trn=False
in 7 of its 8 models); `mixed_every` k with `mixed_weights` uses those weights in epochs 0, k, 2k, … instead
(sjy_test5: every 5th epoch both views at 0.5, RECIPES §3.1). null = every view counts equally.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from isc_research.distributed import global_mean
from isc_research.losses.labels import single_labels
from isc_research.precision import at_least_float32, float32_loss


def arcface_logits(cosine: torch.Tensor, labels: torch.Tensor, scale: float, margin: float) -> torch.Tensor:
    """s·cos θ_j for the other classes and s·cos(θ_y + m) for the true class; where θ_y + m would pass π the
    usual monotonic fallback cos θ_y − m·sin m is used (insightface's `easy_margin=False`). Computed in float32:
    CUDA autocast runs `pow` in float32 while `cosine` may be half, and `scatter` needs one dtype."""
    cosine = at_least_float32(cosine)
    target = cosine.gather(1, labels[:, None])
    sine = (1 - target.pow(2)).clamp(min=0).sqrt()
    with_margin = target * math.cos(margin) - sine * math.sin(margin)
    with_margin = torch.where(target > math.cos(math.pi - margin), with_margin, target - margin * math.sin(margin))
    return scale * cosine.scatter(1, labels[:, None], with_margin)


class ArcFaceLoss(nn.Module):
    """Additive angular margin softmax over the active classes. `weight` is excluded from weight decay
    (S-square: "no class-weight decay", RECIPES §3.1)."""

    no_decay_parameters = ("weight",)

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        scale: float = 40.0,
        margin: float = 0.4,
        initial_classes: int | None = None,
        view_weights: list[float] | None = None,
        mixed_every: int | None = None,
        mixed_weights: list[float] | None = None,
    ):
        super().__init__()
        for name, weights in (("view_weights", view_weights), ("mixed_weights", mixed_weights)):
            if weights is not None and (min(weights) < 0 or not math.isclose(sum(weights), 1.0)):
                raise ValueError(f"loss.{name} must be >= 0 and sum to 1 (one weight per view), got {list(weights)}")
        if mixed_every is not None and (
            mixed_every < 1 or mixed_weights is None or view_weights is None or len(mixed_weights) != len(view_weights)
        ):
            raise ValueError("loss.mixed_every needs a positive period, view_weights and mixed_weights of one length")
        self.view_weights = None if view_weights is None else [float(w) for w in view_weights]
        self.mixed_every, self.mixed_weights = mixed_every, mixed_weights
        self.epoch = 0
        if not num_classes or num_classes < 1:
            raise ValueError(f"loss.num_classes must be >= 1 (null = one class per training image), got {num_classes}")
        if not 0 <= margin < math.pi / 2:
            raise ValueError(f"loss.margin is in radians and must be in [0, π/2), got {margin}")
        active = num_classes if initial_classes is None else int(initial_classes)
        if not 1 <= active <= num_classes:
            raise ValueError(f"loss.initial_classes={initial_classes} must be in [1, num_classes={num_classes}]")
        self.scale, self.margin = scale, margin
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.xavier_uniform_(self.weight)
        self.register_buffer("active_classes", torch.tensor(active, dtype=torch.long))
        self.register_buffer("stage", torch.tensor(-1, dtype=torch.long))  # -1: classes not set from embeddings yet

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0]

    def set_epoch(self, epoch: int) -> None:
        """Called by CopyDetectionModule at the start of every training epoch (for `mixed_every`)."""
        self.epoch = int(epoch)

    def current_view_weights(self) -> list[float] | None:
        if self.mixed_every and self.epoch % self.mixed_every == 0:
            return [float(w) for w in self.mixed_weights]
        return self.view_weights

    @float32_loss
    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        labels = single_labels(labels, "ArcFace")
        active = int(self.active_classes)
        if len(labels) and int(labels.max()) >= active:
            raise ValueError(
                f"label {int(labels.max())} is not among the {active} active ArcFace classes: every "
                f"training sample must be one of them (extra negatives and ground-truth pairs have no "
                f"class; set data.extra_negatives=0, data.gt_pairs.enabled=false)."
            )
        cosine = F.normalize(embeddings, dim=1) @ F.normalize(self.weight[:active], dim=1).T
        logits = arcface_logits(cosine.clamp(-1, 1), labels, self.scale, self.margin)
        per_row = F.cross_entropy(logits, labels, reduction="none")
        weights = self.current_view_weights()
        if weights is not None:  # Σ_v w_v · (mean loss of view v): rows image by image, views in order
            if len(per_row) % len(weights):
                raise ValueError(
                    f"loss.view_weights has {len(weights)} weights but the batch has {len(per_row)} rows "
                    f"(data.n_views must be {len(weights)})"
                )
            row_weight = per_row.new_tensor(weights).repeat(len(per_row) // len(weights)) * len(weights)
            per_row = per_row * row_weight
        loss = global_mean(per_row)
        with torch.no_grad():
            accuracy = (cosine.argmax(dim=1) == labels).float().mean()
        return {"loss": loss, "accuracy": accuracy, "active_classes": self.active_classes.float()}

    @torch.no_grad()
    def set_classes(self, start: int, centres: torch.Tensor) -> None:
        """Class weights `start … start+len(centres)−1` := the given embedding centres (L2-normalised); exactly
        the classes before `start+len(centres)` are active afterwards. `start` must not leave a gap."""
        end = start + len(centres)
        if start < 0 or end > self.num_classes or start > int(self.active_classes):
            raise ValueError(
                f"cannot set ArcFace classes {start}…{end - 1}: {int(self.active_classes)} active of {self.num_classes}"
            )
        self.weight[start:end] = F.normalize(centres.to(self.weight), dim=1)
        self.active_classes.fill_(end)
