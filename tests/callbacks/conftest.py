"""Fixtures of the callback tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def fmnist() -> dict[str, torch.Tensor]:
    from solo_qscore.data import make_eval_loaders

    train, val = make_eval_loaders({"dataset": "fashion_mnist", "root": "datasets", "fallback": None,
                                    "image_size": 32, "train_subset": 256, "val_subset": 128,
                                    "batch_size": 256, "num_workers": 0})
    (tx, ty), (vx, vy) = next(iter(train)), next(iter(val))
    return {"train_x": tx, "train_y": ty, "val_x": vx, "val_y": vy}
