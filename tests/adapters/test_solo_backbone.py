"""The CIFAR-stem rule (solo_qscore.adapters.solo_backbone), decided once and applied once: the wrapped
solo-learn model, the run view's ``backbone.cifar`` and the torchvision ResNet of ``probe --config`` agree."""

from __future__ import annotations

import pytest
import torch
import torchvision
from conftest import tiny_config, tiny_model

from solo_qscore.adapters.solo_backbone import apply_cifar_stem, uses_cifar_stem
from solo_qscore.adapters.solo_config import run_view


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    pass


@pytest.mark.parametrize(("dataset", "backbone", "crop", "expected"), [
    ("cifar10", "resnet18", 32, True), ("cifar100", "resnet50", 32, True),  # solo-learn's own rule
    ("fashion_mnist", "resnet18", 32, True), ("digits_grid", "resnet18", 64, True),  # our offline data
    ("fashion_mnist", "resnet18", 96, False), ("stl10", "resnet18", 96, False), ("custom", "resnet18", 32, False),
    ("cifar10", "vit_tiny", 32, False), ("fashion_mnist", "vit_tiny", 32, False),  # a ViT has no conv1 stem
])
def test_the_rule(dataset, backbone, crop, expected):
    assert uses_cifar_stem(dataset, backbone, crop) is expected


def _has_cifar_stem(net: torch.nn.Module) -> bool:
    return net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1) and isinstance(net.maxpool, torch.nn.Identity)


def test_the_model_the_run_view_and_a_torchvision_resnet_agree():
    """The wrapped model of a 16 px Fashion-MNIST run has the stem (momentum backbone too, with the same weights),
    its run view says so, and a torchvision ResNet given the stem takes the model's backbone weights as they are."""
    model, cfg = tiny_model("byol")
    assert _has_cifar_stem(model.backbone) and _has_cifar_stem(model.momentum_backbone)
    assert torch.equal(model.backbone.conv1.weight, model.momentum_backbone.conv1.weight)
    assert run_view(cfg)["backbone"] == {"name": "resnet18", "cifar": True}
    net = torchvision.models.resnet18()
    apply_cifar_stem(net)
    net.fc = torch.nn.Identity()
    assert _has_cifar_stem(net)
    net.load_state_dict(model.backbone.state_dict(), strict=True)  # the same layout, weight for weight


def test_a_vit_run_view_has_no_cifar_stem():
    """Before, the run view said ``cifar: true`` for any backbone on CIFAR (a ViT has no conv1 to replace)."""
    cfg = tiny_config("simclr", "backbone.name=vit_tiny", "data.dataset=cifar10")
    assert run_view(cfg)["backbone"] == {"name": "vit_tiny", "cifar": False}
