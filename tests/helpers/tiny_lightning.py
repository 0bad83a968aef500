"""A tiny conv backbone (r = 64) in a ``pytorch_lightning`` module, its loaders and trainer (the callback tests)."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from solo_qscore.core.discriminative import band_ranks

R = 64
EPS = 2.0  # below the default 4 so that the highly activating sets of a 64-d ReLU output are not empty
BAND = (50.0, 95.0)
BATCH = 32
EXPECTED_SIZE = band_ranks(R, *BAND)[1] - band_ranks(R, *BAND)[0]  # 61 - 32 = 29


def loader(x, y, batch_size=BATCH, shuffle=False) -> DataLoader:
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, num_workers=0)


class AddNaN(nn.Module):
    def forward(self, h):
        return h + float("nan")


class TinyModule(pl.LightningModule):
    """Plain module (no solo-qscore mixin): conv backbone -> r=64 features, linear head."""

    def __init__(self, nan: bool = False, lr: float = 0.05) -> None:
        super().__init__()
        layers = [nn.Conv2d(3, R, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.backbone = nn.Sequential(*layers, *([AddNaN()] if nan else []))
        self.head = nn.Linear(R, 10)
        self.lr = lr
        self.register_buffer("qscore_discriminative", torch.zeros(R, dtype=torch.bool))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.head(self.backbone(x)), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def trainer(tmp_path: Path, callbacks, logger=False, **kwargs) -> pl.Trainer:
    kwargs.setdefault("max_epochs", 2)
    return pl.Trainer(accelerator="cpu", devices=1, logger=logger, callbacks=callbacks,
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                      default_root_dir=str(tmp_path), **kwargs)
