"""Features of tiny real checkpoints, extracted independently of the commands (compare, the report's associations)."""

from __future__ import annotations

from pathlib import Path

import torch

# 16 x 16 images (crops and evaluation) keep the two training runs and the feature extraction fast
TINY = ["data.train_subset=32", "data.val_subset=32", "probe.max_iter=5", "+enable_progress_bar=false",
        "+enable_model_summary=false"]

# compare evaluates both checkpoints on more samples than they were trained on
EVAL = ["data.train_subset=120", "data.val_subset=60", "qscore.eps=2.0", "probe.max_iter=50"]


def _features(ckpt: Path):
    from solo_qscore.callbacks import extract_features
    from solo_qscore.cli.open_run import load_checkpoint, with_overrides
    from solo_qscore.data import make_eval_loaders
    from solo_qscore.probe.backbone import find_backbone

    model, saved, _ = load_checkpoint(str(ckpt))
    cfg = with_overrides(saved, EVAL)
    train_loader, val_loader = make_eval_loaders(cfg["data"])
    backbone = find_backbone(model)
    return (*extract_features(backbone, train_loader, torch.device("cpu")),
            *extract_features(backbone, val_loader, torch.device("cpu")))
