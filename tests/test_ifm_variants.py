"""IFM's +norm and +pre-norm variants (Robinson et al., NeurIPS 2021, App. B.1) against explicit vectors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from solo_qscore.losses.ifm import ifm_simclr_loss, perturb_similarities


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
