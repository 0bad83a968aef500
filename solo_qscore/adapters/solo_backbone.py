"""The CIFAR stem of a ResNet: which runs have it, and giving it to a backbone.

solo-learn gives its ResNets a 3x3 first convolution (stride 1) without the max-pool on CIFAR (its
``BaseMethod``: ``cifar10``/``cifar100``), so that 32 px images keep their resolution; our offline
datasets (Fashion-MNIST, MNIST, Trifeature, digits_grid) at up to 64 px need the same. The rule is decided
here once (:func:`uses_cifar_stem`) and applied here once (:func:`apply_cifar_stem`): by the method wrapper
to the models it builds, by the run view (``backbone.cifar``) and by ``solo-qscore probe --config`` to a
plain torchvision ResNet.
"""

from __future__ import annotations

import torch

from solo_qscore.config import OFFLINE_DATASETS

#: the datasets solo-learn itself gives the CIFAR stem (its ``BaseMethod`` does, for ResNet backbones)
SOLO_CIFAR_DATASETS = ("cifar10", "cifar100")
#: the largest crop of our offline datasets that gets the CIFAR stem (larger crops keep ImageNet's)
MAX_SMALL_IMAGE = 64


def uses_cifar_stem(dataset: str, backbone: str, crop_size: int) -> bool:
    """Whether a run's ResNet has the CIFAR stem: solo-learn's CIFAR datasets, and our offline datasets at
    small crops. Other backbones (ViTs, ...) have no such stem."""
    if not str(backbone).startswith("resnet"):
        return False
    return dataset in SOLO_CIFAR_DATASETS or (dataset in OFFLINE_DATASETS and int(crop_size) <= MAX_SMALL_IMAGE)


def apply_cifar_stem(backbone: torch.nn.Module) -> None:
    """Give a ResNet (solo-learn's or torchvision's) the CIFAR stem, exactly as solo-learn's ``BaseMethod``
    does: ``conv1`` a fresh 3x3 convolution (stride 1, padding 2, no bias), no max-pool."""
    backbone.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
    backbone.maxpool = torch.nn.Identity()
