"""The backbone features of the current training step, for the callbacks that read them (no extra forward pass).

A module with the solo-qscore mixin keeps them in ``qscore_batch_features`` (its own forward hook); for any other
module a forward hook on its backbone collects the outputs of the step's training-mode forward passes.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from solo_qscore.probe.backbone import find_backbone


class TrainingStepFeatures:
    """``attach`` at fit start, ``take`` once per training batch, ``detach`` at fit end."""

    def __init__(self) -> None:
        self._hook = None
        self._hooked: list[Tensor] = []

    @property
    def hooked(self) -> bool:
        """Whether a forward hook of ours is on the backbone (only for a module without the mixin)."""
        return self._hook is not None

    def attach(self, pl_module: Any) -> None:
        if hasattr(pl_module, "qscore_batch_features"):
            return  # the mixin's capture

        def hook(module, inputs, output):
            if module.training:
                self._hooked.append(output.detach())

        self._hook = find_backbone(pl_module).register_forward_hook(hook)

    def detach(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def take(self, pl_module: Any) -> Optional[Tensor]:
        """The step's features ``[B, r]`` (all crops), or ``None`` when the step produced none."""
        h = getattr(pl_module, "qscore_batch_features", None)
        if h is None and self._hooked:
            h = torch.cat(self._hooked).detach()
        self._hooked = []
        return h
