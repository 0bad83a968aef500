"""The Q-Score report's computation (solo_qscore.report.build): its fields against scikit-learn and the core API,
degenerate cases (one class, all correct, empty D, NaN), the class-feature associations, the probe-fit bar."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.data_configs import FASHION
from helpers.real_features import TINY, _features
from helpers.terminal import FakeTerminal
from sklearn.metrics import average_precision_score, roc_auc_score

from solo_qscore import ActivationStatistics, discriminative_mask, q_score
from solo_qscore.analysis.associations import association_summary, feature_class_associations
from solo_qscore.plotting import associations_figure
from solo_qscore.probe.linear import probe_correctness
from solo_qscore.report.build import qscore_report
from solo_qscore.report.config import AssociationSettings, CompressionSettings, ReportConfig
from solo_qscore.report.result import to_jsonable
from solo_qscore.report.writer import write_report

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

NO_STUDY = ReportConfig(compression=None)
#: a one-size study, one random seed: cheap, and the report's code path with a study
SMALL_STUDY = ReportConfig(compression=CompressionSettings((0.5,), num_random_seeds=1))


def test_required_keys_and_basic_values(report, data):
    train_h, _, val_h, _ = data
    assert REQUIRED_KEYS <= set(report)
    assert report["num_features"] == 128
    assert report["num_train"] == len(train_h) and report["num_val"] == len(val_h)
    assert report["eps"] == 4.0 and report["band"] == [50.0, 95.0]
    assert report["num_discriminative"] == round(0.95 * 128) - round(0.5 * 128)  # docs/CONVENTIONS.md: ranks 64..121
    assert report["note"] is None
    assert 0.0 <= report["auroc"] <= 1.0 and 0.0 <= report["auprc"] <= 1.0
    assert report["base_rate"] == report["accuracy"]
    assert 0.4 < report["accuracy"] < 0.95  # a problem with both outcomes
    # the planted structure: Q separates correct from misclassified, better than chance
    assert report["auroc"] > 0.6
    assert report["auprc"] > report["base_rate"]
    assert report["q_mean_correct"] > report["q_mean_misclassified"]
    q = report["arrays"]["q"]
    assert report["q_mean"] == pytest.approx(float(q.mean()))
    assert list(report["q_quantiles"]) == ["0.05", "0.25", "0.5", "0.75", "0.95"]
    assert report["q_quantiles"]["0.5"] == pytest.approx(float(np.quantile(q, 0.5)))


def test_metrics_equal_sklearn(report):
    q = report["arrays"]["q"]
    correct = report["arrays"]["correct"]
    assert report["auroc"] == pytest.approx(roc_auc_score(correct, q), abs=1e-6)
    assert report["auprc"] == pytest.approx(average_precision_score(correct, q), abs=1e-6)
    # mirrored view: positive = misclassified, score = -Q
    assert report["auroc_misclassified"] == pytest.approx(roc_auc_score(~correct, -q), abs=1e-6)
    assert report["auprc_misclassified"] == pytest.approx(average_precision_score(~correct, -q), abs=1e-6)
    assert report["auroc_misclassified"] == pytest.approx(report["auroc"], abs=1e-6)  # AUROC is symmetric
    assert report["base_rate_misclassified"] == pytest.approx(1.0 - report["accuracy"])


def test_report_is_consistent_with_the_core_api(report, data):
    train_h, train_y, val_h, val_y = data
    stats = ActivationStatistics(128)
    stats.update(train_h)
    D = discriminative_mask(stats.compute())
    assert np.array_equal(report["arrays"]["discriminative"], D.numpy())
    assert report["mean_active"] == pytest.approx(stats.mean_active)
    np.testing.assert_allclose(
        report["arrays"]["q"], q_score(val_h, D).double().numpy(), rtol=1e-6, atol=1e-7
    )
    result = probe_correctness(train_h, train_y, val_h, val_y)
    assert np.array_equal(report["arrays"]["correct"], result.correct.numpy())
    assert report["accuracy"] == pytest.approx(result.accuracy)


def test_single_class_everywhere_gives_null_and_note(data):
    train_h, _, val_h, _ = data
    rep = qscore_report(
        train_h[:300],
        torch.zeros(300, dtype=torch.long),
        val_h[:100],
        torch.zeros(100, dtype=torch.long),
        SMALL_STUDY,
    )
    assert rep["accuracy"] == 1.0
    for key in ("auroc", "auprc", "auroc_misclassified", "auprc_misclassified"):
        assert rep[key] is None
    assert "single class" in rep["note"] and "undefined" in rep["note"]
    assert rep["curves"] is None


def test_single_class_validation_set(data):
    train_h, train_y, val_h, val_y = data
    keep = val_y == 3
    rep = qscore_report(train_h, train_y, val_h[keep], val_y[keep], NO_STUDY)
    assert "single class (3)" in rep["note"]
    assert rep["compression"] is None
    correct = rep["arrays"]["correct"]
    if 0 < correct.sum() < correct.size:  # both outcomes: the metrics are defined
        assert rep["auroc"] == pytest.approx(roc_auc_score(correct, rep["arrays"]["q"]), abs=1e-6)


def test_all_correct_probe_gives_null_and_note():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(400) % 4
    h = torch.rand(400, 64, generator=g) * 0.05
    h[torch.arange(400), y] += 2.0  # trivially separable: the probe gets everything right
    rep = qscore_report(h[:300], y[:300], h[300:], y[300:], SMALL_STUDY)
    assert rep["accuracy"] == 1.0
    assert rep["auroc"] is None and rep["auprc"] is None
    assert "correctly" in rep["note"] and "undefined" in rep["note"]
    assert math.isfinite(rep["q_mean"])


def test_empty_discriminative_set_gives_half_auroc(data):
    train_h, train_y, val_h, val_y = data
    rep = qscore_report(train_h, train_y, val_h, val_y, SMALL_STUDY.replace(band=(50.0, 50.1)))
    assert rep["num_discriminative"] == 0
    assert np.all(rep["arrays"]["q"] == 0.0) and rep["q_mean"] == 0.0
    assert rep["auroc"] == pytest.approx(0.5)
    assert rep["auprc"] == pytest.approx(rep["base_rate"], abs=1e-6)
    assert "D is empty" in rep["note"]
    assert rep["compression"]["sizes"] == [64]  # |D| = 0 is not a size


def test_nan_features_raise(data):
    train_h, train_y, val_h, val_y = data
    bad = val_h.clone()
    bad[5, 2] = float("nan")
    with pytest.raises(ValueError, match=r"val_h contains NaN or Inf"):
        qscore_report(train_h, train_y, bad, val_y)
    bad = train_h.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"train_h contains NaN or Inf"):
        qscore_report(bad, train_y, val_h, val_y)
    with pytest.raises(ValueError, match="features"):
        qscore_report(train_h, train_y, val_h[:, :10], val_y)


def test_associations_find_the_planted_class_concepts(report):
    """Each class owns 8 planted concept features: the table's top class of a feature is its owner."""
    roles = np.random.default_rng(1234).permutation(128)  # the feature roles of planted_features
    owner = {int(j): c for c, features in enumerate(roles[:64].reshape(8, 8)) for j in features}
    entry = report["associations"]
    rows = entry["features"]
    assert len(rows) == 12 and entry["num_features"] == report["num_discriminative"]
    assert [owner.get(row["feature"]) for row in rows] == [row["top_class"] for row in rows]
    assert all(row["purity"] > 0.6 for row in rows)
    # far above the chance level of shuffled labels, which is itself above the largest prior
    assert entry["mean_purity"] > 2.5 * entry["mean_purity_shuffled"] > 2.5 * entry["max_prior"]
    assert report["class_names"] is None and "top_class_names" not in rows[0]


# ----------------------------------------------------------------- associations on real features
@pytest.fixture(scope="module")
def features(tmp_path_factory):
    """``(features of a 1-epoch SimCLR run on 32 Fashion-MNIST images,)``: the first checkpoint of
    tests/cli/test_compare.py, evaluated on 120 train and 60 validation images."""
    from conftest import tiny_pretrain

    before = Path(tiny_pretrain(tmp_path_factory.mktemp("associations") / "before", "simclr", *TINY)["checkpoint"])
    return (_features(before),)


def test_report_associations_entry(features, tmp_path):
    train_h, train_y, val_h, val_y = features[0]
    config = ReportConfig(eps=2.0, compression=None, associations=AssociationSettings(max_features=8))
    report = qscore_report(train_h, train_y, val_h, val_y, config, class_names=FASHION)
    entry = report["associations"]
    D = torch.as_tensor(report["arrays"]["discriminative"])
    assoc = feature_class_associations(train_h, train_y, D, eps=2.0, num_classes=10)
    expected = association_summary(assoc, class_names=FASHION, max_features=8)
    assert entry == {**expected, "population": "train"}
    assert entry["num_features"] == report["num_discriminative"] == int(D.sum()) > 0
    assert entry["num_samples"] == 120 and entry["class_names"] == FASHION == report["class_names"]
    assert 0 < len(entry["features"]) <= 8
    A = torch.as_tensor(report["arrays"]["A"])
    for row in entry["features"]:  # the table agrees with A_j of the report (same population, same L_i)
        assert D[row["feature"]]
        assert row["activation_frequency"] == pytest.approx(float(A[row["feature"]]), abs=1e-4)
        assert row["top_class_name"] == FASHION[row["top_class"]] and row["top_class"] == row["top_classes"][0]
        assert row["purity"] == pytest.approx(row["top_fractions"][0])
        assert sum(row["top_fractions"]) <= 1 + 1e-12
    bounds = [row["purity_lower_bound"] for row in entry["features"] if row["support"] >= entry["min_support"]]
    assert bounds == sorted(bounds, reverse=True)
    assert sum(entry["features_per_top_class"]) == entry["num_features_activated"]

    path = write_report(report, tmp_path)
    loaded = json.loads(path.read_text())
    assert loaded["associations"] == json.loads(json.dumps(to_jsonable(entry)))
    png = tmp_path / "associations.png"
    width, height = struct.unpack(">II", png.read_bytes()[16:24])
    assert 800 <= width <= 2000 and 400 <= height <= 1500 and png.stat().st_size > 20_000
    # one bar panel per table row, bars = top classes, labelled by class name
    fig = associations_figure(entry["features"], FASHION)
    visible = [ax for ax in fig.axes if ax.axison]
    assert len(visible) == len(entry["features"])
    for ax, row in zip(visible, entry["features"]):
        heights = [p.get_height() for p in ax.patches]
        assert heights == pytest.approx([100 * f for f in row["top_fractions"]])
        assert [t.get_text() for t in ax.get_xticklabels()] == row["top_class_names"]
    with pytest.raises(ValueError, match="class_names has 3 names"):
        qscore_report(train_h, train_y, val_h, val_y, NO_STUDY, class_names=FASHION[:3])


def test_report_with_empty_discriminative_set(features, tmp_path):
    train_h, train_y, val_h, val_y = features[0]
    report = qscore_report(train_h, train_y, val_h, val_y, ReportConfig(eps=2.0, band=(50.0, 50.01), compression=None))
    entry = report["associations"]
    assert entry["num_features"] == 0 and entry["features"] == [] and "empty" in entry["note"]
    assert entry["class_names"] is None
    write_report(report, tmp_path)
    assert (tmp_path / "associations.png").stat().st_size > 5_000


def test_probe_fit_bar_counts_every_fit(data, monkeypatch):
    import solo_qscore.report.build as build_module
    from solo_qscore._progress import progress

    monkeypatch.delenv("CI", raising=False)
    stream, bars = FakeTerminal(), []

    def recording_progress(*args, **kwargs):
        # mininterval=0: draw every update (tqdm otherwise skips redraws within 0.1 s, e.g. the last one)
        bars.append(progress(*args, **{**kwargs, "delay": 0, "mininterval": 0, "file": stream}))
        return bars[-1]

    monkeypatch.setattr(build_module, "progress", recording_progress)
    train_h, train_y, val_h, val_y = (x[:300] for x in data)
    qscore_report(train_h, train_y, val_h, val_y,
                  ReportConfig(compression=CompressionSettings((0.5, 1.0), num_random_seeds=2)))
    (bar,) = bars
    # 1 probe + per size: band, 2 random, 2 tails, PCA (the all-features subset is the probe's own)
    assert bar.n == bar.total and bar.total >= 1 + 2
    assert "linear probe fits" in stream.getvalue() and f"{bar.total}/{bar.total}" in stream.getvalue()
