"""A tiny real checkpoint shared by the explain and miou command tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

DATA = ["data.num_workers=0"]


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    from conftest import tiny_pretrain

    out = tmp_path_factory.mktemp("explain_run")
    # one SimCLR step on 32 Fashion-MNIST images at 32 px (a real, barely trained ResNet-18); a short probe
    # keeps the run's final probe report cheap
    summary = tiny_pretrain(out, "simclr", "data.train_subset=32", "data.val_subset=64", "optimizer.batch_size=32",
                            "augmentations.0.crop_size=32", "qscore.eps=2.0", "probe.max_iter=10")
    assert summary["global_step"] == 1
    return Path(summary["checkpoint"])


@pytest.fixture(scope="session")
def features(checkpoint):
    """Validation and train representations of the checkpoint, computed here independently of the commands."""
    from solo_qscore.callbacks import extract_features
    from solo_qscore.cli.open_run import load_checkpoint, with_overrides
    from solo_qscore.core.discriminative import discriminative_mask
    from solo_qscore.core.statistics import ActivationStatistics
    from solo_qscore.data import make_eval_loaders

    model, saved, _ = load_checkpoint(str(checkpoint))
    cfg = with_overrides(saved, DATA)
    _, val_loader = make_eval_loaders(cfg["data"])
    h, y = extract_features(model.backbone, val_loader, torch.device("cpu"))
    stats = ActivationStatistics(h.shape[1], eps=2.0)
    stats.update(h)
    A = stats.compute()
    return {"h": h, "y": y, "A": A, "D": discriminative_mask(A, 50, 95), "indices": val_loader.dataset.dataset.indices}
