"""Query overlay detector (RECIPES §4, §5.3, §7): synthetic auto-labelled overlays, a torchvision detector
trained on them, and `OverlayDetector`, a query-crop provider for isc-match and isc-eval."""

from isc_research.detect.boxes import box_iou, box_recall, read_overlay_boxes
from isc_research.detect.inference import OverlayDetector
from isc_research.detect.model import ARCHITECTURES, DetectorModule, build_detector
from isc_research.detect.synthetic import SyntheticOverlays, synthetic_overlay

__all__ = [
    "ARCHITECTURES",
    "DetectorModule",
    "OverlayDetector",
    "SyntheticOverlays",
    "box_iou",
    "box_recall",
    "build_detector",
    "read_overlay_boxes",
    "synthetic_overlay",
]
