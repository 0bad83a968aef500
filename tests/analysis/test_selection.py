"""Ranking checkpoints without labels (solo_qscore.analysis.selection): Kendall's tau-b and Spearman's rho
against scipy.stats, the bootstrap interval, the selection regret and the per-(metric, group) table."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from solo_qscore.analysis import selection
from solo_qscore.analysis.selection import (
    METRIC_DIRECTIONS,
    bootstrap_interval,
    kendall_tau,
    oriented_score,
    preferred_index,
    rank_correlations,
    selection_regret,
    spearman_rho,
)

pytestmark = pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")

RNG = np.random.default_rng(7)
CASES = {
    "continuous": (RNG.normal(size=24), RNG.normal(size=24)),
    "ties in both": (RNG.integers(0, 4, size=20).astype(float), RNG.integers(0, 3, size=20).astype(float)),
    "ties in x only": (np.array([1.0, 1, 2, 2, 2, 3, 4, 4]), np.array([0.1, 0.5, 0.2, 0.9, 0.3, 0.8, 0.6, 0.7])),
    "negative": (np.arange(10.0), -np.arange(10.0) ** 2),
    "two values": (np.array([0.0, 1.0]), np.array([3.0, 2.0])),
}


@pytest.mark.parametrize("case", CASES)
def test_kendall_and_spearman_equal_scipy(case):
    x, y = CASES[case]
    assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    assert spearman_rho(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_perfect_orders_and_constants():
    x = np.array([0.3, 0.1, 0.7, 0.5])
    assert kendall_tau(x, 2 * x + 1) == pytest.approx(1.0) and spearman_rho(x, np.exp(x)) == pytest.approx(1.0)
    assert kendall_tau(x, -x) == pytest.approx(-1.0) and spearman_rho(x, -x) == pytest.approx(-1.0)
    for statistic in (kendall_tau, spearman_rho):
        assert math.isnan(statistic(x, np.full(4, 0.2)))  # constant y
        assert math.isnan(statistic(np.ones(4), x))  # constant x
        assert math.isnan(statistic([1.0], [2.0]))  # one value
        assert math.isnan(statistic([1.0, np.nan, 3.0], [1.0, 2.0, 3.0]))  # not finite
    with pytest.raises(ValueError, match="same length"):
        kendall_tau([1, 2, 3], [1, 2])


def test_bootstrap_interval_of_a_strong_correlation_contains_the_estimate():
    x = np.arange(20.0)
    y = x + np.random.default_rng(1).normal(scale=3.0, size=20)
    for statistic in (kendall_tau, spearman_rho):
        low, high = bootstrap_interval(x, y, statistic, resamples=500, seed=3)
        assert 0.0 < low <= statistic(x, y) <= high <= 1.0
    low, high = bootstrap_interval(x, y, kendall_tau, resamples=500, seed=3)
    narrow = bootstrap_interval(x, y, kendall_tau, resamples=500, seed=3, level=0.5)
    assert narrow[0] >= low and narrow[1] <= high  # a lower level, a narrower interval, the same resamples
    assert bootstrap_interval(x, y, kendall_tau, resamples=500, seed=3) == (low, high)  # seeded


def test_batched_bootstrap_equals_one_scipy_call_per_resample(monkeypatch):
    """The vectorised path (in chunks) gives the interval of calling scipy on each resample; NaN dropped."""
    x, y = CASES["ties in both"]
    monkeypatch.setattr(selection, "_BOOTSTRAP_CHUNK", 7 * x.size ** 2)  # 7 resamples per chunk
    for ours, theirs in ((kendall_tau, stats.kendalltau), (spearman_rho, stats.spearmanr)):
        expected = bootstrap_interval(x, y, lambda a, b, f=theirs: f(a, b).statistic, resamples=200, seed=5)
        assert bootstrap_interval(x, y, ours, resamples=200, seed=5) == pytest.approx(expected, abs=1e-12)


def test_bootstrap_drops_undefined_resamples():
    x, y = np.array([0.0, 0.0, 0.0, 1.0]), np.array([0.0, 1.0, 2.0, 3.0])  # many resamples have x constant
    low, high = bootstrap_interval(x, y, kendall_tau, resamples=300)
    assert np.isfinite([low, high]).all()
    assert all(math.isnan(v) for v in bootstrap_interval(np.ones(5), y[:4].tolist() + [4.0], kendall_tau))
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(x, y, kendall_tau, level=1.0)


def test_regret_is_zero_when_the_metric_orders_like_accuracy():
    accuracy = np.array([0.61, 0.72, 0.55, 0.80])
    assert selection_regret(accuracy * 10 - 3, accuracy) == 0.0
    assert selection_regret(-accuracy, accuracy, higher_is_better=False) == 0.0
    assert selection_regret([4.0, 3.0, 2.0, 1.0], accuracy) == pytest.approx(0.80 - 0.61)


def test_regret_breaks_ties_pessimistically_and_skips_undefined_scores():
    accuracy = [0.7, 0.9, 0.6, 0.8]
    assert preferred_index([1.0, 2.0, 2.0, 0.0], accuracy) == 2  # tied at 2.0: the worse accuracy of the two
    assert selection_regret([1.0, 2.0, 2.0, 0.0], accuracy) == pytest.approx(0.3)
    assert preferred_index([1.0, 2.0, 2.0, 0.0]) == 1  # without accuracy: the first
    assert preferred_index([np.nan, 0.5, np.nan, 0.1], accuracy) == 1
    assert selection_regret([np.nan, 0.5, np.nan, 0.1], accuracy) == pytest.approx(0.0)  # best of the finite
    assert preferred_index([np.nan, np.nan]) is None and math.isnan(selection_regret([np.nan], [0.5]))


def test_oriented_score_makes_every_metric_higher_is_better():
    assert set(METRIC_DIRECTIONS) == {"q_mean", "nonempty_fraction", "num_discriminative", "rankme", "lidar",
                                      "embedding_std", "alpha_req"}
    np.testing.assert_array_equal(oriented_score("rankme", [3.0, 5.0]), [3.0, 5.0])
    np.testing.assert_allclose(oriented_score("alpha_req", [0.5, 1.0, 1.8, np.nan]), [-0.5, 0.0, -0.8, np.nan])
    with pytest.raises(ValueError, match="unknown metric 'accuracy'"):
        oriented_score("accuracy", [1.0])


def test_rank_correlations_rows_per_metric_and_group():
    accuracy = np.array([0.50, 0.60, 0.70, 0.80, 0.40, 0.45, 0.65])
    groups = ["simclr"] * 4 + ["byol"] * 2 + ["vicreg"]
    metrics = {"rankme": [50.0, 60.0, 70.0, 80.0, 40.0, 45.0, 65.0],  # ranks exactly like accuracy
               "alpha_req": [2.0, 1.6, 1.3, 1.05, 0.2, 0.3, 1.4]}  # closer to 1 is better: also like accuracy
    rows = rank_correlations(metrics, accuracy, groups, resamples=200)
    assert [(r["metric"], r["group"], r["n"]) for r in rows] == [
        ("rankme", "all", 7), ("rankme", "simclr", 4), ("rankme", "byol", 2), ("rankme", "vicreg", 1),
        ("alpha_req", "all", 7), ("alpha_req", "simclr", 4), ("alpha_req", "byol", 2), ("alpha_req", "vicreg", 1)]
    for r in (rows[0], rows[1], rows[5]):
        assert r["kendall_tau"] == pytest.approx(1.0) and r["spearman_rho"] == pytest.approx(1.0)
        assert r["kendall_ci"] == [pytest.approx(1.0)] * 2 and r["regret"] == 0.0
        assert r["picked_accuracy"] == r["best_accuracy"]
    alpha_all = rows[4]  # alpha = 2.0 (0.50) is the furthest from 1 but not the worst: two discordant pairs
    expected = stats.kendalltau(-np.abs(np.array(metrics["alpha_req"]) - 1), accuracy).statistic
    assert alpha_all["kendall_tau"] == pytest.approx(expected) and 0.5 < expected < 1.0
    assert alpha_all["picked_accuracy"] == 0.80 and alpha_all["regret"] == 0.0
    for r in (rows[2], rows[3]):  # n < 3: no correlation, but a regret
        assert math.isnan(r["kendall_tau"]) and math.isnan(r["spearman_rho"]) and math.isnan(r["kendall_ci"][0])
        assert r["regret"] == 0.0
    reversed_rows = rank_correlations({"rankme": -np.array(metrics["rankme"])}, accuracy, resamples=50)
    assert len(reversed_rows) == 1 and reversed_rows[0]["kendall_tau"] == pytest.approx(-1.0)
    assert reversed_rows[0]["regret"] == pytest.approx(0.80 - 0.40)


def test_rank_correlations_leaves_out_undefined_values_and_checks_lengths():
    rows = rank_correlations({"lidar": [1.0, np.nan, 3.0, 4.0]}, [0.1, 0.9, 0.3, 0.4], resamples=20)
    assert rows[0]["n"] == 3 and rows[0]["kendall_tau"] == pytest.approx(1.0) and rows[0]["best_accuracy"] == 0.4
    with pytest.raises(ValueError, match="3 values for 4 checkpoints"):
        rank_correlations({"lidar": [1.0, 2.0, 3.0]}, [0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="groups has 2 entries"):
        rank_correlations({"lidar": [1.0, 2.0, 3.0]}, [0.1, 0.2, 0.3], groups=["a", "b"])
