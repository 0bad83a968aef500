"""A Lightning callback that records the backbone outputs of every training forward pass, per epoch: the
reference the statistics callbacks' values are recomputed from."""

from __future__ import annotations

import lightning.pytorch as pl
import torch


class FeatureRecorder(pl.Callback):
    """Records the backbone outputs of every training forward pass, per epoch."""

    def __init__(self) -> None:
        self.epochs: dict[int, list[torch.Tensor]] = {}
        self._handle = None

    def on_fit_start(self, trainer, pl_module):
        def hook(module, inputs, output):
            if module.training:
                self.epochs.setdefault(trainer.current_epoch, []).append(output.detach().clone())

        self._handle = pl_module.backbone.register_forward_hook(hook)

    def on_fit_end(self, trainer, pl_module):
        self._handle.remove()
