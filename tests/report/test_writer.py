"""Writing a report folder (solo_qscore.report.writer): probe.json, samples.csv and the figures, whole or not at
all; the process umask left alone. (Interrupted writes end to end: tests/test_reliability.py.)"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
import torch

from solo_qscore.report.build import qscore_report
from solo_qscore.report.config import ReportConfig
from solo_qscore.report.figures import EXTREMES_FIGURE, FIGURE_NAMES
from solo_qscore.report.writer import REPORT_FILES, write_report

REQUIRED_KEYS = {
    "auroc",
    "auprc",
    "accuracy",
    "base_rate",
    "auroc_misclassified",
    "auprc_misclassified",
    "num_features",
    "num_discriminative",
    "eps",
    "band",
    "num_train",
    "num_val",
    "mean_active",
    "q_mean",
    "q_quantiles",
    "note",
    "compression",
}


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR" and data.rstrip().endswith(b"IEND\xaeB`\x82")
    return struct.unpack(">II", data[16:24])


def test_write_report(report, tmp_path):
    path = write_report(report, tmp_path / "out")
    assert path == tmp_path / "out" / "probe.json"
    loaded = json.loads(path.read_text())
    assert REQUIRED_KEYS <= set(loaded) and "arrays" not in loaded
    assert loaded["auroc"] == pytest.approx(report["auroc"])
    assert loaded["compression"]["sizes"] == report["compression"]["sizes"]
    assert path.stat().st_size < 60_000  # small: curves are subsampled, no big arrays
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == sorted(["probe.json", "samples.csv"] + [f"{n}.png" for n in FIGURE_NAMES])  # no temp files left
    for name in FIGURE_NAMES:
        png = path.parent / f"{name}.png"
        width, height = _png_size(png)
        assert 400 <= width <= 2500 and 300 <= height <= 1500, (name, width, height)
        assert 10_000 < png.stat().st_size < 1_000_000


def test_write_report_degenerate_and_without_plots(data, tmp_path):
    train_h, _, val_h, _ = data
    rep = qscore_report(train_h[:200], torch.zeros(200, dtype=torch.long), val_h[:50],
                        torch.zeros(50, dtype=torch.long), ReportConfig(compression=None))
    path = write_report(rep, tmp_path, plots=True)
    loaded = json.loads(path.read_text())
    assert loaded["auroc"] is None and loaded["note"]
    assert (tmp_path / "pr_curve.png").stat().st_size > 5_000
    assert not (tmp_path / "compression.png").exists()  # no compression study, no figure
    path = write_report(rep, tmp_path / "json_only", plots=False)
    assert sorted(p.name for p in path.parent.iterdir()) == ["probe.json", "samples.csv"]


def test_figures_from_a_report_read_back_from_json(report, tmp_path):
    loaded = json.loads(write_report(report, tmp_path / "a", plots=False).read_text())
    write_report(loaded, tmp_path / "b")
    names = sorted(p.name for p in (tmp_path / "b").iterdir())
    assert names == ["compression.png", "pr_curve.png", "probe.json", "roc_curve.png"]
    assert json.loads((tmp_path / "b" / "probe.json").read_text()) == loaded


def test_json_write_is_atomic(report, tmp_path, monkeypatch):
    path = write_report(report, tmp_path, plots=False)
    before = path.read_bytes()

    def broken_dump(obj, fp, *args, **kwargs):
        fp.write('{"auroc": 0.')  # half a file, then the crash
        raise RuntimeError("disk full")

    monkeypatch.setattr(json, "dump", broken_dump)
    changed = dict(report, auroc=0.123)
    with pytest.raises(RuntimeError, match="disk full"):
        write_report(changed, tmp_path, plots=False)
    assert path.read_bytes() == before  # the previous report is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probe.json", "samples.csv"]  # and no temp file is left


def test_report_files_name_every_figure_once():
    assert REPORT_FILES == ("probe.json", "samples.csv", *(f"{n}.png" for n in (*FIGURE_NAMES, EXTREMES_FIGURE)))
    assert len(set(REPORT_FILES)) == len(REPORT_FILES)


def test_writing_a_report_leaves_the_process_umask_alone(report, tmp_path, monkeypatch):
    """Reading the umask with os.umask sets it for a moment: a file another thread creates then gets the
    wrong mode. The report's files and folder get 0o666 / 0o777 minus the umask without touching it."""
    def no_umask(mask):
        raise AssertionError("os.umask was called")

    previous = os.umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", no_umask)
        path = write_report(report, tmp_path / "out", plots=False)
    finally:
        monkeypatch.undo()
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "out" / "samples.csv").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o750
