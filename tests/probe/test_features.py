"""Frozen backbone features of a loader (solo_qscore.probe.features.extract_features)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from solo_qscore.probe.features import extract_features


def test_features_in_loader_order_in_eval_mode_and_the_mode_restored():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.9), nn.ReLU())
    x, y = torch.randn(10, 6), torch.arange(10)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    backbone.train()
    h, labels = extract_features(backbone, loader, torch.device("cpu"))
    assert backbone.training  # restored
    assert torch.equal(labels, y) and h.dtype == torch.float32 and h.shape == (10, 8)
    backbone.eval()
    with torch.no_grad():
        torch.testing.assert_close(h, backbone(x))  # dropout off: the eval-mode features, row i = item i
    assert not h.requires_grad


def test_autocast_features_come_back_in_float32():
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = torch.randn(5, 3, 8, 8)
    loader = DataLoader(TensorDataset(x, torch.zeros(5, dtype=torch.long)), batch_size=2)
    h, _ = extract_features(backbone, loader, torch.device("cpu"), autocast_dtype=torch.bfloat16)
    assert h.dtype == torch.float32 and h.shape == (5, 4)
    with torch.no_grad():
        torch.testing.assert_close(h, backbone(x), atol=0.05, rtol=0.05)  # bfloat16 arithmetic


def test_dataset_in_order_only_for_a_sequential_loader():
    from torch.utils.data import RandomSampler

    from solo_qscore.probe.features import dataset_in_order

    data = TensorDataset(torch.zeros(4, 2), torch.arange(4))
    assert dataset_in_order(DataLoader(data, batch_size=2)) is data
    assert dataset_in_order(DataLoader(data, batch_size=2, shuffle=True)) is None
    assert dataset_in_order(DataLoader(data, sampler=RandomSampler(data))) is None
    assert dataset_in_order([(torch.zeros(2), 0)]) is None  # a plain list of batches: no dataset
