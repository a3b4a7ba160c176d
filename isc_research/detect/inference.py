"""`OverlayDetector`: a trained overlay detector as a query-crop provider.

Calling convention shared by every query-crop provider (`conf/query_crops/`): `name: str`,
`crops(image) -> [(x0, y0, x1, y1)]` (pixel boxes of `image`), and, for detectors, `detect(image) ->
[(box, confidence)]`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from isc_research.detect.boxes import Box, clip_box
from isc_research.detect.model import build_detector, detections_of
from isc_research.scaling import resolve_device
from isc_research.images import to_rgb

__all__ = ["OverlayDetector"]


class OverlayDetector:
    """Boxes of pasted content in a query. `crops` keeps those with confidence > `min_confidence` (the
    sources' rule: VisionForce > 0.9, D²LV > 0.01, RECIPES §4, §5.3), at most `max_boxes`; the network's own
    score threshold and detection cap are relaxed to those values when they are stricter, so that a detector
    trained with other settings still yields them. `penalised`: whether isc-match's crop penalty applies
    (D²LV did not lower its YOLO sub-queries, RECIPES §5.3 step 3)."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        min_confidence: float = 0.5,
        max_boxes: int = 5,
        device: str = "auto",
        name: str = "detector",
        penalised: bool = False,
    ):
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
        if max_boxes < 1:
            raise ValueError(f"max_boxes must be >= 1, got {max_boxes}")
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.min_confidence, self.max_boxes, self.name = float(min_confidence), int(max_boxes), name
        self.penalised = bool(penalised)
        head = getattr(self.model, "roi_heads", self.model)  # Faster R-CNN: roi_heads; SSDlite: the model
        if hasattr(head, "score_thresh"):
            head.score_thresh = min(float(head.score_thresh), self.min_confidence)
        if hasattr(head, "detections_per_img"):
            head.detections_per_img = max(int(head.detections_per_img), self.max_boxes)

    @classmethod
    def from_checkpoint(
        cls,
        ckpt_path: str | Path,
        min_confidence: float = 0.5,
        device: str = "auto",
        max_boxes: int = 5,
        penalised: bool = False,
    ) -> OverlayDetector:
        """Load a checkpoint written by isc-train-detector (it carries the detector's arguments)."""
        path = Path(str(ckpt_path)).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"detector checkpoint {str(path)!r} does not exist "
                "(isc-train-detector writes <run>/checkpoints/last.ckpt)"
            )
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        arguments = (checkpoint.get("hyper_parameters") or {}).get("model")
        if not isinstance(arguments, dict) or "arch" not in arguments:
            raise ValueError(f"{path} is not an isc-train-detector checkpoint: no hyper_parameters.model.arch")
        model = build_detector(**{**arguments, "weights": None, "weights_backbone": None})  # weights: below
        state = {k[len("model.") :]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
        model.load_state_dict(state)
        return cls(
            model,
            min_confidence=min_confidence,
            max_boxes=max_boxes,
            device=device,
            name=f"detector:{path.name}",
            penalised=penalised,
        )

    @torch.no_grad()
    def detect_batch(self, images: list[Image.Image]) -> list[list[tuple[Box, float]]]:
        """Per image: up to max_boxes (pixel box, confidence), by decreasing confidence, any confidence."""
        images = [to_rgb(im) for im in images]
        tensors = [TF.to_dtype(TF.to_image(im), torch.float32, scale=True).to(self.device) for im in images]
        out = []
        for image, output in zip(images, self.model(tensors)):
            kept = []
            for box, confidence in detections_of(output):
                pixel = clip_box(box, image.width, image.height)
                if pixel is not None:
                    kept.append((pixel, confidence))
                if len(kept) == self.max_boxes:
                    break
            out.append(kept)
        return out

    def detect(self, image: Image.Image) -> list[tuple[Box, float]]:
        return self.detect_batch([image])[0]

    def crops(self, image: Image.Image) -> list[Box]:
        return [box for box, confidence in self.detect(image) if confidence > self.min_confidence]
