"""GPU speed settings that are not Trainer arguments: channels-last memory layout and torch.compile."""

from __future__ import annotations

import logging

import lightning as L
import torch

log = logging.getLogger(__name__)


class ModelAcceleration(L.Callback):
    """`channels_last`: the model's 4-D weights in NHWC layout (faster convolutions with tensor cores under
    bf16/fp16); `compile`: torch.compile the backbone in place (state-dict keys unchanged, so checkpoints stay
    loadable without torch.compile) — false, true, or a dict of torch.compile keyword arguments."""

    def __init__(self, channels_last: bool = False, compile: bool | dict = False):
        self.channels_last = channels_last
        self.compile = compile

    def setup(self, trainer, pl_module, stage: str) -> None:
        # isc_research.train runs trainer.validate before trainer.fit: setup comes twice for one model; apply once
        if getattr(pl_module, "_isc_accelerated", False):
            return
        pl_module._isc_accelerated = True
        if self.channels_last:
            pl_module.model.to(memory_format=torch.channels_last)
        if self.compile:
            options = dict(self.compile) if isinstance(self.compile, dict) else {}
            pl_module.model.backbone.compile(**options)
            log.info("torch.compile on the backbone (%s)", options or "default options")
