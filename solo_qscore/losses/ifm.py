r"""Implicit feature modification (IFM, Robinson et al., NeurIPS 2021, eq. 2; docs/CONVENTIONS.md §8-9).

For an anchor :math:`v` with positive :math:`v^+` and negatives :math:`v^-_i` (L2-normalised),
temperature :math:`\tau` and budget :math:`\epsilon \ge 0`, IFM moves the positive away from
the anchor and the negatives towards it, in closed form on the logits:

.. math::
    \ell = [\,v\cdot v^+,\ v\cdot v^-_1,\ \dots\,]/\tau, \qquad
    \ell_\epsilon = [\,v\cdot v^+ - \epsilon,\ v\cdot v^-_1 + \epsilon,\ \dots\,]/\tau

.. math::
    \mathcal{L}_{\mathrm{IFM}} = \frac{\mathcal{L}(\ell) + \alpha\, \mathcal{L}(\ell_\epsilon)}{1 + \alpha}

where :math:`\mathcal{L}` is the InfoNCE cross-entropy with the positive as target. With
:math:`\epsilon = 0` both terms equal the plain loss, so the result is exactly the method's own.

With ``validate=True`` (the default, for direct use) a NaN/Inf in any input, or a loss that is not
finite, raises ``ValueError`` (one host sync per call); training steps pass ``validate=False`` and
check the loss they return instead.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from solo_qscore.core._validation import check_finite_inputs

# Methods whose loss is InfoNCE, the only ones IFM applies to (docs/CONVENTIONS.md §8).
IFM_METHODS = ("simclr", "mocov2plus", "nnclr", "mocov3")


def _check_ifm_args(temperature: float, epsilon: float, alpha: float) -> None:
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    if not (epsilon >= 0 and math.isfinite(epsilon)):
        raise ValueError(f"IFM epsilon must be a finite number >= 0, got {epsilon}")
    if not (alpha >= 0 and math.isfinite(alpha)):
        raise ValueError(f"IFM alpha must be a finite number >= 0, got {alpha}")


def _checked(loss: Tensor, validate: bool, **inputs: Tensor) -> Tensor:
    """``loss``, after :func:`~solo_qscore.core._validation.check_finite_inputs` when ``validate``."""
    if validate:
        check_finite_inputs(loss, **inputs)
    return loss


IFM_VARIANTS = ("default", "norm", "pre_norm")


def perturb_similarities(sim: Tensor, positive: Tensor, epsilon: float, variant: str = "default",
                         steps: int = 5) -> Tensor:
    r"""Cosine similarities after IFM's worst-case move of the positive (away) and negatives (towards).

    ``sim`` holds :math:`s = \hat v\cdot\hat u` for an anchor :math:`v` and each other vector :math:`u`;
    ``positive`` marks the positives. The three forms of the IFM paper (eq. 2 and App. B.1):

    * ``default``: :math:`u^\pm \mp \epsilon v` with unit vectors, so :math:`s' = s \mp \epsilon`.
    * ``norm`` (+norm): the moved vector re-normalised,
      :math:`s' = (s \mp \epsilon)/\sqrt{1 \mp 2\epsilon s + \epsilon^2}`.
    * ``pre_norm`` (+pre-norm): the un-normalised vector moved along Lemma 3's gradient direction
      :math:`\pm(\hat v - s\,\hat u)` in ``steps`` steps of :math:`\eta = \epsilon/\text{steps}` (budget
      :math:`\epsilon\lVert u\rVert`), then normalised. The move stays in the plane of :math:`v, u`, so with
      :math:`r` the length (in units of :math:`\lVert u\rVert`):
      :math:`s \leftarrow (r s \pm \eta(1-s^2))/\sqrt{r^2+\eta^2(1-s^2)}`,
      :math:`r \leftarrow \sqrt{r^2+\eta^2(1-s^2)}`.
    """
    sign = torch.where(positive, -1.0, 1.0).to(sim.dtype)
    if variant == "default":
        return sim + sign * epsilon
    if variant == "norm":
        return (sim + sign * epsilon) / torch.sqrt((1 + 2 * sign * epsilon * sim + epsilon**2).clamp_min(1e-12))
    if variant == "pre_norm":
        if steps < 1:
            raise ValueError(f"pre_norm steps must be >= 1, got {steps}")
        eta = epsilon / steps
        s, r = sim, torch.ones_like(sim)
        for _ in range(steps):
            tangent = (1 - s * s).clamp_min(0)
            r_new = torch.sqrt(r * r + eta * eta * tangent)
            s = (r * s + sign * eta * tangent) / r_new
            r = r_new
        return s
    raise ValueError(f"unknown IFM variant {variant!r}; choose one of {', '.join(IFM_VARIANTS)}")


def _combine(clean: Tensor, perturbed: Tensor, alpha: float, ifm_only: bool) -> Tensor:
    if ifm_only:
        return perturbed
    return (clean + alpha * perturbed) / (1.0 + alpha)


def _multi_positive_infonce(logits: Tensor, pos_mask: Tensor, neg_mask: Tensor) -> Tensor:
    r"""InfoNCE with several positives per anchor, solo-learn's form:

    .. math:: -\operatorname{mean}_i \frac{1}{|P_i|}\sum_{p \in P_i}
              \log \frac{e^{\ell_{ip}}}{e^{\ell_{ip}} + \sum_{n \in N_i} e^{\ell_{in}}}

    over the anchors with at least one positive. For two views it is the usual NT-Xent.
    """
    neg_lse = torch.logsumexp(logits.masked_fill(~neg_mask, float("-inf")), dim=1, keepdim=True)
    log_prob = logits - torch.logaddexp(logits, neg_lse)
    num_pos = pos_mask.sum(1)
    per_anchor = torch.where(pos_mask, log_prob, 0.0).sum(1) / num_pos.clamp_min(1)
    has_pos = (num_pos > 0).to(logits.dtype)
    return -(per_anchor * has_pos).sum() / has_pos.sum().clamp_min(1)


def ifm_simclr_loss(
    z: Tensor,
    indexes: Tensor,
    temperature: float,
    epsilon: float = 0.1,
    alpha: float = 1.0,
    ifm_only: bool = False,
    variant: str = "default",
    pre_norm_steps: int = 5,
    validate: bool = True,
    *,
    candidates: Optional[Tensor] = None,
    candidate_indexes: Optional[Tensor] = None,
    offset: int = 0,
) -> Tensor:
    r"""SimCLR's InfoNCE with IFM.

    Args:
        z: projections of all views, stacked, ``[V*N, d]`` (normalised internally).
        indexes: ``[V*N]`` sample index of each row; rows with equal index are positives,
            every other row (but the anchor itself) is a negative.
        candidates, candidate_indexes, offset: under data parallelism, the rows of ``z`` gathered from
            every process ``[M, d]`` and their indexes ``[M]``, with this process's rows at
            ``candidates[offset:offset + len(z)]``: the anchors are the local rows and the positives and
            negatives come from the whole global batch, as solo-learn's ``simclr_loss_func`` does
            (the gather that keeps gradients is the caller's, e.g. ``solo.utils.misc.gather``).
            ``None``: the candidates are ``z`` itself.
        temperature: :math:`\tau`.
        epsilon: IFM budget :math:`\epsilon` (0 gives the plain loss exactly).
        alpha: weight of the perturbed term:
            :math:`(\mathcal{L} + \alpha\mathcal{L}_\epsilon)/(1+\alpha)`.
        ifm_only: return :math:`\mathcal{L}_\epsilon` alone.
        variant, pre_norm_steps: ``default``, ``norm`` or ``pre_norm`` (see :func:`perturb_similarities`).
        validate: raise ``ValueError`` on NaN/Inf in ``z`` or a loss that is not finite (one host
            sync; training steps pass ``False`` and check the loss themselves).

    Every positive logit gets :math:`-\epsilon` and every negative :math:`+\epsilon`; the loss
    keeps solo-learn's multi-positive form, so with two views it equals ``simclr_loss_func``.
    """
    _check_ifm_args(temperature, epsilon, alpha)
    if z.ndim != 2 or indexes.shape != (z.shape[0],):
        got = f"{tuple(z.shape)} and {tuple(indexes.shape)}"
        raise ValueError(f"z must be [V*N, d] and indexes [V*N]; got {got}")
    if candidates is None:
        candidates, candidate_indexes, offset = z, indexes, 0
    elif (candidate_indexes is None or candidates.ndim != 2 or candidates.shape[1] != z.shape[1]
          or candidate_indexes.shape != (candidates.shape[0],) or not 0 <= offset <= len(candidates) - len(z)):
        raise ValueError(f"candidates must be [M, {z.shape[1]}] with candidate_indexes [M] and hold z's rows at "
                         f"offset {offset}; got {tuple(candidates.shape)} and "
                         f"{None if candidate_indexes is None else tuple(candidate_indexes.shape)}")
    z = F.normalize(z, dim=-1)
    sim = z @ F.normalize(candidates, dim=-1).T
    rows = torch.arange(z.shape[0], device=z.device)
    not_self = torch.ones_like(sim, dtype=torch.bool)
    not_self[rows, rows + offset] = False
    pos_mask = (indexes[:, None] == candidate_indexes[None, :]) & not_self
    neg_mask = ~pos_mask & not_self
    clean = _multi_positive_infonce(sim / temperature, pos_mask, neg_mask)
    if epsilon == 0 and not ifm_only:
        return _checked(clean, validate, z=z)
    # positives -eps, negatives +eps (the diagonal is masked out anyway)
    moved = perturb_similarities(sim, pos_mask, epsilon, variant, pre_norm_steps)
    perturbed = _multi_positive_infonce(moved / temperature, pos_mask, neg_mask)
    return _checked(_combine(clean, perturbed, alpha, ifm_only), validate, z=z)


def ifm_moco_loss(
    query: Tensor,
    key: Tensor,
    queue: Tensor,
    temperature: float,
    epsilon: float = 0.1,
    alpha: float = 1.0,
    ifm_only: bool = False,
    variant: str = "default",
    pre_norm_steps: int = 5,
    validate: bool = True,
) -> Tensor:
    r"""MoCo-v2's InfoNCE with IFM (the official IFM code's method).

    Args:
        query: ``[N, d]`` L2-normalised queries (with gradients).
        key: ``[N, d]`` L2-normalised keys of the other view (the positives).
        queue: ``[d, K]`` L2-normalised negatives, laid out as solo-learn stores its queue.
        temperature, epsilon, alpha, ifm_only, variant, pre_norm_steps, validate: as in :func:`ifm_simclr_loss`.

    Like solo-learn's ``moco_loss_func`` it does not normalise its inputs; with ``epsilon=0``
    it returns exactly that function's value.
    """
    _check_ifm_args(temperature, epsilon, alpha)
    if query.shape != key.shape or query.ndim != 2 or queue.ndim != 2 or queue.shape[0] != query.shape[1]:
        raise ValueError(
            f"need query, key [N, d] and queue [d, K]; got {tuple(query.shape)}, {tuple(key.shape)}, "
            f"{tuple(queue.shape)}"
        )
    pos = (query * key).sum(1, keepdim=True)
    neg = query @ queue
    targets = torch.zeros(query.shape[0], dtype=torch.long, device=query.device)
    clean = F.cross_entropy(torch.cat([pos, neg], dim=1) / temperature, targets)
    if epsilon == 0 and not ifm_only:
        return _checked(clean, validate, query=query, key=key, queue=queue)
    logits = torch.cat([pos, neg], dim=1)
    positive = torch.zeros_like(logits, dtype=torch.bool)
    positive[:, 0] = True
    perturbed_logits = perturb_similarities(logits, positive, epsilon, variant, pre_norm_steps) / temperature
    perturbed = F.cross_entropy(perturbed_logits, targets)
    return _checked(_combine(clean, perturbed, alpha, ifm_only), validate, query=query, key=key, queue=queue)


def ifm_nnclr_loss(
    nn: Tensor,
    p: Tensor,
    temperature: float,
    epsilon: float = 0.1,
    alpha: float = 1.0,
    ifm_only: bool = False,
    variant: str = "default",
    pre_norm_steps: int = 5,
    validate: bool = True,
) -> Tensor:
    r"""NNCLR's InfoNCE (solo-learn's ``nnclr_loss_func(nn, p)``) with IFM.

    Row i of :math:`\hat{nn}\,\hat p^\top / \tau` has the positive :math:`p_i` (shifted by
    :math:`-\epsilon`) and the negatives :math:`p_{j \ne i}` (shifted by :math:`+\epsilon`).

    Args:
        nn: ``[N, d]`` nearest neighbours of one view's projections (support set).
        p: ``[N, d]`` predictions of the other view. Both are normalised internally, as solo does.
        temperature, epsilon, alpha, ifm_only, variant, pre_norm_steps, validate: as in :func:`ifm_simclr_loss`.
    """
    _check_ifm_args(temperature, epsilon, alpha)
    if nn.shape != p.shape or nn.ndim != 2:
        raise ValueError(f"nn and p must both be [N, d]; got {tuple(nn.shape)} and {tuple(p.shape)}")
    sim = F.normalize(nn, dim=-1) @ F.normalize(p, dim=-1).T
    labels = torch.arange(p.shape[0], device=p.device)
    clean = F.cross_entropy(sim / temperature, labels)
    if epsilon == 0 and not ifm_only:
        return _checked(clean, validate, nn=nn, p=p)
    positive = torch.eye(p.shape[0], dtype=torch.bool, device=p.device)
    perturbed = F.cross_entropy(perturb_similarities(sim, positive, epsilon, variant, pre_norm_steps) / temperature,
                                labels)
    return _checked(_combine(clean, perturbed, alpha, ifm_only), validate, nn=nn, p=p)
