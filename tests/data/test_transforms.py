"""Augmentations and evaluation transforms (solo_qscore.data.transforms)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.data_configs import AUG
from PIL import Image

from solo_qscore.data import NCropAugmentation, build_crop_pipelines, dataset_stats, eval_transform


def test_build_crop_pipelines_and_validation():
    mean, std = dataset_stats("cifar10")
    assert len(build_crop_pipelines([AUG], mean, std)) == 2
    asym = [{**AUG, "num_crops": 1}, {**AUG, "num_crops": 1, "solarization_prob": 0.2}]
    assert len(build_crop_pipelines(asym, mean, std)) == 2
    with pytest.raises(ValueError, match="'solarisation_prob'"):
        build_crop_pipelines([{**AUG, "solarisation_prob": 0.2}], mean, std)
    with pytest.raises(ValueError, match="gray_scale_prob"):
        build_crop_pipelines([{**AUG, "gray_scale_prob": 1.5}], mean, std)
    with pytest.raises(ValueError, match="min_scale"):
        build_crop_pipelines([{**AUG, "min_scale": 0.9, "max_scale": 0.5}], mean, std)
    with pytest.raises(ValueError, match="non-empty"):
        build_crop_pipelines([], mean, std)


def test_stats():
    assert dataset_stats("cifar10") == dataset_stats("cifar100") != dataset_stats("stl10")
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert dataset_stats("stl10") == dataset_stats("imagefolder") == imagenet
    mean, std = dataset_stats("fashion_mnist")
    assert len(mean) == len(std) == 3


def test_asymmetric_entries_apply_their_own_augmentations():
    plain = {**AUG, "num_crops": 1, "min_scale": 1.0, "max_scale": 1.0, "color_jitter_prob": 0.0,
             "gray_scale_prob": 0.0, "horizontal_flip_prob": 0.0}
    pipes = build_crop_pipelines([plain, {**plain, "solarization_prob": 1.0}], (0.0,) * 3, (1.0,) * 3)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    x1, x2 = NCropAugmentation(pipes)(img)
    ref = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255
    assert torch.allclose(x1, ref, atol=1e-6)
    solarized = torch.where(ref >= 128 / 255, 1 - ref, ref)
    assert torch.allclose(x2, solarized, atol=1e-6)


def test_eval_transform():
    img = Image.fromarray(np.full((28, 28, 3), 255, dtype=np.uint8))
    x = eval_transform(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))(img)
    assert x.shape == (3, 32, 32) and torch.allclose(x, torch.full_like(x, 2.0))
