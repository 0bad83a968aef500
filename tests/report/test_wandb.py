"""The report in Weights & Biases (solo_qscore.report.wandb), offline: scalars, panels, tables, figures, the
report folder as an artifact. (What a whole run records: tests/test_wandb_record.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from solo_qscore.report.build import qscore_report
from solo_qscore.report.config import ReportConfig
from solo_qscore.report.figures import FIGURE_NAMES
from solo_qscore.report.wandb import log_report_artifact, log_report_to_wandb
from solo_qscore.report.writer import write_report


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_wandb_offline_logging(report, tmp_path, offline):
    import wandb

    g = torch.Generator().manual_seed(0)
    train_h, val_h = torch.rand(200, 32, generator=g), torch.rand(50, 32, generator=g)
    degenerate = qscore_report(train_h, torch.zeros(200, dtype=torch.long), val_h, torch.zeros(50, dtype=torch.long),
                               ReportConfig(compression=None))
    run = wandb.init(project="solo-qscore-test", dir=str(tmp_path), mode="offline")
    try:
        payload = log_report_to_wandb(report, run)
        bare = log_report_to_wandb(degenerate, run, prefix="degenerate")  # undefined metrics: no crash
        assert "degenerate/auroc" not in bare and run.summary["degenerate/note"] == degenerate["note"]
        assert run.summary["probe/auroc"] == pytest.approx(report["auroc"])
        assert run.summary["probe/auprc"] == pytest.approx(report["auprc"])
        run_dir = Path(run.dir)
    finally:
        run.finish()
    assert payload["probe/accuracy"] == report["accuracy"]
    assert {"probe/pr_curve_chart", "probe/roc_curve_chart", "probe/compression_table"} <= set(payload)
    assert payload["probe/associations_table"].get_column("feature") == [
        row["feature"] for row in report["associations"]["features"]
    ]
    assert payload["probe/associations_mean_purity"] == report["associations"]["mean_purity"]
    images = sorted(p.name for p in (run_dir / "media" / "images" / "probe").glob("*.png"))
    for name in FIGURE_NAMES:
        assert any(image.startswith(name) for image in images), (name, images)
    tables = list((run_dir / "media" / "table" / "probe").glob("*.table.json"))
    assert len(tables) >= 3


def test_wandb_lightning_logger(report, tmp_path, offline):
    import wandb  # noqa: F401
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(project="solo-qscore-test", save_dir=str(tmp_path), offline=True)
    try:
        payload = log_report_to_wandb(report, logger, prefix="val_probe", step=7)
        assert logger.experiment.summary["val_probe/auroc"] == pytest.approx(report["auroc"])
        assert payload["trainer/global_step"] == 7
    finally:
        logger.experiment.finish()


def test_report_folder_artifact(report, tmp_path, offline):
    import wandb

    folder = write_report(report, tmp_path / "probe", plots=False).parent
    report.global_step, report.epoch = 12, 1
    run = wandb.init(project="solo-qscore-test", dir=str(tmp_path), mode="offline")
    try:
        artifact = log_report_artifact(run, folder, report)
        assert artifact.name.startswith(f"qscore-report-{run.id}") and artifact.type == "qscore-report"
        assert artifact.metadata["global_step"] == 12 and artifact.metadata["auroc"] == pytest.approx(report.auroc)
        assert sorted(artifact.manifest.entries) == ["probe.json", "samples.csv"]
    finally:
        report.global_step = report.epoch = None
        run.finish()
