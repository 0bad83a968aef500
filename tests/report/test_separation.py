"""Q as a predictor of correctness (solo_qscore.report.separation): the full binary views, the curves kept in
probe.json, the notes of undefined or trivial metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from solo_qscore.report.result import BinaryView, Curves
from solo_qscore.report.separation import binary_view, separation, subsample, subsampled_curves, unit_ranks


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


def test_binary_view_of_scores_outside_the_unit_interval():
    """Scores are mapped to [0, 1] by an affine map (torchmetrics would take them for logits): the metrics are
    those of the raw scores, the thresholds come back in the scores' units."""
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(200, generator=g, dtype=torch.float64) * 30 + 100
    positive = torch.rand(200, generator=g) < torch.sigmoid((scores - 100) / 30)
    view = binary_view(scores, positive)
    assert isinstance(view, BinaryView)
    assert view.auroc == pytest.approx(roc_auc_score(positive.numpy(), scores.numpy()), abs=1e-6)
    assert view.auprc == pytest.approx(average_precision_score(positive.numpy(), scores.numpy()), abs=1e-6)
    finite = view.roc_thresholds[np.isfinite(view.roc_thresholds)]
    assert finite[1:].min() >= float(scores.min()) - 1e-9 and finite[1:].max() <= float(scores.max()) + 1e-9


def test_undefined_and_trivial_separation_say_why():
    notes: list[str] = []
    assert separation(torch.rand(10, dtype=torch.float64), torch.ones(10, dtype=torch.bool), 3, notes) == (None, None)
    assert "all 10 validation samples correctly" in notes[0]
    notes = []
    view, mirror = separation(torch.zeros(10, dtype=torch.float64), torch.arange(10) % 2 == 0, 3, notes)
    assert view.auroc == pytest.approx(0.5) and mirror.auroc == pytest.approx(0.5)
    assert "Q is constant" in notes[0]
    assert subsampled_curves(None, None, 10) is None


def test_subsampled_curves_keep_both_ends():
    assert list(subsample(5, 10)) == [0, 1, 2, 3, 4]
    idx = subsample(1000, 7)
    assert idx[0] == 0 and idx[-1] == 999 and len(idx) == 7
    g = torch.Generator().manual_seed(0)
    q = torch.rand(500, generator=g, dtype=torch.float64)
    correct = torch.rand(500, generator=g) < q
    view, mirror = separation(q, correct, 1, [])
    curves = subsampled_curves(view, mirror, 20)
    assert isinstance(curves, Curves) and len(curves.pr.recall) <= 20 and len(curves.roc.fpr) <= 20
    assert curves.roc.fpr[-1] == view.fpr[-1] and curves.pr.recall[0] == view.recall[0]
    assert curves["pr_misclassified"]["precision"] == curves.pr_misclassified.precision  # the dict view too


def test_unit_ranks_keep_order_and_ties_in_the_unit_interval():
    scores = torch.tensor([43.0, 40.0, 1e9, 40.0, -7.0], dtype=torch.float64)
    ranks = unit_ranks(scores)
    assert torch.allclose(ranks, torch.tensor([2 / 3, 1 / 3, 1.0, 1 / 3, 0.0], dtype=torch.float64))
    assert unit_ranks(torch.tensor([3.0, 3.0])).tolist() == [0.0, 0.0]
