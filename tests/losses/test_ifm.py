"""IFM (solo_qscore.losses.ifm, Robinson et al., NeurIPS 2021): hand-computed and textbook references, and the
+norm and +pre-norm variants (App. B.1) against explicit vectors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from solo_qscore import ifm_moco_loss, ifm_nnclr_loss
from solo_qscore.losses.ifm import ifm_simclr_loss, perturb_similarities


def _nt_xent_reference(z1, z2, tau):
    """Two-view NT-Xent, one anchor at a time (the textbook definition)."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    total = 0.0
    for i in range(2 * n):
        p = (i + n) % (2 * n)
        logits = torch.stack([z[i] @ z[k] / tau for k in range(2 * n) if k != i])
        target = p if p < i else p - 1
        total += F.cross_entropy(logits[None], torch.tensor([target]))
    return total / (2 * n)


def test_ifm_moco_hand_example():
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[1.0, 0.0]])
    queue = torch.tensor([[0.0, -1.0], [1.0, 0.0]])  # columns [0,1] and [-1,0]: logits 0 and -1
    clean = -1.0 + math.log(math.e + 1.0 + math.exp(-1.0))
    perturbed = -0.5 + math.log(2 * math.exp(0.5) + math.exp(-0.5))  # [1-.5, 0+.5, -1+.5]
    got = ifm_moco_loss(q, k, queue, temperature=1.0, epsilon=0.5, alpha=1.0)
    assert got.item() == pytest.approx((clean + perturbed) / 2, rel=1e-6)
    got = ifm_moco_loss(q, k, queue, temperature=1.0, epsilon=0.5, alpha=3.0)
    assert got.item() == pytest.approx((clean + 3 * perturbed) / 4, rel=1e-6)
    only = ifm_moco_loss(q, k, queue, temperature=1.0, epsilon=0.5, ifm_only=True)
    assert only.item() == pytest.approx(perturbed, rel=1e-6)
    assert ifm_moco_loss(q, k, queue, 1.0, epsilon=0.0).item() == pytest.approx(clean, rel=1e-6)


def test_ifm_simclr_epsilon_zero_is_nt_xent():
    torch.manual_seed(4)
    z1, z2 = torch.randn(6, 5), torch.randn(6, 5)
    idx = torch.arange(6).repeat(2)
    got = ifm_simclr_loss(torch.cat([z1, z2]), idx, temperature=0.5, epsilon=0.0)
    torch.testing.assert_close(got, _nt_xent_reference(z1, z2, 0.5))


def test_ifm_simclr_equals_nt_xent_on_shifted_logits():
    # eps > 0: L_eps is NT-Xent with the positive logit lowered and the negatives raised by eps
    torch.manual_seed(5)
    z1, z2 = torch.randn(4, 3), torch.randn(4, 3)
    idx = torch.arange(4).repeat(2)
    eps, tau = 0.2, 0.5
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    want_eps = 0.0
    for i in range(8):
        p = (i + 4) % 8
        logits = torch.stack([(z[i] @ z[k] + (-eps if k == p else eps)) / tau for k in range(8) if k != i])
        want_eps += F.cross_entropy(logits[None], torch.tensor([p if p < i else p - 1]))
    want_eps = want_eps / 8
    got_only = ifm_simclr_loss(torch.cat([z1, z2]), idx, tau, epsilon=eps, ifm_only=True)
    torch.testing.assert_close(got_only, want_eps)
    got = ifm_simclr_loss(torch.cat([z1, z2]), idx, tau, epsilon=eps)
    torch.testing.assert_close(got, (_nt_xent_reference(z1, z2, tau) + want_eps) / 2)
    assert got_only > _nt_xent_reference(z1, z2, tau)  # the adversarial term is harder


def test_ifm_gradient_on_negative_is_parallel_to_anchor():
    """Paper Lemma 1: d L / d v^-_i is a positive multiple of the anchor v, with or without IFM."""
    torch.manual_seed(6)
    q = F.normalize(torch.randn(1, 8), dim=1)
    k = F.normalize(torch.randn(1, 8), dim=1)
    for eps, only in [(0.0, False), (0.1, True), (0.3, False)]:
        queue = F.normalize(torch.randn(8, 5), dim=0).requires_grad_(True)
        ifm_moco_loss(q, k, queue, 0.2, epsilon=eps, ifm_only=only).backward()
        for col in queue.grad.T:
            cos = F.cosine_similarity(col, q[0], dim=0)
            assert cos.item() == pytest.approx(1.0, abs=1e-5)


def test_ifm_argument_errors():
    z, idx = torch.randn(4, 3), torch.arange(2).repeat(2)
    with pytest.raises(ValueError, match="epsilon"):
        ifm_simclr_loss(z, idx, 0.5, epsilon=-0.1)
    with pytest.raises(ValueError, match="temperature"):
        ifm_simclr_loss(z, idx, 0.0)
    with pytest.raises(ValueError, match="indexes"):
        ifm_simclr_loss(z, idx[:3], 0.5)
    with pytest.raises(ValueError, match=r"queue \[d, K\]"):
        ifm_moco_loss(torch.randn(2, 3), torch.randn(2, 3), torch.randn(4, 5), 0.2)


def test_ifm_nnclr_loss_shifts_logits():
    torch.manual_seed(9)
    nn_, p = torch.randn(5, 4), torch.randn(5, 4)
    sim = F.normalize(nn_, dim=1) @ F.normalize(p, dim=1).T
    labels = torch.arange(5)
    clean = F.cross_entropy(sim / 0.2, labels)
    torch.testing.assert_close(ifm_nnclr_loss(nn_, p, 0.2, epsilon=0.0), clean)
    shifted = sim + 0.1 - 0.2 * torch.eye(5)  # +eps everywhere, -eps on the positives
    perturbed = F.cross_entropy(shifted / 0.2, labels)
    torch.testing.assert_close(ifm_nnclr_loss(nn_, p, 0.2, epsilon=0.1, alpha=1.0), (clean + perturbed) / 2)


def _pair(seed: int):
    g = torch.Generator().manual_seed(seed)
    v = F.normalize(torch.randn(16, generator=g), dim=0)
    u = torch.randn(16, generator=g) * 2.5  # un-normalised
    return v, u


@pytest.mark.parametrize("positive", [True, False])
def test_norm_variant_is_the_renormalised_move(positive):
    v, u = _pair(0)
    uh = F.normalize(u, dim=0)
    eps = 0.3
    moved = uh - eps * v if positive else uh + eps * v
    expected = F.normalize(moved, dim=0) @ v
    got = perturb_similarities((uh @ v).reshape(1), torch.tensor([positive]), eps, "norm")
    assert torch.allclose(got, expected.reshape(1), atol=1e-6)


@pytest.mark.parametrize("positive", [True, False])
def test_pre_norm_variant_follows_lemma_3_steps(positive):
    v, u = _pair(1)
    eps, steps = 0.4, 7
    x = u.clone()
    for _ in range(steps):  # Lemma 3's direction v^ - sim(u, v) u^, budget eps * |u|
        xh = F.normalize(x, dim=0)
        direction = v - (xh @ v) * xh
        x = x + (-1 if positive else 1) * (eps / steps) * u.norm() * direction
    expected = F.normalize(x, dim=0) @ v
    got = perturb_similarities((F.normalize(u, dim=0) @ v).reshape(1), torch.tensor([positive]), eps, "pre_norm", steps)
    assert torch.allclose(got, expected.reshape(1), atol=1e-5)


@pytest.mark.parametrize("variant", ["default", "norm", "pre_norm"])
def test_variants_at_epsilon_zero_and_direction(variant):
    sim = torch.tensor([0.5, -0.3, 0.1])
    positive = torch.tensor([True, False, False])
    assert torch.allclose(perturb_similarities(sim, positive, 0.0, variant), sim)
    moved = perturb_similarities(sim, positive, 0.2, variant)
    assert moved[0] < sim[0] and (moved[1:] > sim[1:]).all()  # harder: positive away, negatives closer


def test_variant_losses_are_finite_and_differ():
    torch.manual_seed(0)
    z, idx = torch.randn(16, 8), torch.arange(8).repeat(2)
    losses = {v: ifm_simclr_loss(z, idx, 0.2, epsilon=0.2, variant=v) for v in ("default", "norm", "pre_norm")}
    assert all(torch.isfinite(x) for x in losses.values())
    assert len({round(float(x), 6) for x in losses.values()}) == 3
    with pytest.raises(ValueError, match="unknown IFM variant"):
        perturb_similarities(torch.zeros(2), torch.tensor([True, False]), 0.1, "bogus")
