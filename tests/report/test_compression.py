"""The compression study (solo_qscore.report.compression): sizes, the feature subsets, the accuracies."""

from __future__ import annotations

import pytest
import torch

from solo_qscore.report.build import qscore_report
from solo_qscore.report.compression import compression_masks, compression_sizes
from solo_qscore.report.config import CompressionSettings, ReportConfig
from solo_qscore.report.result import Compression


def test_compression(report):
    comp = report["compression"]
    assert isinstance(comp, Compression) and comp.sizes is comp["sizes"]
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
    rep = qscore_report(train_h, train_y, val_h, val_y,
                        ReportConfig(compression=CompressionSettings((1.0,), num_random_seeds=1, max_train=400)))
    comp = rep["compression"]
    assert comp["num_train"] == 400 and rep["num_train"] == 1200
    # all features but fewer train samples: a fresh probe, close to (not necessarily equal to) the full one
    assert abs(comp["band"][-1] - rep["accuracy"]) < 0.15
    assert comp["band"][-1] == comp["random_mean"][-1] == comp["lower_tail"][-1]


def test_compression_sizes():
    assert compression_sizes(128, 58, (0.25, 0.5, 1.0)) == [32, 58, 64, 128]
    assert compression_sizes(10, 0, (0.0, 0.01, 2.0)) == [1, 10]  # at least 1, at most r; |D| = 0 is no size
