r"""Hard negative sampling for SimCLR (Robinson, Chuang, Sra, Jegelka, ICLR 2021; IFM paper §2.3).

For an anchor :math:`v` with positive :math:`v^+` and :math:`N` negatives :math:`v^-_k` (all
L2-normalised; SimCLR's :math:`2B` views give :math:`N = 2B - 2`), temperature :math:`\tau`,
hardness :math:`\beta \ge 0` and class prior :math:`\tau^+ \in [0, 1)`:

.. math::
    \mathrm{pos} = e^{v\cdot v^+/\tau}, \qquad \mathrm{neg}_k = e^{v\cdot v^-_k/\tau}, \qquad
    w_k = \frac{e^{\beta\, v\cdot v^-_k/\tau}}{\frac1N \sum_{k'} e^{\beta\, v\cdot v^-_{k'}/\tau}}

.. math::
    N_g = \max\Big(\frac{-\tau^+ N\,\mathrm{pos} + \sum_k w_k\,\mathrm{neg}_k}{1 - \tau^+},\;
    N e^{-1/\tau}\Big), \qquad
    \mathcal{L} = -\log \frac{\mathrm{pos}}{\mathrm{pos} + N_g}

averaged over anchors. The importance weights :math:`w_k` (mean 1 over an anchor's negatives)
up-weight negatives that are close to the anchor, more so the larger :math:`\beta`; :math:`\tau^+`
debiases the sum for negatives that share the anchor's latent class; the clamp keeps :math:`N_g`
at or above its smallest possible value (every negative at cosine :math:`-1`). With
:math:`\beta = 0` and :math:`\tau^+ = 0`, :math:`w_k = 1`, the clamp is inactive and the loss is
exactly SimCLR's InfoNCE (:func:`solo_qscore.ifm_simclr_loss` with ``epsilon=0``).

Everything is computed in log space (log-sum-exp), since :math:`e^{(1+\beta)\,s/\tau}` overflows
float32 for small :math:`\tau`:

.. math::
    \log \textstyle\sum_k w_k \mathrm{neg}_k
    = \operatorname{LSE}_k\big((1+\beta)\,\ell_k\big) - \operatorname{LSE}_k(\beta\,\ell_k) + \log N,
    \qquad \ell_k = v\cdot v^-_k/\tau .

NaN/Inf inputs (or a loss that is not finite) raise ``ValueError`` unless ``validate=False``,
which training steps pass to avoid a host sync per step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from solo_qscore.core._validation import check_finite_inputs

__all__ = ["hard_negative_infonce", "hard_negative_simclr_loss", "hard_negative_weights"]


def _check_args(temperature: float, beta: float, tau_plus: float) -> None:
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    if not (beta >= 0 and math.isfinite(beta)):
        raise ValueError(f"hard-negative beta must be a finite number >= 0, got {beta}")
    if not 0 <= tau_plus < 1:
        raise ValueError(f"hard-negative tau_plus must be in [0, 1), got {tau_plus}")


def _masked_lse(x: Tensor, mask: Tensor) -> Tensor:
    return torch.logsumexp(x.masked_fill(~mask, float("-inf")), dim=1, keepdim=True)


def _hard_negative_terms(
    sim: Tensor, pos_mask: Tensor, neg_mask: Tensor, temperature: float, beta: float, tau_plus: float
) -> Tensor:
    r"""Loss of every (anchor, positive) pair, ``[A, M]`` (meaningful where ``pos_mask``).

    ``sim[i, j]`` is the cosine of row i (anchor) with column j; ``neg_mask`` marks each anchor's
    negatives and ``pos_mask`` its positives.
    """
    logits = sim / temperature
    num_neg = neg_mask.sum(1, keepdim=True).to(logits.dtype)
    log_n = torch.log(num_neg)
    # log sum_k w_k neg_k = LSE((1+beta) l) - LSE(beta l) + log N
    log_reweighted = _masked_lse((1.0 + beta) * logits, neg_mask) - _masked_lse(beta * logits, neg_mask) + log_n
    if tau_plus > 0:
        # log(S - tau+ N pos) = log S + log1p(-exp(log(tau+ N) + l_pos - log S)), defined where S > tau+ N pos;
        # elsewhere the numerator is <= 0 and the clamp below takes over (the where keeps gradients finite)
        gap = math.log(tau_plus) + log_n + logits - log_reweighted
        valid = gap < 0
        safe_gap = torch.where(valid, gap, torch.full_like(gap, -1.0))
        log_numerator = torch.where(
            valid, log_reweighted + torch.log1p(-torch.exp(safe_gap)), torch.full_like(gap, float("-inf"))
        )
        log_ng = log_numerator - math.log1p(-tau_plus)
    else:
        log_ng = log_reweighted.expand_as(logits)
    log_ng = torch.maximum(log_ng, log_n - 1.0 / temperature)  # N_g >= N e^{-1/tau}
    # -log(pos / (pos + N_g)) = log(1 + N_g / pos)
    return F.softplus(log_ng - logits)


def _reduce(per_pair: Tensor, pos_mask: Tensor) -> Tensor:
    """Mean over each anchor's positives, then over the anchors that have one (solo-learn's form)."""
    num_pos = pos_mask.sum(1)
    per_anchor = torch.where(pos_mask, per_pair, 0.0).sum(1) / num_pos.clamp_min(1)
    has_pos = (num_pos > 0).to(per_pair.dtype)
    return (per_anchor * has_pos).sum() / has_pos.sum().clamp_min(1)


def hard_negative_weights(neg_sim: Tensor, temperature: float, beta: float, validate: bool = True) -> Tensor:
    r"""Importance weights :math:`w_k = e^{\beta s_k/\tau} / \operatorname{mean}_{k'} e^{\beta s_{k'}/\tau}`.

    Args:
        neg_sim: ``[A, N]`` cosine similarities :math:`s_k = v\cdot v^-_k` of each anchor with its negatives.
        temperature: :math:`\tau > 0`.
        beta: hardness :math:`\beta \ge 0` (0 gives all ones).
        validate: raise ``ValueError`` on NaN/Inf in ``neg_sim`` (one host sync).

    Returns:
        ``[A, N]`` weights, each row with mean 1 (``N * softmax(beta * s / tau)``, stable for any beta).
    """
    _check_args(temperature, beta, 0.0)
    if neg_sim.ndim != 2 or neg_sim.shape[1] == 0:
        raise ValueError(f"neg_sim must be [A, N] with N >= 1 negatives, got {tuple(neg_sim.shape)}")
    weights = neg_sim.shape[1] * torch.softmax(beta * neg_sim / temperature, dim=1)
    if validate:
        check_finite_inputs(weights, neg_sim=neg_sim)
    return weights


def hard_negative_infonce(
    pos_sim: Tensor,
    neg_sim: Tensor,
    temperature: float,
    beta: float = 1.0,
    tau_plus: float = 0.1,
    validate: bool = True,
) -> Tensor:
    r"""The hard-negative loss (module docstring) of anchors with one positive each and ``N`` negatives.

    Args:
        pos_sim: ``[A]`` cosine :math:`v\cdot v^+` of each anchor with its positive.
        neg_sim: ``[A, N]`` cosines :math:`v\cdot v^-_k` with its negatives.
        temperature: :math:`\tau > 0`.
        beta: hardness :math:`\beta \ge 0`.
        tau_plus: class prior :math:`\tau^+ \in [0, 1)`.
        validate: raise ``ValueError`` on NaN/Inf in the inputs or a loss that is not finite (one
            host sync; training steps pass ``False`` and check the loss themselves).

    Returns:
        The mean loss over the ``A`` anchors (a scalar).
    """
    _check_args(temperature, beta, tau_plus)
    if pos_sim.ndim != 1 or neg_sim.ndim != 2 or neg_sim.shape[0] != pos_sim.shape[0] or neg_sim.shape[1] == 0:
        raise ValueError(
            f"need pos_sim [A] and neg_sim [A, N] with N >= 1; got {tuple(pos_sim.shape)} and {tuple(neg_sim.shape)}"
        )
    sim = torch.cat([pos_sim[:, None], neg_sim], dim=1)
    pos_mask = torch.zeros(sim.shape, dtype=torch.bool, device=sim.device)
    pos_mask[:, 0] = True
    loss = _reduce(_hard_negative_terms(sim, pos_mask, ~pos_mask, temperature, beta, tau_plus), pos_mask)
    if validate:
        check_finite_inputs(loss, pos_sim=pos_sim, neg_sim=neg_sim)
    return loss


def hard_negative_simclr_loss(
    z: Tensor,
    indexes: Tensor,
    temperature: float,
    beta: float = 1.0,
    tau_plus: float = 0.1,
    validate: bool = True,
) -> Tensor:
    r"""SimCLR's loss with hard negative sampling (module docstring), on a batch of views.

    Args:
        z: projections of all views, stacked, ``[V*B, d]`` (normalised internally).
        indexes: ``[V*B]`` sample index of each row; rows with equal index are positives, every
            other row (but the anchor itself) is a negative, so with two views ``N = 2B - 2``.
        temperature: :math:`\tau > 0`.
        beta: hardness :math:`\beta \ge 0` (0 with ``tau_plus=0`` is plain SimCLR).
        tau_plus: class prior :math:`\tau^+ \in [0, 1)`.
        validate: raise ``ValueError`` on NaN/Inf in ``z`` or a loss that is not finite (one host
            sync; training steps pass ``False`` and check the loss themselves).

    With several positives per anchor (more than two views) each positive gets its own term and
    they are averaged per anchor, the form of :func:`solo_qscore.ifm_simclr_loss`.
    """
    _check_args(temperature, beta, tau_plus)
    if z.ndim != 2 or indexes.shape != (z.shape[0],):
        raise ValueError(f"z must be [V*B, d] and indexes [V*B]; got {tuple(z.shape)} and {tuple(indexes.shape)}")
    z = F.normalize(z, dim=-1)
    not_self = ~torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    pos_mask = (indexes[:, None] == indexes[None, :]) & not_self
    neg_mask = ~pos_mask & not_self
    if not bool(neg_mask.any(1).all()):
        raise ValueError("every view needs at least one negative: the batch must hold at least two samples")
    loss = _reduce(_hard_negative_terms(z @ z.T, pos_mask, neg_mask, temperature, beta, tau_plus), pos_mask)
    if validate:
        check_finite_inputs(loss, z=z)
    return loss
