"""The overlay detector network (torchvision detection models) and its Lightning module.

One foreground class: "pasted content" (VisionForce's YOLOv5 had two, overlay and emoji, RECIPES §4; only the
overlay box is used to replace queries, and the mini-DISC records only that one).
"""

from __future__ import annotations

from typing import Any, Callable

import lightning as L
import torch
from torchvision.models import detection as tvd

from isc_research.detect.boxes import box_recall
from isc_research.distributed import gather_objects
from isc_research.optim import optimization

__all__ = ["ARCHITECTURES", "DetectorModule", "build_detector"]

NUM_CLASSES = 2  # background + pasted content
# torchvision factories (their `weights` / `weights_backbone` take torchvision enum names, e.g. "DEFAULT",
# downloaded from the hub: for users with internet) and one light model built here for CPU training.
TORCHVISION_FACTORIES = (
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "ssdlite320_mobilenet_v3_large",
)
ARCHITECTURES = TORCHVISION_FACTORIES + ("fasterrcnn_mobilenet_v3_small_fpn",)


def build_detector(
    arch: str,
    *,
    weights: str | None = None,
    weights_backbone: str | None = None,
    min_size: int = 320,
    max_size: int = 640,
    box_score_thresh: float = 0.01,
    box_detections_per_img: int = 10,
    representation_size: int = 256,
) -> torch.nn.Module:
    """A torchvision detector with 2 classes. `weights`: torchvision's COCO weights (the box predictor is then
    replaced by a 2-class one); `weights_backbone`: ImageNet weights of the backbone. None = random init."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"detector.arch={arch!r} is unknown; choose one of {', '.join(ARCHITECTURES)}")
    if arch == "fasterrcnn_mobilenet_v3_small_fpn":
        return _fasterrcnn_small(
            weights_backbone, min_size, max_size, box_score_thresh, box_detections_per_img, representation_size
        )
    if weights is not None and arch.startswith("ssdlite"):
        raise ValueError(
            "weights for ssdlite320_mobilenet_v3_large: its 91-class head cannot be swapped here; "
            "use weights_backbone, or a fasterrcnn_* arch"
        )
    kwargs: dict[str, Any] = dict(
        weights=weights,
        weights_backbone=weights_backbone,
        box_score_thresh=box_score_thresh,
        box_detections_per_img=box_detections_per_img,
    )
    if arch.startswith("fasterrcnn"):
        kwargs.update(min_size=min_size, max_size=max_size)
    else:  # SSDlite: fixed 320 input; its score threshold has another name
        kwargs = dict(
            weights=weights,
            weights_backbone=weights_backbone,
            score_thresh=box_score_thresh,
            detections_per_img=box_detections_per_img,
        )
    if weights is None:
        return getattr(tvd, arch)(num_classes=NUM_CLASSES, **kwargs)
    model = getattr(tvd, arch)(**kwargs)  # 91 COCO classes; swap the class/box predictor
    in_features = model.roi_heads.box_predictor.cls_score.in_features
    model.roi_heads.box_predictor = tvd.faster_rcnn.FastRCNNPredictor(in_features, NUM_CLASSES)
    return model


def _fasterrcnn_small(
    weights_backbone, min_size, max_size, box_score_thresh, box_detections_per_img, representation_size
) -> torch.nn.Module:
    """Faster R-CNN on a MobileNetV3-Small FPN with a 256-d box head: ~6 M parameters instead of the 19 M of
    torchvision's MobileNetV3-Large model (a training step on 8 images at 160 px took ~3 s on one loaded CPU
    core instead of ~6 s). Proposal counts are cut to suit at most one pasted box per image (source silent)."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import mobilenet_backbone
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

    backbone = mobilenet_backbone(
        backbone_name="mobilenet_v3_small",
        weights=weights_backbone,
        fpn=True,
        trainable_layers=6 if weights_backbone is None else 3,
    )
    anchors = AnchorGenerator(((32, 64, 128, 256, 512),) * 3, ((0.5, 1.0, 2.0),) * 3)  # as torchvision's 320 model
    return tvd.FasterRCNN(
        backbone,
        rpn_anchor_generator=anchors,
        min_size=min_size,
        max_size=max_size,
        box_head=TwoMLPHead(backbone.out_channels * 7 * 7, representation_size),
        box_predictor=FastRCNNPredictor(representation_size, NUM_CLASSES),
        rpn_pre_nms_top_n_train=300,
        rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=150,
        rpn_post_nms_top_n_test=150,
        rpn_score_thresh=0.05,
        box_batch_size_per_image=64,
        box_score_thresh=box_score_thresh,
        box_detections_per_img=box_detections_per_img,
    )


def detections_of(output: dict) -> list[tuple[tuple[float, float, float, float], float]]:
    """torchvision's output dict of one image → [(box, confidence)] by decreasing confidence."""
    boxes, scores = output["boxes"].detach().cpu().tolist(), output["scores"].detach().cpu().tolist()
    return sorted(((tuple(b), float(s)) for b, s in zip(boxes, scores)), key=lambda d: -d[1])


class DetectorModule(L.LightningModule):
    """Trains a torchvision detector on (images, targets) batches; validation reports box recall at IoU ≥ 0.5
    among detections above `min_confidence` on labelled queries (val/box_recall), and the other rates of
    `isc_research.detect.boxes.box_recall`."""

    def __init__(
        self,
        model: dict,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable | None = None,
        scheduler_interval: str = "step",
        min_confidence: float = 0.5,
        iou: float = 0.5,
        config: dict | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(
            {"model": dict(model), "min_confidence": float(min_confidence), "iou": float(iou), "config": config or {}}
        )
        self.model = build_detector(**model)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.scheduler_interval = scheduler_interval
        self._seen: list = []  # (validation index, true box, detections) of this process's share

    def training_step(self, batch, batch_idx):
        images, targets = batch
        losses = self.model(images, targets)
        loss = sum(losses.values())
        self.log("train/loss", loss, prog_bar=True, batch_size=len(images))
        self.log("train/epoch_loss", loss.detach(), on_step=False, on_epoch=True, batch_size=len(images))
        for name, value in losses.items():
            self.log(f"train/{name}", value, batch_size=len(images))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._seen = []

    def validation_step(self, batch, batch_idx):
        images, targets = batch
        for target, output in zip(targets, self.model(images)):
            boxes = target["boxes"].tolist()
            self._seen.append((int(target["index"]), tuple(boxes[0]) if boxes else None, detections_of(output)))

    def on_validation_epoch_end(self) -> None:
        # every process detects its share of the queries (DistributedSampler under DDP): gather all of them, so
        # that every process computes the rates of all queries; a query seen twice (the sampler's padding) once
        seen = dict((index, (truth, found)) for index, truth, found in gather_objects(self._seen))
        if not seen:
            return
        truth, detections = zip(*(seen[index] for index in sorted(seen)))
        stats = box_recall(
            list(truth), list(detections), min_confidence=self.hparams.min_confidence, iou=self.hparams.iou
        )
        self.last_validation = stats
        for key in ("recall", "top1_recall", "false_positive_rate", "replaced_wrongly"):
            self.log(
                f"val/box_{key}" if key != "false_positive_rate" else "val/false_positive_rate",
                stats[key],
                sync_dist=False,
            )  # every process computed them from all queries

    def configure_optimizers(self):
        """The `optimizer` and `scheduler` groups, as isc-train's and isc-train-verifier's modules take them."""
        return optimization(
            self,
            self.optimizer_factory,
            self.scheduler_factory,
            self.scheduler_interval,
            self.trainer.estimated_stepping_batches,
        )
