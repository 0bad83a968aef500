"""LabelFreeMetricsCallback (callbacks/label_free.py) with real trainers: the logged RankMe, α-ReQ and
embedding std equal the pure functions on the features the training steps saw, epoch by epoch.

Tiny conv backbones (r = 64, tests/helpers/tiny_lightning.py) trained for a few steps on real Fashion-MNIST
32x32 subsets.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from helpers.feature_recorder import FeatureRecorder
from helpers.tiny_lightning import R, TinyModule, loader, trainer
from pytorch_lightning.loggers import CSVLogger
from torch import nn

from solo_qscore.callbacks import LabelFreeMetricsCallback
from solo_qscore.core.label_free import alpha_req, normalized_embedding_std, rankme

KEYS = ("label_free/rankme", "label_free/alpha_req", "label_free/embedding_std")


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    pass


def _logged_by_epoch(log_dir: Path) -> dict[int, dict[str, float]]:
    (path,) = log_dir.rglob("metrics.csv")
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {int(row["epoch"]): {k: float(row[k]) for k in KEYS if row.get(k)} for row in rows
            if any(row.get(k) for k in KEYS)}


def test_logged_values_equal_pure_functions_on_each_epochs_features(tmp_path, fmnist):
    pl.seed_everything(0)
    model, metrics, rec = TinyModule(), LabelFreeMetricsCallback(), FeatureRecorder()
    tr = trainer(tmp_path, [metrics, rec], logger=CSVLogger(str(tmp_path), name="logs"), max_epochs=2)
    tr.fit(model, loader(fmnist["train_x"], fmnist["train_y"]))

    logged = _logged_by_epoch(tmp_path)
    assert sorted(logged) == [0, 1]
    for epoch in (0, 1):  # reset at each epoch end: epoch 1's values are over epoch 1's features alone
        h = torch.cat(rec.epochs[epoch])
        assert h.shape == (256, R)
        values = logged[epoch]
        assert values["label_free/rankme"] == pytest.approx(rankme(h), rel=1e-5)
        assert values["label_free/alpha_req"] == pytest.approx(alpha_req(h), rel=1e-5)
        assert values["label_free/embedding_std"] == pytest.approx(normalized_embedding_std(h), rel=1e-5)
    assert rankme(torch.cat(rec.epochs[0])) != pytest.approx(rankme(torch.cat(rec.epochs[1])), rel=1e-5)
    assert metrics.last["num_samples"] == 256.0 and int(metrics.metric.num_samples) == 0  # computed, then reset
    assert not metrics.features.hooked  # removed at fit end
    for key in KEYS:
        assert key in tr.callback_metrics


def test_a_solo_learn_method_is_read_from_its_captured_features_without_a_hook(tmp_path):
    """solo-learn main's SimCLR under the solo-qscore wrapper: the callback reads the features the step
    captured (``qscore_batch_features``, both crops) and registers no hook of its own."""
    import lightning.pytorch as lpl  # solo-learn's namespace (the helper's trainer)
    from conftest import tiny_model
    from helpers.lightning_trainer import trainer as solo_trainer

    from solo_qscore.adapters.solo_data import make_pretrain_loader

    torch.manual_seed(0)
    model, cfg = tiny_model("simclr")
    metrics, seen = LabelFreeMetricsCallback(), []

    class Recorder(lpl.Callback):  # after the metrics callback: the same features it read
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            assert not metrics.features.hooked
            seen.append(pl_module.qscore_batch_features.clone())

    solo_trainer(callbacks=[metrics, Recorder()], max_steps=2).fit(model, make_pretrain_loader(cfg))
    h = torch.cat(seen)
    assert h.shape == (2 * 2 * 8, model.features_dim)  # 2 steps x 2 crops x batch 8
    assert metrics.last["num_samples"] == h.shape[0]
    assert metrics.last["rankme"] == pytest.approx(rankme(h), rel=1e-5)
    assert metrics.last["alpha_req"] == pytest.approx(alpha_req(h), rel=1e-5)
    assert metrics.last["embedding_std"] == pytest.approx(normalized_embedding_std(h), rel=1e-5)


class Constant(nn.Module):
    def forward(self, h):
        return h * 0.0 + torch.linspace(1.0, 2.0, h.shape[1])


def test_nan_features_skip_the_epoch_and_a_collapse_logs_no_alpha(tmp_path, fmnist):
    x, y = fmnist["train_x"][:64], fmnist["train_y"][:64]
    metrics = LabelFreeMetricsCallback()
    with pytest.warns(UserWarning, match="label-free metrics skipped this epoch: .*NaN or Inf"):
        tr = trainer(tmp_path, [metrics], max_epochs=1)
        tr.fit(TinyModule(nan=True), loader(x, y))
    assert metrics.last is None and int(metrics.metric.num_nonfinite) == 0  # reset after the skip
    assert not any(key in tr.callback_metrics for key in KEYS)

    collapsed = TinyModule()
    collapsed.backbone.append(Constant())
    metrics = LabelFreeMetricsCallback()
    with pytest.warns(UserWarning, match="label_free/alpha_req not logged this epoch.*collapsed"):
        tr = trainer(tmp_path, [metrics], max_epochs=1)
        tr.fit(collapsed, loader(x, y))
    assert float(tr.callback_metrics["label_free/rankme"]) == pytest.approx(1.0, abs=1e-3)
    assert float(tr.callback_metrics["label_free/embedding_std"]) == pytest.approx(0.0, abs=1e-6)
    assert "label_free/alpha_req" not in tr.callback_metrics
