"""Finding the backbone of a self-supervised LightningModule (no framework import needed)."""

from __future__ import annotations

import torch

BACKBONE_ATTRIBUTES = ("backbone", "encoder")  # solo-learn main and most code; solo-learn 1.0.x


def find_backbone(module: torch.nn.Module) -> torch.nn.Module:
    """``module.backbone`` or ``module.encoder``: the network whose output is the representation h."""
    for name in BACKBONE_ATTRIBUTES:
        backbone = getattr(module, name, None)
        if isinstance(backbone, torch.nn.Module):
            return backbone
    raise AttributeError(f"{type(module).__name__} has no 'backbone' or 'encoder' module")
