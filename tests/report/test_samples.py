"""Per-sample Q-Scores of the probe report (solo_qscore.report.samples): samples.csv, the train-split table,
q_extremes.png as written."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.planted import planted_features
from sklearn.metrics import roc_auc_score

from solo_qscore import ActivationStatistics, discriminative_mask, q_score
from solo_qscore.core.activations import highly_activating
from solo_qscore.probe.linear import probe_correctness
from solo_qscore.report.build import qscore_report
from solo_qscore.report.config import ReportConfig
from solo_qscore.report.result import SampleTable
from solo_qscore.report.samples import SAMPLE_COLUMNS, sample_table
from solo_qscore.report.writer import write_report

NUM_CLASSES = 8
CLASS_NAMES = [f"class-{c}" for c in range(NUM_CLASSES)]


@pytest.fixture(scope="module")
def data():
    train_h, train_y = planted_features(800, seed=0, num_classes=NUM_CLASSES)
    val_h, val_y = planted_features(400, seed=1, num_classes=NUM_CLASSES)
    return train_h, train_y, val_h, val_y


@pytest.fixture(scope="module")
def report(data):
    return qscore_report(*data, ReportConfig(compression=None), class_names=CLASS_NAMES)


@pytest.fixture(scope="module")
def images(data):
    """A stand-in for the validation dataset: items ``(normalised CxHxW tensor, label)``."""
    _, _, val_h, val_y = data
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(len(val_y), 3, 24, 24, generator=gen)
    return [(pixels[i], int(val_y[i])) for i in range(len(val_y))]


def read_csv(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    columns = {}
    for k, name in enumerate(header):
        kind = float if name in ("confidence", "q") else int
        columns[name] = np.array([kind(row[k]) for row in body])
    return header, columns


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    assert head.rstrip().endswith(b"IEND\xaeB`\x82")
    return struct.unpack(">II", head[16:24])


def recomputed_discriminative(train_h: torch.Tensor, eps: float = 4.0) -> torch.Tensor:
    stats = ActivationStatistics(train_h.shape[1], eps=eps, sync_on_compute=False)
    stats.update(train_h)
    return discriminative_mask(stats.compute(), 50.0, 95.0)


@pytest.fixture(scope="module")
def written(report, images, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    write_report(report, out, images=images)
    return out


def test_samples_csv_has_one_row_per_sample_with_the_columns(written, data):
    _, _, val_h, val_y = data
    header, cols = read_csv(written / "samples.csv")
    assert tuple(header) == SAMPLE_COLUMNS
    assert header == ["index", "label", "prediction", "correct", "confidence", "q", "num_active"]
    assert all(col.shape == (len(val_y),) for col in cols.values())
    assert np.array_equal(cols["index"], np.arange(len(val_y)))
    assert np.array_equal(cols["label"], val_y.numpy())
    assert set(np.unique(cols["correct"])) <= {0, 1}
    assert ((0 <= cols["prediction"]) & (cols["prediction"] < NUM_CLASSES)).all()
    assert ((cols["confidence"] >= 1.0 / NUM_CLASSES - 1e-12) & (cols["confidence"] <= 1.0)).all()
    assert np.array_equal(cols["num_active"], highly_activating(val_h, 4.0).sum(1).numpy())
    meta = json.loads((written / "probe.json").read_text())["samples"]
    assert meta == {"file": "samples.csv", "split": "val", "num_samples": len(val_y)}


def test_q_column_equals_q_score_from_features_and_d(written, report, data):
    train_h, _, val_h, _ = data
    D = recomputed_discriminative(train_h)
    assert np.array_equal(report["arrays"]["discriminative"], D.numpy())
    _, cols = read_csv(written / "samples.csv")
    expected = q_score(val_h, D, eps=4.0).double().numpy()
    np.testing.assert_array_equal(cols["q"], expected)  # every digit written: exact round trip
    assert (cols["q"] > 0).any() and (cols["q"] == 0).any()  # a real spread, not all zeros


def test_correct_is_prediction_equals_label_and_matches_the_probe(written, data):
    _, cols = read_csv(written / "samples.csv")
    assert np.array_equal(cols["correct"], (cols["prediction"] == cols["label"]).astype(int))
    assert 0 < cols["correct"].sum() < cols["correct"].size  # both outcomes
    result = probe_correctness(*data, num_classes=NUM_CLASSES)
    assert np.array_equal(cols["prediction"], result.preds.numpy())
    np.testing.assert_allclose(cols["confidence"], result.probs.max(dim=1).values.double().numpy(), rtol=1e-12)


def test_auroc_from_the_csv_equals_the_report(written):
    loaded = json.loads((written / "probe.json").read_text())
    _, cols = read_csv(written / "samples.csv")
    # torchmetrics returns AUROC in float32
    assert loaded["auroc"] == pytest.approx(roc_auc_score(cols["correct"], cols["q"]), abs=1e-6)
    assert loaded["auroc_misclassified"] == pytest.approx(roc_auc_score(1 - cols["correct"], -cols["q"]), abs=1e-6)
    assert loaded["accuracy"] == pytest.approx(cols["correct"].mean())


def test_samples_csv_is_written_without_plots_and_not_from_a_json_report(report, tmp_path):
    write_report(report, tmp_path / "a", plots=False)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["probe.json", "samples.csv"]
    loaded = json.loads((tmp_path / "a" / "probe.json").read_text())
    write_report(loaded, tmp_path / "b", plots=False)  # no per-sample arrays in JSON: no CSV
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["probe.json"]


def test_samples_csv_write_is_atomic(report, tmp_path, monkeypatch):
    write_report(report, tmp_path, plots=False)
    before = (tmp_path / "samples.csv").read_bytes()

    class BrokenWriter:
        def __init__(self, handle, **kwargs):
            self.handle = handle

        def writerow(self, row):
            self.handle.write("index,la")

        def writerows(self, rows):
            raise OSError("disk full")

    monkeypatch.setattr(csv, "writer", BrokenWriter)
    with pytest.raises(OSError, match="disk full"):
        write_report(report, tmp_path, plots=False)
    assert (tmp_path / "samples.csv").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probe.json", "samples.csv"]  # no temp file left


def test_train_split_table_uses_train_d_and_the_fitted_probe(report, data, tmp_path):
    train_h, train_y, _, _ = data
    table = sample_table(report, train_h, train_y, split="train")
    assert isinstance(table, SampleTable)
    D = recomputed_discriminative(train_h)
    probe = report["arrays"]["probe"]
    assert table["split"] == "train"
    np.testing.assert_array_equal(table["q"], q_score(train_h, D).double().numpy())
    assert np.array_equal(table["prediction"], probe.predict(train_h).numpy())
    assert np.array_equal(table["num_active"], highly_activating(train_h, 4.0).sum(1).numpy())
    assert np.array_equal(table["correct"], (table["prediction"] == train_y.numpy()).astype(int))
    # the probe + mask form gives the same table
    same = sample_table(probe, train_h, train_y, discriminative=D, split="train")
    for name in SAMPLE_COLUMNS:
        assert np.array_equal(same[name], table[name]), name

    write_report(report, tmp_path, plots=False, samples=table)
    header, cols = read_csv(tmp_path / "samples.csv")
    assert tuple(header) == SAMPLE_COLUMNS and cols["index"].size == len(train_y)
    np.testing.assert_array_equal(cols["q"], table["q"])
    meta = json.loads((tmp_path / "probe.json").read_text())
    assert meta["samples"]["split"] == "train" and meta["samples"]["num_samples"] == len(train_y)
    assert meta["num_val"] == 400  # the report itself is still about the validation set


def test_val_table_from_sample_table_equals_the_reports(report, data):
    _, _, val_h, val_y = data
    table = sample_table(report, val_h, val_y)
    for name in SAMPLE_COLUMNS:
        np.testing.assert_allclose(table[name], report["arrays"]["samples"][name], rtol=1e-12, err_msg=name)


def test_sample_table_checks_its_inputs(report, data):
    train_h, train_y, _, _ = data
    with pytest.raises(ValueError, match="discriminative"):
        sample_table(report["arrays"]["probe"], train_h, train_y)
    with pytest.raises(ValueError, match="features"):
        sample_table(report, train_h[:, :10], train_y)
    with pytest.raises(ValueError, match="no fitted probe"):
        sample_table({"arrays": {}}, train_h, train_y)


def test_q_extremes_png_with_a_dataset_of_normalised_tensors(written):
    width, height = png_size(written / "q_extremes.png")
    assert 800 <= width <= 2500 and 300 <= height <= 1500


@pytest.mark.parametrize("kind", ["callable_uint8", "pil", "grayscale_tensor"])
def test_q_extremes_png_with_other_image_sources(report, tmp_path, kind):
    from PIL import Image

    gen = np.random.default_rng(0)
    if kind == "callable_uint8":
        def images(index):
            return gen.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    elif kind == "pil":
        images = [Image.fromarray(gen.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(400)]
    else:
        images = torch.rand(400, 1, 28, 28)
    write_report(report, tmp_path, images=images, extremes_k=4)
    png_size(tmp_path / "q_extremes.png")


def test_q_extremes_absent_without_images_or_plots(report, images, tmp_path):
    write_report(report, tmp_path / "no_images")
    assert (tmp_path / "no_images" / "q_histogram.png").exists()
    assert not (tmp_path / "no_images" / "q_extremes.png").exists()
    write_report(report, tmp_path / "no_plots", plots=False, images=images)
    assert not (tmp_path / "no_plots" / "q_extremes.png").exists()


def test_q_extremes_skipped_with_a_warning_when_images_fail(report, tmp_path):
    def broken(index):
        raise KeyError(index)

    with pytest.warns(UserWarning, match="q_extremes.png skipped"):
        path = write_report(report, tmp_path, images=broken)
    assert path.exists() and (tmp_path / "samples.csv").exists()
    assert not (tmp_path / "q_extremes.png").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left
