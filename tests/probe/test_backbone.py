"""Finding the backbone of a self-supervised module (solo_qscore.probe.backbone)."""

from __future__ import annotations

import pytest
from torch import nn

from solo_qscore.probe.backbone import find_backbone


def test_backbone_then_encoder_attribute():
    module = nn.Module()
    module.encoder = nn.Linear(2, 2)
    assert find_backbone(module) is module.encoder  # solo-learn 1.0.x
    module.backbone = nn.Linear(2, 3)
    assert find_backbone(module) is module.backbone  # solo-learn main: backbone first


def test_a_module_without_one_is_a_clear_error():
    module = nn.Module()
    module.backbone = "not a module"
    with pytest.raises(AttributeError, match="no 'backbone' or 'encoder' module"):
        find_backbone(module)
