"""Hard negative sampling (Robinson et al., ICLR 2021): the loss of solo_qscore.losses.hard_negatives.

Checked against plain SimCLR (beta = 0, tau+ = 0), a hand-computed 2-D example (with the debiasing term and
the clamp), a float64 reference, the importance weights and the gradient. Its config rules are in
tests/test_config.py, SimCLR's training step with it in tests/adapters/test_solo_method.py.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from solo_qscore import ifm_simclr_loss
from solo_qscore.losses.hard_negatives import hard_negative_infonce, hard_negative_simclr_loss, hard_negative_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def naive_loss(z: torch.Tensor, indexes: torch.Tensor, tau: float, beta: float, tau_plus: float) -> float:
    """The equation of the module docstring term by term, in float64 Python (one anchor, one positive at a time)."""
    z = F.normalize(z.double(), dim=-1)
    total, count = 0.0, 0
    for i in range(z.shape[0]):
        negs = [float(z[i] @ z[k]) for k in range(z.shape[0]) if indexes[k] != indexes[i]]
        n = len(negs)
        imp = [math.exp(beta * s / tau) for s in negs]
        weighted = sum(w / (sum(imp) / n) * math.exp(s / tau) for w, s in zip(imp, negs))
        terms = []
        for p in range(z.shape[0]):
            if p == i or indexes[p] != indexes[i]:
                continue
            pos = math.exp(float(z[i] @ z[p]) / tau)
            ng = max((-tau_plus * n * pos + weighted) / (1 - tau_plus), n * math.exp(-1 / tau))
            terms.append(-math.log(pos / (pos + ng)))
        total += sum(terms) / len(terms)
        count += 1
    return total / count


def two_view_batch(n: int = 10, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, d, generator=g)
    z = torch.cat([base + 0.5 * torch.randn(n, d, generator=g), base + 0.5 * torch.randn(n, d, generator=g)])
    return z, torch.arange(n).repeat(2)


@pytest.mark.parametrize("tau", [0.05, 0.2, 0.5, 1.0])
def test_beta_zero_tau_plus_zero_is_plain_simclr(tau):
    from solo.losses.simclr import simclr_loss_func

    z, idx = two_view_batch()
    ours = hard_negative_simclr_loss(z, idx, tau, beta=0.0, tau_plus=0.0)
    plain = ifm_simclr_loss(z, idx, tau, epsilon=0)
    assert ours.item() == pytest.approx(plain.item(), abs=1e-6)
    assert ours.item() == pytest.approx(simclr_loss_func(z, indexes=idx, temperature=tau).item(), abs=1e-5)
    # and in float64 to rounding, with the same gradients
    z64 = z.double().requires_grad_(True)
    ours64 = hard_negative_simclr_loss(z64, idx, tau, beta=0.0, tau_plus=0.0)
    (grad_ours,) = torch.autograd.grad(ours64, z64)
    plain64 = ifm_simclr_loss(z64, idx, tau, epsilon=0)
    (grad_plain,) = torch.autograd.grad(plain64, z64)
    assert ours64.item() == pytest.approx(plain64.item(), abs=1e-12)
    torch.testing.assert_close(grad_ours, grad_plain, rtol=1e-9, atol=1e-12)


def test_three_views_beta_zero_is_ifm_multi_positive_form():
    g = torch.Generator().manual_seed(1)
    z, idx = torch.randn(15, 6, generator=g, dtype=torch.float64), torch.arange(5).repeat(3)
    assert hard_negative_simclr_loss(z, idx, 0.3, 0.0, 0.0).item() == pytest.approx(
        ifm_simclr_loss(z, idx, 0.3, epsilon=0).item(), abs=1e-12
    )


@pytest.mark.parametrize(("tau", "beta", "tau_plus"), [(0.5, 1.0, 0.1), (0.2, 2.0, 0.3), (0.1, 0.5, 0.05),
                                                      (1.0, 3.0, 0.0), (0.5, 1.0, 0.9)])
def test_matches_the_equation_term_by_term(tau, beta, tau_plus):
    z, idx = two_view_batch(n=6, d=5, seed=2)
    ours = hard_negative_simclr_loss(z.double(), idx, tau, beta, tau_plus).item()
    assert ours == pytest.approx(naive_loss(z, idx, tau, beta, tau_plus), rel=1e-10)
    z3, idx3 = torch.randn(12, 4, dtype=torch.float64), torch.arange(4).repeat(3)  # three views
    assert hard_negative_simclr_loss(z3, idx3, tau, beta, tau_plus).item() == pytest.approx(
        naive_loss(z3, idx3, tau, beta, tau_plus), rel=1e-10
    )


def _unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def test_hand_computed_two_samples_two_views():
    # views a1 = a2 at 0 deg (sample 0), b1 at 90 deg and b2 at 180 deg (sample 1); tau = 1, beta = 1, N = 2.
    z = torch.tensor([_unit(0), _unit(90), _unit(0), _unit(180)], dtype=torch.float64)
    idx = torch.tensor([0, 1, 0, 1])
    e = math.e
    # anchor a: pos = e, negatives cos {0, -1} -> neg {1, 1/e}, w = 2 {1, 1/e} / (1 + 1/e),
    #   sum w neg = 2 (1 + e^-2) / (1 + 1/e)
    sum_a = 2 * (1 + e**-2) / (1 + 1 / e)
    # anchor b1: pos = e^0 = 1, negatives a, a at cos 0 -> N_g = 2 -> loss log 3
    # anchor b2: pos = 1, negatives at cos -1 -> N_g = 2/e, exactly the clamp N e^{-1/tau}
    expected = (2 * math.log(1 + sum_a / e) + math.log(3) + math.log(1 + 2 / e)) / 4
    assert hard_negative_simclr_loss(z, idx, 1.0, beta=1.0, tau_plus=0.0).item() == pytest.approx(expected, abs=1e-12)
    # tau+ = 0.5: a: (-0.5*2*e + sum_a)/0.5 < 0 -> clamp 2/e; b1: (-1 + 2)/0.5 = 2; b2: (-1 + 2/e)/0.5 < 0 -> 2/e
    expected = (2 * math.log(1 + 2 / e / e) + math.log(3) + math.log(1 + 2 / e)) / 4
    assert hard_negative_simclr_loss(z, idx, 1.0, beta=1.0, tau_plus=0.5).item() == pytest.approx(expected, abs=1e-12)
    # beta = 0, tau+ = 0: plain InfoNCE, anchor a: -log(e / (e + 1 + 1/e))
    expected = (2 * math.log((e + 1 + 1 / e) / e) + math.log(3) + math.log(1 + 2 / e)) / 4
    assert hard_negative_simclr_loss(z, idx, 1.0, beta=0.0, tau_plus=0.0).item() == pytest.approx(expected, abs=1e-12)


def test_single_anchor_form_equals_batch_form():
    z, idx = two_view_batch(n=5, d=6, seed=3)
    zn = F.normalize(z.double(), dim=-1)
    sim = zn @ zn.T
    n = 5
    partner = torch.arange(2 * n).roll(n)
    neg = torch.stack([sim[i][(idx != idx[i])] for i in range(2 * n)])  # [2n, 2n-2]
    pos = sim[torch.arange(2 * n), partner]
    for beta, tau_plus in ((0.0, 0.0), (1.5, 0.2)):
        assert hard_negative_infonce(pos, neg, 0.4, beta, tau_plus).item() == pytest.approx(
            hard_negative_simclr_loss(z.double(), idx, 0.4, beta, tau_plus).item(), abs=1e-12
        )


def test_clamp_when_debiasing_overshoots():
    # negatives far from the anchor, tau+ = 0.9: the debiased sum -tau+ N pos + sum w neg is negative,
    # so N_g = N e^{-1/tau}
    pos = torch.tensor([0.8], dtype=torch.float64)
    neg = torch.full((1, 6), -0.5, dtype=torch.float64, requires_grad=True)
    tau = 0.5
    loss = hard_negative_infonce(pos, neg, tau, beta=1.0, tau_plus=0.9)
    assert loss.item() == pytest.approx(math.log(1 + 6 * math.exp(-1 / tau) / math.exp(0.8 / tau)), abs=1e-12)
    loss.backward()
    assert torch.equal(neg.grad, torch.zeros_like(neg))  # the clamp is constant in the negatives
    # without debiasing the same input is unclamped: N_g = 6 e^{-0.5/tau}
    unclamped = hard_negative_infonce(pos, neg.detach(), tau, 1.0, 0.0).item()
    assert unclamped == pytest.approx(math.log(1 + 6 * math.exp(-0.5 / tau) / math.exp(0.8 / tau)), abs=1e-12)
    # negatives equal to the positive: debiasing gives (N pos - tau+ N pos) / (1 - tau+) = N pos, loss log(N + 1)
    same = hard_negative_infonce(pos, torch.full((1, 6), 0.8, dtype=torch.float64), tau, 1.0, 0.9).item()
    assert same == pytest.approx(math.log(7), abs=1e-12)


def test_float32_stable_where_the_naive_exponentials_overflow():
    z, idx = two_view_batch(n=8, d=4, seed=4)
    tau, beta = 0.02, 3.0  # e^{(1+beta) s/tau} reaches e^200, beyond float32 (e^88)
    assert not torch.isfinite(torch.exp(torch.tensor((1 + beta) / tau)))
    z32 = z.clone().requires_grad_(True)
    loss32 = hard_negative_simclr_loss(z32, idx, tau, beta, 0.1)
    loss32.backward()
    assert torch.isfinite(loss32) and torch.isfinite(z32.grad).all()
    assert loss32.item() == pytest.approx(hard_negative_simclr_loss(z.double(), idx, tau, beta, 0.1).item(), rel=1e-4)


def test_importance_weights():
    g = torch.Generator().manual_seed(5)
    s = torch.rand(4, 9, generator=g, dtype=torch.float64) * 2 - 1
    tau, beta = 0.5, 2.0
    w = hard_negative_weights(s, tau, beta)
    naive = torch.exp(beta * s / tau) / torch.exp(beta * s / tau).mean(1, keepdim=True)
    torch.testing.assert_close(w, naive, rtol=1e-12, atol=0)
    torch.testing.assert_close(w.mean(1), torch.ones(4, dtype=torch.float64))
    assert torch.equal(w.argsort(1), s.argsort(1))  # harder (closer) negatives weigh more
    assert torch.equal(hard_negative_weights(s, tau, 0.0), torch.ones_like(s))
    huge = hard_negative_weights(s.float(), 0.01, 50.0)  # exponents of 5000: finite in log space
    assert torch.isfinite(huge).all() and huge.mean(1).sub(1).abs().max() < 1e-5
    assert (huge.argmax(1) == s.argmax(1)).all() and huge.max(1).values.sub(9).abs().max() < 1e-3


def test_gradient_weight_of_the_hard_negative_grows_with_beta():
    tau = 0.5
    s_neg = torch.tensor([[0.9, 0.3, -0.2, -0.7]], dtype=torch.float64)
    pos = torch.tensor([0.95], dtype=torch.float64)
    ratios = []
    for beta in (0.0, 0.5, 1.0, 2.0, 4.0):
        neg = s_neg.clone().requires_grad_(True)
        hard_negative_infonce(pos, neg, tau, beta=beta, tau_plus=0.0).backward()
        grad = neg.grad[0]
        assert grad[0] > 0  # pushing the hardest negative away always lowers the loss
        ratios.append((grad[0] / grad[-1].abs()).item())
        if beta == 0.0:  # plain InfoNCE: d loss / d s_k is proportional to e^{s_k / tau}
            assert ratios[-1] == pytest.approx(math.exp((0.9 + 0.7) / tau), rel=1e-12)
    assert all(b > a for a, b in zip(ratios, ratios[1:])), ratios


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"temperature": 0.0}, "temperature"), ({"beta": -0.1}, "beta"), ({"tau_plus": 1.0}, "tau_plus"),
    ({"tau_plus": -0.1}, "tau_plus"),
])
def test_bad_arguments(kwargs, match):
    z, idx = two_view_batch(n=3)
    args = {"temperature": 0.5, "beta": 1.0, "tau_plus": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        hard_negative_simclr_loss(z, idx, **args)


def test_bad_shapes():
    z, idx = two_view_batch(n=3)
    with pytest.raises(ValueError, match="indexes"):
        hard_negative_simclr_loss(z, idx[:-1], 0.5)
    with pytest.raises(ValueError, match="at least two samples"):
        hard_negative_simclr_loss(z[[0, 3]], torch.tensor([0, 0]), 0.5)
    with pytest.raises(ValueError, match="neg_sim"):
        hard_negative_infonce(torch.zeros(2), torch.zeros(3, 4), 0.5)
    with pytest.raises(ValueError, match="N >= 1"):
        hard_negative_weights(torch.zeros(2, 0), 0.5, 1.0)
