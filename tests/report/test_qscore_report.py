"""The Q-Score report (solo_qscore.report.qscore_report): metrics against scikit-learn, compression, degenerate
cases, associations, writers, wandb."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numba
import numpy as np
import pytest
import torch
from helpers.data_configs import FASHION
from helpers.planted import planted_features
from helpers.real_features import TINY, _features
from sklearn.metrics import average_precision_score, roc_auc_score

from solo_qscore import ActivationStatistics, discriminative_mask, q_score
from solo_qscore.analysis.associations import association_summary, feature_class_associations
from solo_qscore.plotting.figures import associations_figure
from solo_qscore.probe.linear import probe_correctness
from solo_qscore.report.qscore_report import (
    PNG_NAMES,
    compression_masks,
    log_report_to_wandb,
    qscore_report,
    to_jsonable,
    write_report,
)

torch.set_num_threads(1)

# one thread for the numba kernel of the activation statistics too: its idle workers otherwise spin
# against torch's on a busy 2-core machine (a 1-epoch tiny run took 6x the CPU time)
numba.set_num_threads(1)
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


@pytest.fixture(scope="module")
def data():
    train_h, train_y = planted_features(1200, seed=0)
    val_h, val_y = planted_features(600, seed=1)
    return train_h, train_y, val_h, val_y


@pytest.fixture(scope="module")
def report(data):
    return qscore_report(*data, compression_fractions=(0.25, 0.5, 1.0), num_random_seeds=3, batch_size=500)


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


def test_curves(report):
    view = report["arrays"]["binary_correct"]
    # the last ROC point is (1, 1), the PR curve ends at recall 0 with precision 1 (torchmetrics' convention)
    assert view["fpr"][-1] == pytest.approx(1.0) and view["tpr"][-1] == pytest.approx(1.0)
    assert np.all(np.diff(view["fpr"]) >= 0) and np.all(np.diff(view["tpr"]) >= 0)
    assert np.trapezoid(view["tpr"], view["fpr"]) == pytest.approx(report["auroc"], abs=1e-6)
    # the thresholds are mapped back to Q units
    q = report["arrays"]["q"]
    finite = view["roc_thresholds"][np.isfinite(view["roc_thresholds"])]
    assert finite.min() >= q.min() - 1e-9 and finite[1:].max() <= q.max() + 1e-9
    curves = report["curves"]
    for name, keys in (
        ("pr", ("recall", "precision")),
        ("roc", ("fpr", "tpr")),
        ("pr_misclassified", ("recall",)),
    ):
        for key in keys:
            assert 2 <= len(curves[name][key]) <= 200


def test_compression(report):
    comp = report["compression"]
    n_d = report["num_discriminative"]
    r = report["num_features"]
    assert comp["sizes"] == sorted({32, 64, 128, n_d})
    for key in ("band", "random_mean", "random_std", "lower_tail", "upper_tail", "pca"):
        assert len(comp[key]) == len(comp["sizes"])
        assert all(0.0 <= v <= 1.0 for v in comp[key])
    full = comp["sizes"].index(r)
    for key in ("band", "random_mean", "lower_tail", "upper_tail"):
        assert comp[key][full] == pytest.approx(report["accuracy"])
    assert comp["random_std"][full] == 0.0
    # PCA with k = r is a rotation of the full problem: the full probe's accuracy within 1 point
    assert abs(comp["pca"][full] - report["accuracy"]) <= 0.01
    # the discriminative band beats random subsets of the same size on the planted features
    at_d = comp["sizes"].index(n_d)
    assert comp["band"][at_d] > comp["random_mean"][at_d]
    assert comp["full_accuracy"] == report["accuracy"] and comp["num_discriminative"] == n_d


def test_compression_masks_have_the_requested_size(report):
    A = torch.as_tensor(report["arrays"]["A"], dtype=torch.float32)
    D = torch.as_tensor(report["arrays"]["discriminative"])
    n_d = int(D.sum())
    masks = compression_masks(A, D, n_d, num_random_seeds=4)
    assert torch.equal(masks["band"], D)  # at |D| the band is D itself
    assert len(masks["random"]) == 4
    assert all(int(m.sum()) == n_d for m in masks["random"])
    assert len({m.numpy().tobytes() for m in masks["random"]}) == 4  # different seeds, different subsets
    assert int(masks["lower_tail"].sum()) == n_d and int(masks["upper_tail"].sum()) == n_d
    for size in (1, 10, n_d + 11, 120, 128):
        masks = compression_masks(A, D, size, num_random_seeds=1)
        assert int(masks["band"].sum()) == size
        if size < n_d:
            assert bool((masks["band"] & ~D).sum() == 0)  # smaller bands stay inside D
        else:
            assert bool((D & ~masks["band"]).sum() == 0)  # larger bands contain D


def test_compression_on_a_train_subset(data):
    train_h, train_y, val_h, val_y = data
    rep = qscore_report(
        train_h,
        train_y,
        val_h,
        val_y,
        compression_fractions=(1.0,),
        num_random_seeds=1,
        compression_max_train=400,
    )
    comp = rep["compression"]
    assert comp["num_train"] == 400 and rep["num_train"] == 1200
    # all features but fewer train samples: a fresh probe, close to (not necessarily equal to) the full one
    assert abs(comp["band"][-1] - rep["accuracy"]) < 0.15
    assert comp["band"][-1] == comp["random_mean"][-1] == comp["lower_tail"][-1]


def test_single_class_everywhere_gives_null_and_note(data):
    train_h, _, val_h, _ = data
    rep = qscore_report(
        train_h[:300],
        torch.zeros(300, dtype=torch.long),
        val_h[:100],
        torch.zeros(100, dtype=torch.long),
        compression_fractions=(0.5,),
        num_random_seeds=1,
    )
    assert rep["accuracy"] == 1.0
    for key in ("auroc", "auprc", "auroc_misclassified", "auprc_misclassified"):
        assert rep[key] is None
    assert "single class" in rep["note"] and "undefined" in rep["note"]
    assert rep["curves"] is None


def test_single_class_validation_set(data):
    train_h, train_y, val_h, val_y = data
    keep = val_y == 3
    rep = qscore_report(train_h, train_y, val_h[keep], val_y[keep], compression_fractions=None)
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
    rep = qscore_report(h[:300], y[:300], h[300:], y[300:], compression_fractions=(0.5,), num_random_seeds=1)
    assert rep["accuracy"] == 1.0
    assert rep["auroc"] is None and rep["auprc"] is None
    assert "correctly" in rep["note"] and "undefined" in rep["note"]
    assert math.isfinite(rep["q_mean"])


def test_empty_discriminative_set_gives_half_auroc(data):
    train_h, train_y, val_h, val_y = data
    rep = qscore_report(
        train_h, train_y, val_h, val_y, band=(50.0, 50.1), compression_fractions=(0.5,), num_random_seeds=1
    )
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
    assert names == sorted(["probe.json", "samples.csv"] + [f"{n}.png" for n in PNG_NAMES])  # no temp files left
    for name in PNG_NAMES:
        png = path.parent / f"{name}.png"
        width, height = _png_size(png)
        assert 400 <= width <= 2500 and 300 <= height <= 1500, (name, width, height)
        assert 10_000 < png.stat().st_size < 1_000_000


def test_write_report_degenerate_and_without_plots(data, tmp_path):
    train_h, _, val_h, _ = data
    rep = qscore_report(
        train_h[:200],
        torch.zeros(200, dtype=torch.long),
        val_h[:50],
        torch.zeros(50, dtype=torch.long),
        compression_fractions=None,
    )
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


def test_png_write_is_atomic(report, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from solo_qscore.plotting.figures import q_histogram_figure, save_figure_atomic

    target = tmp_path / "q.png"
    fig = q_histogram_figure(report["arrays"]["q"], report["arrays"]["correct"], report["auroc"])
    save_figure_atomic(fig, target)
    before = target.read_bytes()
    _png_size(target)

    def broken_savefig(self, fname, *args, **kwargs):
        fname.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        save_figure_atomic(fig, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["q.png"]


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


def test_wandb_offline_logging(report, tmp_path, monkeypatch):
    import wandb
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    g = torch.Generator().manual_seed(0)
    train_h, val_h = torch.rand(200, 32, generator=g), torch.rand(50, 32, generator=g)
    degenerate = qscore_report(
        train_h,
        torch.zeros(200, dtype=torch.long),
        val_h,
        torch.zeros(50, dtype=torch.long),
        compression_fractions=None,
    )
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
    for name in PNG_NAMES:
        assert any(image.startswith(name) for image in images), (name, images)
    tables = list((run_dir / "media" / "table" / "probe").glob("*.table.json"))
    assert len(tables) >= 3


def test_wandb_lightning_logger(report, tmp_path, monkeypatch):
    import wandb  # noqa: F401
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(project="solo-qscore-test", save_dir=str(tmp_path), offline=True)
    try:
        payload = log_report_to_wandb(report, logger, prefix="val_probe", step=7)
        assert logger.experiment.summary["val_probe/auroc"] == pytest.approx(report["auroc"])
        assert payload["trainer/global_step"] == 7
    finally:
        logger.experiment.finish()


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
    report = qscore_report(train_h, train_y, val_h, val_y, eps=2.0, compression_fractions=None,
                           class_names=FASHION, associations_max_features=8)
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
        qscore_report(train_h, train_y, val_h, val_y, compression_fractions=None, class_names=FASHION[:3])


def test_report_with_empty_discriminative_set(features, tmp_path):
    train_h, train_y, val_h, val_y = features[0]
    report = qscore_report(train_h, train_y, val_h, val_y, eps=2.0, band=(50.0, 50.01), compression_fractions=None)
    entry = report["associations"]
    assert entry["num_features"] == 0 and entry["features"] == [] and "empty" in entry["note"]
    assert entry["class_names"] is None
    write_report(report, tmp_path)
    assert (tmp_path / "associations.png").stat().st_size > 5_000
