"""The L-BFGS linear probe against scikit-learn's LogisticRegression on real data (sklearn's digits)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from solo_qscore.probe import LinearProbe, ProbeResult, fit_linear_probe, probe_correctness


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    Xtr, Xva, ytr, yva = train_test_split(X, y, test_size=0.4, random_state=0, stratify=y)
    return (
        torch.tensor(Xtr, dtype=torch.float32),
        torch.tensor(ytr),
        torch.tensor(Xva, dtype=torch.float32),
        torch.tensor(yva),
    )


def _random_relu_features(x: torch.Tensor, width: int = 256) -> torch.Tensor:
    """A fixed random ReLU layer on the digit pixels: dense non-negative features, like a backbone's."""
    weight = torch.randn(x.shape[1], width, generator=torch.Generator().manual_seed(0))
    return torch.relu(x / 16.0 @ weight)


def _sklearn_fit(probe: LinearProbe, x: torch.Tensor, y: torch.Tensor, weight_decay: float):
    """sklearn on the same standardised features; C = 1/(lambda N) gives the same objective."""
    xs = probe.transform(x).double().numpy()
    clf = LogisticRegression(C=1.0 / (weight_decay * len(xs)), max_iter=1000, tol=1e-6)
    with threadpool_limits(1):  # BLAS threads only slow a problem this small down
        return clf.fit(xs, y.numpy())


def _objective(x: torch.Tensor, y: torch.Tensor, weight, bias, weight_decay: float) -> float:
    w = torch.as_tensor(weight, dtype=torch.float64)
    b = torch.as_tensor(bias, dtype=torch.float64)
    logits = x.double() @ w.t() + b
    return float(F.cross_entropy(logits, y) + 0.5 * weight_decay * w.pow(2).sum())


@pytest.mark.parametrize("weight_decay", [1e-2, 1e-3])
@pytest.mark.parametrize("relu_features", [False, True])
def test_accuracy_and_objective_match_sklearn(digits, weight_decay, relu_features):
    xtr, ytr, xva, yva = digits
    if relu_features:
        xtr, xva = _random_relu_features(xtr), _random_relu_features(xva)
    probe = fit_linear_probe(xtr, ytr, weight_decay=weight_decay)
    accuracy = float((probe.predict(xva) == yva).float().mean())

    clf = _sklearn_fit(probe, xtr, ytr, weight_decay)
    sk_accuracy = clf.score(probe.transform(xva).double().numpy(), yva.numpy())
    assert abs(accuracy - sk_accuracy) <= 0.01, (accuracy, sk_accuracy)
    assert accuracy > 0.9

    # same convex objective: our minimum is at least as low as sklearn's (up to float32 rounding)
    xs = probe.transform(xtr)
    ours = _objective(xs, ytr, probe.weight, probe.bias, weight_decay)
    theirs = _objective(xs, ytr, clf.coef_, clf.intercept_, weight_decay)
    assert ours <= theirs + 1e-4, (ours, theirs)
    assert probe.final_loss == pytest.approx(ours, rel=1e-4, abs=1e-5)


def test_probe_outputs_and_standardisation(digits):
    xtr, ytr, xva, _ = digits
    probe = fit_linear_probe(xtr, ytr)
    assert isinstance(probe, LinearProbe)
    assert probe.weight.shape == (10, 64) and probe.bias.shape == (10,)
    assert probe.num_classes == 10 and probe.num_features == 64
    torch.testing.assert_close(probe.mean, xtr.mean(0), rtol=1e-5, atol=1e-5)
    std = xtr.double().std(0, correction=0).float()
    expected_std = torch.where(std > 0, std, torch.ones_like(std))  # digits has constant (blank) pixels
    torch.testing.assert_close(probe.std, expected_std, rtol=1e-5, atol=1e-6)
    probs = probe.predict_proba(xva)
    assert probs.shape == (len(xva), 10) and probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(1), torch.ones(len(xva)))
    assert torch.equal(probe.predict(xva), probs.argmax(1))
    assert 0 < probe.num_iterations <= 100


def test_deterministic(digits):
    xtr, ytr, _, _ = digits
    a = fit_linear_probe(xtr, ytr, weight_decay=1e-3)
    b = fit_linear_probe(xtr, ytr, weight_decay=1e-3)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_probe_correctness_fields(digits):
    xtr, ytr, xva, yva = digits
    result = probe_correctness(xtr, ytr, xva, yva, weight_decay=1e-3)
    assert isinstance(result, ProbeResult)
    assert result.correct.dtype == torch.bool and result.correct.shape == (len(xva),)
    assert torch.equal(result.preds, result.probs.argmax(1))
    assert torch.equal(result.correct, result.preds == yva)
    assert result.accuracy == pytest.approx(float(result.correct.float().mean()))
    assert result.accuracy > 0.9


def test_without_standardisation_and_other_dtypes(digits):
    xtr, ytr, xva, yva = digits
    probe = fit_linear_probe(xtr.double() / 16.0, ytr, standardize=False, weight_decay=1e-3)
    assert torch.equal(probe.mean, torch.zeros(64)) and torch.equal(probe.std, torch.ones(64))
    assert probe.weight.dtype == torch.float32
    accuracy = float((probe.predict(xva.half() / 16.0) == yva).float().mean())
    assert accuracy > 0.9


def test_absent_class_and_single_class():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 5, generator=g)
    y = (x[:, 0] > 0).long()  # classes 0 and 1 only
    probe = fit_linear_probe(x, y, num_classes=4)
    probs = probe.predict_proba(x)
    assert probs.shape == (60, 4) and bool(torch.isfinite(probs).all())
    assert float(probs[:, 2:].max()) < 0.05
    assert float((probe.predict(x) == y).float().mean()) > 0.9

    single = fit_linear_probe(x, torch.zeros(60, dtype=torch.long))
    assert single.num_classes == 1 and torch.equal(single.predict(x), torch.zeros(60, dtype=torch.long))


def test_separable_problem_is_solved():
    g = torch.Generator().manual_seed(1)
    y = torch.arange(300) % 3
    x = torch.randn(300, 20, generator=g) * 0.1 + F.one_hot(y, 20).float() * 3
    result = probe_correctness(x[:200], y[:200], x[200:], y[200:])
    assert result.accuracy == 1.0


def test_invalid_inputs(digits):
    xtr, ytr, xva, yva = digits
    bad = xtr.clone()
    bad[3, 7] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fit_linear_probe(bad, ytr)
    with pytest.raises(ValueError, match="NaN"):
        probe_correctness(xtr, ytr, torch.full_like(xva, float("inf")), yva)
    with pytest.raises(ValueError, match="class indices"):
        fit_linear_probe(xtr, ytr[:-1])
    with pytest.raises(ValueError, match="integer"):
        fit_linear_probe(xtr, ytr.float())
    with pytest.raises(ValueError, match="num_classes"):
        fit_linear_probe(xtr, ytr, num_classes=5)
    with pytest.raises(ValueError, match="shape"):
        fit_linear_probe(xtr[0], ytr)
    probe = fit_linear_probe(xtr, ytr, max_iter=5)
    with pytest.raises(ValueError, match="features"):
        probe.predict(xva[:, :10])


def test_constant_feature_is_harmless():
    g = torch.Generator().manual_seed(2)
    y = torch.arange(200) % 2
    x = torch.randn(200, 4, generator=g) + y[:, None].float()
    x = torch.cat([x, torch.full((200, 1), 3.0)], dim=1)
    probe = fit_linear_probe(x, y)
    assert bool(torch.isfinite(probe.weight).all())
    assert float((probe.predict(x) == y).float().mean()) > 0.7
    assert np.isfinite(probe.final_loss)
