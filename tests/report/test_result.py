"""The report as a typed object (solo_qscore.report.result): its fields are the keys of probe.json, in one place;
``as_report`` gives the same typed view of a report read back from probe.json or passed as a mapping."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from helpers.planted import planted_features

from solo_qscore.report.build import qscore_report
from solo_qscore.report.config import CompressionSettings, ReportConfig
from solo_qscore.report.result import (
    REPORT_KEYS,
    RUN_KEYS,
    SCALAR_KEYS,
    SUMMARY_KEYS,
    BinaryView,
    Compression,
    Curves,
    Heatmap,
    PRCurve,
    QScoreReport,
    ReportArrays,
    SampleTable,
    as_report,
    report_json,
    report_scalars,
)
from solo_qscore.report.writer import write_report


@pytest.fixture(scope="module")
def report():
    train_h, train_y = planted_features(300, seed=0)
    val_h, val_y = planted_features(150, seed=1)
    return qscore_report(train_h, train_y, val_h, val_y, ReportConfig(compression=None))


def test_fields_are_the_json_keys_in_file_order(report, tmp_path):
    loaded = json.loads(write_report(report, tmp_path, plots=False).read_text())
    assert list(loaded) == [*REPORT_KEYS, "samples"]  # run context only when set
    assert report.to_json() == loaded
    report["epoch"] = 3
    try:
        assert list(report.to_json()) == [*REPORT_KEYS, "epoch", "samples"]
    finally:
        report["epoch"] = None
    assert set(SCALAR_KEYS) | set(SUMMARY_KEYS) <= set(REPORT_KEYS)
    assert {f.name for f in dataclasses.fields(QScoreReport)} == {*REPORT_KEYS, *RUN_KEYS, "arrays"}


def test_mapping_view_of_the_old_dict(report):
    assert report["auroc"] == report.auroc and report.get("note") is report.note
    assert report["arrays"]["q"] is report.arrays.q
    assert "arrays" in report and "epoch" not in report  # unset run context is not a key
    copy = {**report, "auroc": 0.5}
    assert copy["auroc"] == 0.5 and copy["arrays"] is report.arrays
    with pytest.raises(KeyError, match="not a field"):
        report["auroc_typo"] = 1.0


def test_as_report_of_a_report_is_the_report_itself(report):
    assert as_report(report) is report


def test_as_report_of_probe_json_read_back(report, tmp_path):
    loaded = json.loads(write_report(report, tmp_path, plots=False).read_text())
    typed = as_report(loaded)
    assert isinstance(typed, QScoreReport) and typed.arrays is None  # no arrays in a read-back report
    for key in REPORT_KEYS:
        assert getattr(typed, key) == loaded[key], key
    assert typed.scalars() == report_scalars(loaded) == report_scalars(report)
    assert typed.summary() == report.summary()
    assert report_json(loaded) == loaded  # its own samples entry is kept


def test_as_report_of_mappings_with_arrays(report):
    typed = as_report({**report, "auroc": 0.25, "epoch": 2})
    assert typed.auroc == 0.25 and typed.epoch == 2 and typed.arrays is report.arrays
    partial = as_report({"auroc": 0.7, "arrays": {"q": np.zeros(3)}})
    assert isinstance(partial.arrays, ReportArrays) and partial.arrays.q.shape == (3,)
    assert partial.arrays.probe is None and partial.note is None and partial.band is None


def test_scalars_leave_out_undefined_and_non_finite_values(report):
    degenerate = dict(report.to_json(), auroc=None, auprc=float("nan"), rankme=3.5)
    scalars = report_scalars(degenerate)
    assert "auroc" not in scalars and "auprc" not in scalars and scalars["rankme"] == 3.5
    assert list(report.scalars()) == [k for k in SCALAR_KEYS if report[k] is not None]
    assert all(isinstance(v, (int, float)) for v in scalars.values())


def test_sub_entries_are_typed_and_read_back_typed(tmp_path):
    train_h, train_y = planted_features(300, seed=0)
    val_h, val_y = planted_features(150, seed=1)
    report = qscore_report(train_h, train_y, val_h, val_y,
                           ReportConfig(compression=CompressionSettings((0.5,), num_random_seeds=1)))
    assert isinstance(report.curves, Curves) and isinstance(report.curves.pr, PRCurve)
    assert isinstance(report.compression, Compression)
    arrays = report.arrays
    assert isinstance(arrays.samples, SampleTable) and isinstance(arrays.heatmap, Heatmap)
    assert isinstance(arrays.binary_correct, BinaryView) and isinstance(arrays.binary_misclassified, BinaryView)
    assert report["compression"]["sizes"] == report.compression.sizes  # and still readable by key
    loaded = json.loads(write_report(report, tmp_path, plots=False).read_text())
    assert list(loaded["compression"]) == [f.name for f in dataclasses.fields(Compression)]  # fields = keys, in order
    assert list(loaded["curves"]) == [f.name for f in dataclasses.fields(Curves)]
    typed = as_report(loaded)
    assert isinstance(typed.compression, Compression) and typed.compression.sizes == report.compression.sizes
    assert isinstance(typed.curves.roc.fpr, list) and typed.curves.roc.fpr == loaded["curves"]["roc"]["fpr"]
    assert typed.to_json() == {k: v for k, v in loaded.items() if k != "samples"}
