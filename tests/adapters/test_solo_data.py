"""solo-learn's pre-training loader over our offline data (solo_qscore.adapters.solo_data)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from solo_qscore.adapters.solo_config import prepare_config
from solo_qscore.adapters.solo_data import make_pretrain_loader, validation_loader
from solo_qscore.config import ConfigError


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    pass


def test_batches_are_solo_learns_format():
    """``(indexes, [crops], labels)``: two 16 px crops per image, each image's own index, Fashion-MNIST labels;
    the validation loader is the probe's validation split."""
    cfg = prepare_config(tiny_config("simclr"))
    loader = make_pretrain_loader(cfg)
    indexes, crops, labels = next(iter(loader))
    assert loader.dataset_name == "fashion_mnist" and len(crops) == 2
    assert [tuple(c.shape) for c in crops] == [(8, 3, 16, 16)] * 2
    assert indexes.unique().numel() == 8 and labels.dtype == torch.int64 and 0 <= int(labels.min())
    assert len(validation_loader(cfg, batch_size=4).dataset) == 16


def test_fewer_images_than_one_batch_is_one_config_error():
    cfg = prepare_config(tiny_config("simclr", "data.train_subset=4"))
    with pytest.raises(ConfigError, match="the training set has 4 images, fewer than optimizer.batch_size=8"):
        make_pretrain_loader(cfg)
