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

from solo_qscore.probe.linear import LinearProbe, ProbeResult, fit_linear_probe, probe_correctness


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


def _correlated_features(n: int = 1500, r: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Eight informative directions mixed into many columns plus weak noise (eigenvalues over ~5 decades)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 5, (n,), generator=g)
    centres = torch.randn(5, 8, generator=g) * 1.5
    latent = centres[y] + torch.randn(n, 8, generator=g)
    noise = torch.randn(n, r, generator=g) * torch.logspace(0, -2.5, r)
    return latent @ torch.randn(8, r, generator=g) + noise, y


@pytest.fixture(scope="module")
def fashion_pixels():
    """1,500 real Fashion-MNIST images as 784 raw pixels: strongly correlated features."""
    from solo_qscore.data import load_dataset

    train = load_dataset("fashion_mnist", train=True)
    x = torch.tensor(np.asarray(train.images[:1500]), dtype=torch.float32).reshape(1500, -1)
    return x, torch.tensor(np.asarray(train.targets[:1500]))


def test_inverse_cholesky_factor_whitens_the_shifted_second_moment():
    from solo_qscore.probe.linear import _inverse_cholesky_factor

    x, _ = _correlated_features()
    m = _inverse_cholesky_factor(x.t(), 1e-4, 0.1, max_samples=10**6).double()
    a = x.double().t() @ x.double() / x.shape[0]
    shift = 0.1 * float(a.diagonal().mean())
    eye = torch.eye(x.shape[1], dtype=torch.float64)
    torch.testing.assert_close(m @ (a + shift * eye) @ m.t(), eye, atol=1e-3, rtol=0)
    assert torch.equal(m, torch.tril(m))  # inverse of a lower-triangular factor
    # the weight decay is the floor of the shift
    m2 = _inverse_cholesky_factor(x.t(), 10.0 * shift, 0.1, max_samples=10**6).double()
    torch.testing.assert_close(m2 @ (a + 10.0 * shift * eye) @ m2.t(), eye, atol=1e-3, rtol=0)


def test_preconditioning_reaches_the_same_optimum_much_faster_on_real_pixels(fashion_pixels):
    x, y = fashion_pixels
    kwargs = {"weight_decay": 1e-4, "tolerance_grad": 0.0}
    plain = fit_linear_probe(x, y, max_iter=800, precondition=False, **kwargs)
    pre = fit_linear_probe(x, y, max_iter=800, **kwargs)
    optimum = min(plain.final_loss, pre.final_loss)
    assert pre.final_loss == pytest.approx(plain.final_loss, abs=1e-5)  # one convex objective, one minimum
    assert float((pre.predict(x) == plain.predict(x)).float().mean()) >= 0.995
    # at the same small budget the preconditioned fit is far closer to that minimum
    for budget in (10, 30):
        gap_pre = fit_linear_probe(x, y, max_iter=budget, **kwargs).final_loss - optimum
        gap_plain = fit_linear_probe(x, y, max_iter=budget, precondition=False, **kwargs).final_loss - optimum
        assert gap_pre < 0.2 * gap_plain, (budget, gap_pre, gap_plain)


def test_preconditioning_does_not_slow_down_an_easy_problem():
    x, y = _correlated_features()
    optimum = fit_linear_probe(x, y, weight_decay=1e-4, max_iter=3000, tolerance_grad=0.0,
                               precondition=False).final_loss
    pre = fit_linear_probe(x, y, weight_decay=1e-4, max_iter=100, tolerance_grad=0.0)
    assert pre.final_loss - optimum < 1e-5


def test_preconditioning_survives_rank_deficient_features_without_weight_decay():
    x, y = _correlated_features(n=400, r=32)
    x = torch.cat([x, x[:, :8], torch.zeros(400, 4)], dim=1)  # duplicated and constant columns: singular X^T X
    probe = fit_linear_probe(x, y, weight_decay=0.0, max_iter=200)
    assert torch.isfinite(probe.weight).all() and torch.isfinite(probe.bias).all()
    assert float((probe.predict(x) == y).float().mean()) > 0.9
    assert fit_linear_probe(torch.zeros(50, 6), torch.arange(50) % 3, weight_decay=0.0).weight.abs().max() == 0


@pytest.mark.parametrize("precondition", [True, False])
def test_tolerance_grad_is_met_by_the_gradient_in_w_and_b(fashion_pixels, precondition):
    x, y = fashion_pixels
    probe = fit_linear_probe(x, y, weight_decay=1e-3, max_iter=2000, tolerance_grad=1e-4, precondition=precondition)
    assert probe.num_iterations < 2000  # stopped by the tolerance, not the budget
    weight = probe.weight.clone().requires_grad_()
    bias = probe.bias.clone().requires_grad_()
    loss = F.cross_entropy(torch.addmm(bias, probe.transform(x), weight.t()), y) + 0.5e-3 * weight.pow(2).sum()
    grad_w, grad_b = torch.autograd.grad(loss, [weight, bias])
    assert max(float(grad_w.abs().max()), float(grad_b.abs().max())) <= 1.5e-4
