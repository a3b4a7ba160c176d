"""Augmentation policies. A policy is a callable PIL image → float tensor (3, size, size), normalised
with the ImageNet statistics that timm backbones expect, applied to every view; or a tuple of such
callables, one per view (asymmetric policies). A view with `needs_other_images = True` is called as
`view(image, other=...)`, where `other()` returns a random other training image (for overlays).
Hydra configs in conf/augmentation/ build them; conf/batch_mix/ adds SSCD's batch-level mixup/CutMix."""

from isc_research.augment.copy_edits import copy_edits
from isc_research.augment.lyakaap import lyakaap
from isc_research.augment.policies import eval_transform, none, simclr
from isc_research.augment.s_square import s_square
from isc_research.augment.separate import separate_v18, separate_v18_stage2
from isc_research.augment.sscd import sscd_advanced
from isc_research.augment.visionforce import visionforce

__all__ = [
    "copy_edits",
    "eval_transform",
    "lyakaap",
    "none",
    "s_square",
    "separate_v18",
    "separate_v18_stage2",
    "simclr",
    "sscd_advanced",
    "visionforce",
]
