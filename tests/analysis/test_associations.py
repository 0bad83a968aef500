"""Class-feature associations (solo_qscore.analysis.associations, paper Fig. 1 bar plots) on hand-computed
examples, and the class names of datasets."""

from __future__ import annotations

import json

import pytest
import torch
from helpers.data_configs import FASHION

from solo_qscore import highly_activating
from solo_qscore.analysis.associations import (
    association_summary,
    association_table,
    class_activation_counts,
    dataset_class_names,
    feature_class_associations,
)
from solo_qscore.plotting import associations_figure
from solo_qscore.report.result import to_jsonable


def spikes(rows: list[set[int]], r: int = 6) -> torch.Tensor:
    """Rows of zeros with 1.0 at the given features: at eps = 1 exactly the spikes are highly activating
    (one spike: threshold 1/6 + 0.373 = 0.54; two spikes: 2/6 + 0.471 = 0.80; both below 1)."""
    h = torch.zeros(len(rows), r)
    for i, cols in enumerate(rows):
        h[i, sorted(cols)] = 1.0
    return h


# samples 0-1: class 0, 2-3: class 1, 4-5: class 2
H = spikes([{0, 1}, {0}, {1, 2}, {1}, {2, 3}, {1}])
Y = torch.tensor([0, 0, 1, 1, 2, 2])

# M_cj = #{i : y_i = c, j in L_i}, counted by hand from the rows above
M = torch.tensor([[2, 1, 0, 0, 0, 0],
                  [0, 2, 1, 0, 0, 0],
                  [0, 1, 1, 1, 0, 0]])


def test_highly_activating_sets_are_the_spikes():
    assert torch.equal(highly_activating(H, 1.0), H > 0)


def test_hand_computed_associations():
    a = feature_class_associations(H, Y, eps=1.0)
    assert torch.equal(a.features, torch.arange(6))
    assert torch.equal(a.counts, M)
    assert a.support.tolist() == [2, 4, 2, 1, 0, 0]
    assert a.class_sizes.tolist() == [2, 2, 2] and a.num_samples == 6
    expected = torch.tensor([[1, 1 / 4, 0, 0, 0, 0], [0, 2 / 4, 1 / 2, 0, 0, 0], [0, 1 / 4, 1 / 2, 1, 0, 0]],
                            dtype=torch.float64)
    torch.testing.assert_close(a.fractions, expected)
    torch.testing.assert_close(a.coverage, M.double() / 2)
    assert a.top_class.tolist() == [0, 1, 1, 2, -1, -1]  # feature 2: tie of classes 1 and 2 -> lower index
    torch.testing.assert_close(a.purity[:4], torch.tensor([1.0, 0.5, 0.5, 1.0], dtype=torch.float64))
    assert bool(a.purity[4:].isnan().all())  # no activating sample: undefined
    torch.testing.assert_close(a.activation_frequency, torch.tensor([2, 4, 2, 1, 0, 0]) * 100 / 6,
                               check_dtype=False)
    # a feature mask keeps those columns, in feature order
    d = torch.tensor([False, True, True, False, True, False])
    sub = feature_class_associations(H, Y, features=d, eps=1.0)
    assert sub.features.tolist() == [1, 2, 4]
    assert torch.equal(sub.counts, M[:, [1, 2, 4]])


def test_class_activation_counts_is_one_hot_transpose_times_L():
    active = H > 0
    one_hot = torch.nn.functional.one_hot(Y, 3)
    assert torch.equal(class_activation_counts(active, Y), one_hot.t().long() @ active.long())
    assert torch.equal(class_activation_counts(active, Y, num_classes=5)[3:], torch.zeros(2, 6, dtype=torch.long))


def test_hand_computed_table_and_summary():
    a = feature_class_associations(H, Y, eps=1.0)
    rows = association_table(a, max_features=10, top_k=2, min_support=2, class_names=["a", "b", "c"])
    # support >= 2 first (features 0, 1, 2 by the purity's lower bound), then feature 3 (n = 1); 4, 5 left out
    assert [r["feature"] for r in rows] == [0, 1, 2, 3]
    # Wilson bounds by hand: (p + z²/2n - z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n), z = 1.96
    assert [r["purity_lower_bound"] for r in rows] == pytest.approx([0.3424, 0.1500, 0.0945, 0.2065], abs=1e-4)
    assert rows[1]["top_classes"] == [1, 0]  # 0.5, then the tie 0.25/0.25 goes to class 0
    assert rows[1]["top_fractions"] == pytest.approx([0.5, 0.25])
    assert rows[1]["top_coverage"] == pytest.approx([1.0, 0.5])
    assert rows[1]["top_priors"] == pytest.approx([1 / 3, 1 / 3])
    assert rows[1]["top_class_names"] == ["b", "a"] and rows[0]["top_class_name"] == "a"
    assert rows[0]["top_classes"] == [0]  # classes with no activating sample are not listed
    assert rows[1]["activation_frequency"] == pytest.approx(400 / 6)
    # min_support 5: no feature qualifies, so all are ranked by the bound: 0.342 (n=2), 0.207 (n=1), 0.150
    assert [r["feature"] for r in association_table(a, max_features=3)] == [0, 3, 1]
    summary = association_summary(a, class_names=["a", "b", "c"], min_support=2)
    assert summary["num_features"] == 6 and summary["num_features_activated"] == 4
    assert summary["mean_purity"] == pytest.approx((1 + 0.5 + 0.5 + 1) / 4)
    assert summary["median_purity"] == pytest.approx(0.5)  # torch's median: the lower of the two middle values
    assert summary["features_per_top_class"] == [1, 2, 1]
    assert summary["max_prior"] == pytest.approx(1 / 3)
    assert "2 of 6 features" in summary["note"] and "fewer than 2" in summary["note"]
    json.dumps(to_jsonable(summary), allow_nan=False)  # strict JSON


def test_fractions_sum_to_one_and_single_class_feature_has_purity_one():
    g = torch.Generator().manual_seed(0)
    h = torch.rand(300, 40, generator=g) ** 4  # sparse-ish, like post-ReLU features
    y = torch.randint(0, 5, (300,), generator=g)
    h = torch.cat([h, torch.where(y == 3, 5.0, 0.0)[:, None]], dim=1)  # feature 40 fires only for class 3
    a = feature_class_associations(h, y, eps=2.0)
    active = a.support > 0
    assert int(active.sum()) > 30
    torch.testing.assert_close(a.fractions[:, active].sum(0), torch.ones(int(active.sum()), dtype=torch.float64))
    assert int(a.top_class[40]) == 3 and float(a.purity[40]) == 1.0
    assert float(a.coverage[3, 40]) == 1.0  # every class-3 sample activates it
    assert torch.equal(a.support, highly_activating(h, 2.0).sum(0))
    # chunking does not change anything
    b = feature_class_associations(h, y, eps=2.0, chunk_size=7)
    assert torch.equal(a.counts, b.counts)


def test_shuffled_purity_baseline():
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 4, (400,), generator=g)
    h = torch.rand(400, 30, generator=g) ** 4
    h = torch.cat([h, torch.full((400, 1), 9.0)], dim=1)  # feature 30 is active for every sample
    a = feature_class_associations(h, y, eps=2.0)
    assert int(a.support[30]) == 400
    s = association_summary(a, min_support=1)
    prior = float(torch.bincount(y).max()) / 400
    # with support N the shuffled draw is the whole population: purity = the largest prior exactly
    only = association_summary(feature_class_associations(h, y, features=torch.arange(31) == 30, eps=2.0))
    assert only["mean_purity_shuffled"] == pytest.approx(prior) and only["mean_purity"] == pytest.approx(prior)
    assert s == association_summary(a, min_support=1)  # seeded: deterministic
    assert prior <= s["mean_purity_shuffled"] <= 1.0
    # a single class: every purity is 1, shuffled or not
    one = association_summary(feature_class_associations(h, torch.zeros(400, dtype=torch.long), eps=2.0))
    assert one["mean_purity"] == 1.0 and one["mean_purity_shuffled"] == 1.0


def test_empty_feature_set_gives_empty_result_and_note():
    a = feature_class_associations(H, Y, features=torch.zeros(6, dtype=torch.bool), eps=1.0)
    assert a.features.numel() == 0 and a.counts.shape == (3, 0)
    s = association_summary(a)
    assert s["features"] == [] and s["mean_purity"] is None and "empty" in s["note"]
    fig = associations_figure(s["features"])
    assert "no class association" in fig.texts[0].get_text() or any(
        "no class association" in t.get_text() for ax in fig.axes for t in ax.texts)


def test_no_activating_sample_gives_defined_result_and_note():
    h = torch.ones(5, 6)  # sigma = 0: every L_i is empty
    a = feature_class_associations(h, torch.tensor([0, 1, 0, 1, 0]), eps=1.0)
    assert a.support.tolist() == [0] * 6 and a.top_class.tolist() == [-1] * 6
    assert bool(a.purity.isnan().all()) and float(a.fractions.abs().sum()) == 0.0
    s = association_summary(a)
    assert s["mean_purity"] is None and s["features"] == [] and "no sample" in s["note"]
    assert s["features_per_top_class"] == [0, 0]


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="integer class indices"):
        feature_class_associations(H, Y.float())
    with pytest.raises(ValueError, match="1-D tensor of 6"):
        feature_class_associations(H, Y[:4])
    with pytest.raises(ValueError, match="negative"):
        feature_class_associations(H, Y - 1)
    with pytest.raises(ValueError, match="num_classes=2"):
        feature_class_associations(H, Y, num_classes=2)
    with pytest.raises(ValueError, match="NaN or Inf"):
        feature_class_associations(torch.where(H > 0, float("nan"), 0.0), Y)
    with pytest.raises(ValueError, match="features has shape"):
        feature_class_associations(H, Y, features=torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="chunk_size"):
        feature_class_associations(H, Y, chunk_size=0)
    with pytest.raises(ValueError, match="bool tensor"):
        class_activation_counts(H, Y)
    a = feature_class_associations(H, Y, eps=1.0)
    with pytest.raises(ValueError, match="2 names but there are 3 classes"):
        association_table(a, class_names=["a", "b"])
    with pytest.raises(ValueError, match="top_k >= 1"):
        association_table(a, top_k=0)


def test_dataset_class_names():
    from solo_qscore.data import make_eval_loaders
    from solo_qscore.data.trifeature import SHAPE_NAMES

    assert dataset_class_names("fashion_mnist") == FASHION
    assert dataset_class_names("cifar10")[0] == "airplane" and dataset_class_names("imagenet") is None
    train_loader, _ = make_eval_loaders({"dataset": "fashion_mnist", "train_subset": 16, "val_subset": 16,
                                         "num_workers": 0})
    assert dataset_class_names(train_loader.dataset) == FASHION  # through the subset/transform wrappers
    with pytest.warns(UserWarning):  # cifar10 is not on disk: the names of the data actually loaded
        fallback, _ = make_eval_loaders({"dataset": "cifar10", "fallback": "fashion_mnist", "train_subset": 16,
                                         "val_subset": 16, "num_workers": 0})
    assert dataset_class_names(fallback.dataset) == FASHION

    class Trifeature:  # the attributes dataset_class_names reads from a TrifeatureDataset
        name, target = "trifeature", "shape"

    assert dataset_class_names(Trifeature()) == list(SHAPE_NAMES)
