"""Robust vs non-robust features (solo_qscore.analysis.robust_features, IFM paper §4.3): targeted FGSM,
D_R / D_NR, re-fitted probes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from solo_qscore.analysis.robust_features import (
    PixelSpaceClassifier,
    iterative_targeted_fgsm,
    robust_feature_accuracies,
    sample_targets,
    split_robust_nonrobust,
    targeted_fgsm_step,
)
from solo_qscore.probe.linear import fit_linear_probe

torch.set_num_threads(1)


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    model = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        model.weight.copy_(weight)
        model.bias.copy_(bias)
    return model


def test_fgsm_step_on_a_linear_model_is_the_analytic_sign_step():
    gen = torch.Generator().manual_seed(0)
    w, b = torch.randn(4, 6, generator=gen), torch.randn(4, generator=gen)
    x, t = torch.rand(5, 6, generator=gen), torch.tensor([0, 1, 2, 3, 1])
    # d/dx CE(Wx + b, t) = W^T (softmax(Wx + b) − e_t); the targeted step descends it
    grad = (torch.softmax(x @ w.T + b, dim=1) - F.one_hot(t, 4).float()) @ w
    got = targeted_fgsm_step(_linear(w, b), x, t, step=0.05, clamp=None)
    torch.testing.assert_close(got, x - 0.05 * grad.sign())
    clipped = targeted_fgsm_step(_linear(w, b), x, t, step=0.5)  # default clamp to [0, 1]
    torch.testing.assert_close(clipped, (x - 0.5 * grad.sign()).clamp(0, 1))
    # each sample's step is its own: the batch result equals the per-sample results
    single = torch.cat([targeted_fgsm_step(_linear(w, b), x[i:i + 1], t[i:i + 1], 0.05, None) for i in range(5)])
    torch.testing.assert_close(got, single)


def test_iterative_fgsm_stops_at_the_first_iterate_predicted_as_the_target():
    model = _linear(torch.eye(2), torch.zeros(2))  # logits = x
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    t = torch.tensor([1, 1, 1])
    # sample 0: each step moves x by 0.125·(−1, +1); x_k = (1 − k/8, k/8) is predicted 1 first at
    # k = 5 (k = 4 is a tie, argmax takes class 0); sample 1 already predicts 1: k = 0
    res = iterative_targeted_fgsm(model, x[:2], t[:2], step=0.125, max_steps=20, clamp=None)
    assert res.success.tolist() == [True, True] and res.steps.tolist() == [5, 0]
    torch.testing.assert_close(res.x_adv, torch.tensor([[0.375, 0.625], [0.0, 1.0]]))
    # giving up after 3 steps: not successful, moved 3 times
    res = iterative_targeted_fgsm(model, x, t, step=0.125, max_steps=3, clamp=None)
    assert res.success.tolist() == [False, True, False] and res.steps.tolist() == [3, 0, 3]
    torch.testing.assert_close(res.x_adv[0], torch.tensor([0.625, 0.375]))
    assert torch.equal(model(res.x_adv[res.success]).argmax(1), t[res.success])


def test_iterative_fgsm_bad_input():
    model = _linear(torch.eye(2), torch.zeros(2))
    with pytest.raises(ValueError, match="target"):
        iterative_targeted_fgsm(model, torch.zeros(3, 2), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="max_steps"):
        iterative_targeted_fgsm(model, torch.zeros(2, 2), torch.tensor([1, 1]), max_steps=-1)
    with pytest.raises(ValueError, match="step"):
        targeted_fgsm_step(model, torch.zeros(2, 2), torch.tensor([1, 1]), step=-0.1)


def test_pixel_space_classifier_normalises_inside():
    probe = fit_linear_probe(torch.randn(30, 12), torch.arange(30) % 3, num_classes=3, max_iter=5)
    mean, std = (0.5, 0.25, 0.1), (0.2, 0.3, 0.4)
    clf = PixelSpaceClassifier(nn.Flatten(), probe, mean, std)
    x = torch.rand(2, 3, 2, 2)
    normed = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(clf.features(x), normed.flatten(1))
    torch.testing.assert_close(clf(x), probe(normed.flatten(1)))


def test_sample_targets():
    labels = torch.arange(1000) % 10
    a = sample_targets(labels, 10, torch.Generator().manual_seed(3))
    b = sample_targets(labels, 10, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 9 and len(a.unique()) == 10
    assert 0.05 < float((a == labels).double().mean()) < 0.15  # uniform: t = y about 1/10 of the time
    c = sample_targets(labels, 10, torch.Generator().manual_seed(3), exclude_true=True)
    assert not (c == labels).any() and len(c.unique()) == 10
    with pytest.raises(ValueError, match="2 classes"):
        sample_targets(labels, 1)


def test_split_into_robust_and_non_robust_sets():
    features = torch.arange(10.0).view(5, 2)
    labels, targets = torch.tensor([0, 1, 2, 0, 1]), torch.tensor([2, 2, 0, 1, 1])
    success = torch.tensor([True, False, True, True, False])
    (xr, yr), (xnr, tnr) = split_robust_nonrobust(features, labels, targets, success)
    assert xr.tolist() == xnr.tolist() == [[0.0, 1.0], [4.0, 5.0], [6.0, 7.0]]
    assert yr.tolist() == [0, 2, 0]  # D_R keeps the true labels
    assert tnr.tolist() == [2, 0, 1]  # D_NR takes the target labels
    (xa, _), _ = split_robust_nonrobust(features, labels, targets)
    assert xa.shape == (5, 2)
    with pytest.raises(ValueError, match="targets"):
        split_robust_nonrobust(features, labels, targets[:3])
    with pytest.raises(ValueError, match="success"):
        split_robust_nonrobust(features, labels, targets, success.long())


@pytest.fixture(scope="module")
def fashion_features():
    """7x7 average-pooled Fashion-MNIST pixels (49 real features): 600 train, 300 test."""
    from solo_qscore.data import load_dataset

    train, test = load_dataset("fashion_mnist", train=True), load_dataset("fashion_mnist", train=False)

    def feats(ds, n):
        x = torch.from_numpy(ds.images[:n]).float().div(255).unsqueeze(1)
        return F.avg_pool2d(x, 4).flatten(1), ds.targets[:n]

    return (*feats(train, 600), *feats(test, 300))


def test_accuracies_are_real_probe_accuracies(fashion_features):
    xtr, ytr, xte, yte = fashion_features
    kwargs = {"max_iter": 50}
    # x_adv = x and t = y: D, D_R and D_NR are the same set, so the three probes agree
    same = robust_feature_accuracies(xtr, ytr, ytr, torch.ones(600, dtype=torch.bool), xte, yte, 10,
                                     clean_features=xtr, probe_kwargs=kwargs)
    direct = fit_linear_probe(xtr, ytr, num_classes=10, **kwargs)
    expected = float((direct.predict(xte) == yte).double().mean())
    assert same == {"D": expected, "D_R": expected, "D_NR": expected}
    assert 0.6 < expected <= 1.0  # far above chance on real data
    assert (expected * 300) == pytest.approx(round(expected * 300))  # a count of 300 test samples
    # random targets carry no information about the test labels: D_NR falls to about chance
    t = sample_targets(ytr, 10, torch.Generator().manual_seed(0), exclude_true=True)
    success = torch.arange(600) % 3 != 0
    acc = robust_feature_accuracies(xtr, ytr, t, success, xte, yte, 10, probe_kwargs=kwargs)
    assert set(acc) == {"D_R", "D_NR"} and all(0.0 <= v <= 1.0 for v in acc.values())
    assert acc["D_NR"] < 0.25 < 0.6 < acc["D_R"]
    # D_R uses only the successful examples
    sub = fit_linear_probe(xtr[success], ytr[success], num_classes=10, **kwargs)
    assert acc["D_R"] == float((sub.predict(xte) == yte).double().mean())
