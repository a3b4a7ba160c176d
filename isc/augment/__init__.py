"""Augmentation policies. A policy is a callable PIL image → float tensor (3, size, size), normalised
with the ImageNet statistics that timm backbones expect. Hydra configs in conf/augmentation/ build them."""

from isc.augment.policies import eval_transform, none, simclr

__all__ = ["eval_transform", "none", "simclr"]
