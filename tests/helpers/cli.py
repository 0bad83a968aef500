"""Arguments of a tiny ``solo-qscore pretrain`` on solo-learn's own config files."""

from __future__ import annotations

from conftest import SHRINK, SOLO_CIFAR, TINY

CFG = ["--config-path", str(SOLO_CIFAR)]
SMALL = [*SHRINK["simclr"], *TINY, "data.train_subset=32", "data.val_subset=32", "+max_steps=4",
         "augmentations.0.crop_size=16", "probe.max_iter=20"]
