"""Augmentation policies. A policy is a callable PIL image → float tensor (3, size, size), normalised
with the ImageNet statistics that timm backbones expect, applied to every view; or a tuple of such
callables, one per view (asymmetric policies). A view transform with `needs_other_images = True` is called
as `view(image, other=...)`, where `other()` returns a random other training image (for overlays).
Hydra configs in conf/augmentation/ build them."""

from isc.augment.copy_edits import copy_edits
from isc.augment.policies import eval_transform, none, simclr

__all__ = ["copy_edits", "eval_transform", "none", "simclr"]
