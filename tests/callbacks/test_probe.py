"""QScoreProbeCallback (callbacks/probe.py) with real trainers: the report, its logs and files.

Tiny conv backbones (r = 64, tests/helpers/tiny_lightning.py) trained for a few steps on real Fashion-MNIST
32x32 subsets.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
from helpers.tiny_lightning import BAND, EPS, EXPECTED_SIZE, R, TinyModule, loader, trainer
from pytorch_lightning.loggers import CSVLogger

from solo_qscore.callbacks import QScoreProbeCallback
from solo_qscore.report.config import ReportConfig

NO_STUDY = ReportConfig(eps=EPS, band=BAND, compression=None)


def _read_csv_metrics(log_dir: Path) -> list[dict]:
    (path,) = log_dir.rglob("metrics.csv")
    with open(path) as f:
        return list(csv.DictReader(f))


def test_probe_callback_report_logs_and_files(tmp_path, fmnist):
    pl.seed_everything(0)
    model = TinyModule()
    probe = QScoreProbeCallback(loader(fmnist["train_x"], fmnist["train_y"], 128),
                                loader(fmnist["val_x"], fmnist["val_y"], 128), every_n_epochs=1,
                                config=NO_STUDY, out_dir=str(tmp_path / "probe"))
    tr = trainer(tmp_path, [probe], logger=CSVLogger(str(tmp_path), name="logs"))
    tr.fit(model, loader(fmnist["train_x"], fmnist["train_y"]))

    report = probe.last_report
    for key in ("auroc", "auprc"):
        assert report[key] is None and report["note"] or 0.0 <= report[key] <= 1.0, (key, report.get("note"))
    assert report["num_features"] == R and report["num_discriminative"] == EXPECTED_SIZE
    assert report["global_step"] == 16
    assert len(probe.history) == 3  # after epoch 1, epoch 2 and at the end of training
    assert probe.state_dict()["history"][-1]["auroc"] == report["auroc"]

    rows = _read_csv_metrics(tmp_path / "logs")
    logged = [r for r in rows if r.get("probe/auroc")]
    assert len(logged) >= 2
    assert float(logged[-1]["probe/auroc"]) == pytest.approx(report["auroc"])

    out = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert out["auroc"] == pytest.approx(report["auroc"]) and out["num_features"] == R
    assert list((tmp_path / "probe").glob("*.png"))


def test_probe_single_class_validation_set(tmp_path, fmnist):
    keep = fmnist["val_y"] == fmnist["val_y"][0]
    probe = QScoreProbeCallback(loader(fmnist["train_x"], fmnist["train_y"], 128),
                                loader(fmnist["val_x"][keep], fmnist["val_y"][keep], 128),
                                config=NO_STUDY, out_dir=str(tmp_path / "probe"))
    trainer(tmp_path, [probe], max_steps=2).fit(TinyModule(), loader(fmnist["train_x"], fmnist["train_y"]))
    report = probe.last_report
    assert report is not None and "single class" in (report["note"] or "")
    for key in ("auroc", "auprc"):
        assert report[key] is None or 0.0 <= report[key] <= 1.0
    assert (tmp_path / "probe" / "probe.json").exists()


def test_two_probes_in_one_run_keep_their_own_state(tmp_path, fmnist):
    """Two probes (other folders or periods) in one Trainer: Lightning refused them (one checkpoint entry per
    callback class); each now has its own state key, and a checkpoint restores each one's history."""
    train = loader(fmnist["train_x"][:64], fmnist["train_y"][:64], 64)
    val = loader(fmnist["val_x"][:32], fmnist["val_y"][:32], 32)
    every = QScoreProbeCallback(train, val, every_n_epochs=1, config=NO_STUDY)
    final = QScoreProbeCallback(train, val, config=NO_STUDY, out_dir=str(tmp_path / "final"))
    assert every.state_key != final.state_key
    tr = trainer(tmp_path, [every, final], max_steps=2, max_epochs=1)
    assert tr.callbacks[:2] == [every, final]
    every.history, final.history = [{"auroc": 0.1}], [{"auroc": 0.2}, {"auroc": 0.3}]
    checkpoint = {"callbacks": {every.state_key: every.state_dict(), final.state_key: final.state_dict()}}
    fresh = [QScoreProbeCallback(train, val, every_n_epochs=1, config=NO_STUDY),
             QScoreProbeCallback(train, val, config=NO_STUDY, out_dir=str(tmp_path / "final"))]
    for callback in fresh:
        callback.load_state_dict(checkpoint["callbacks"][callback.state_key])
    assert [len(c.history) for c in fresh] == [1, 2]
