r"""Q-Score regularisation (SPEC §2.6, paper eq. 3) and the lasso baseline (SPEC §2.7).

For a batch :math:`\hat H \in \mathbb{R}^{B \times r}` of L2-normalised representations (all
crops of the batch),

.. math::
    \alpha = \operatorname{mean}_i Q_i, \qquad
    \beta = \operatorname{mean}_k \lVert \hat H_{*,k} \rVert_1 \quad (\text{both detached})

.. math::
    R = -\frac{\lambda_1}{B} \sum_i \mathbb{1}[Q_i < \alpha]\, Q_i
        + \lambda_2 \sum_k \mathbb{1}[\lVert \hat H_{*,k} \rVert_1 > \beta]\, \lVert \hat H_{*,k} \rVert_1

:math:`R` is *added* to the loss being minimised: it raises the Q-Score of the samples below the
batch mean and shrinks the features whose column L1 norm is above the batch mean. The index
sets :math:`L_i` and :math:`D` are constants; gradients flow through :math:`\hat h_{ij}-\mu_i`
and the selected column norms only. With an empty :math:`D` the regulariser is off (``R = 0``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from solo_qscore._validation import check_finite, check_mask, check_representations
from solo_qscore.activations import NORM_EPS, compute_dtype


class RegularizerTerms(NamedTuple):
    """The regulariser and its two parts (for logging)."""

    total: Tensor  # the scalar to add to the loss
    qscore_term: Tensor  # -lambda1/B * sum_{Q_i < alpha} Q_i
    l1_term: Tensor  # lambda2 * sum_{|H_k|_1 > beta} |H_k|_1
    q: Tensor  # [B] Q_i (detached), handy for logging Q histograms


def _normalise(h: Tensor, validate: bool) -> Tensor:
    check_representations(h)
    h = h.to(compute_dtype(h))
    norm = h.norm(dim=1, keepdim=True)
    if validate:
        check_finite(norm.detach().flatten())
    return h / norm.clamp_min(NORM_EPS)


def qscore_regularizer_terms(
    h: Tensor,
    discriminative: Tensor,
    eps: float = 4.0,
    lambda1: float = 1e-4,
    lambda2: float = 1e-4,
    validate: bool = True,
) -> RegularizerTerms:
    """The regulariser of SPEC §2.6 with its parts; see :func:`qscore_regularizer`."""
    check_representations(h)
    check_mask(discriminative, h.shape[1])
    h_hat = _normalise(h, validate)
    var, mu = torch.var_mean(h_hat, dim=1, correction=0)
    with torch.no_grad():
        selected = (h_hat > (mu + eps * var.sqrt())[:, None]) & discriminative.to(h_hat.device)
        count = selected.sum(1)
    centred = h_hat - mu[:, None]
    q = torch.where(selected, centred, 0.0).sum(1) / count.clamp_min(1)  # 0 when the set is empty
    alpha = q.detach().mean()
    below = (q.detach() < alpha).to(q.dtype)
    qscore_term = -lambda1 * (below * q).sum() / h_hat.shape[0]

    column_l1 = h_hat.abs().sum(0)
    beta = column_l1.detach().mean()
    above = (column_l1.detach() > beta).to(column_l1.dtype)
    l1_term = lambda2 * (above * column_l1).sum()

    # Off until a discriminative set exists; a multiply, not an `if`, so no host sync.
    on = discriminative.any().to(h_hat.dtype)
    qscore_term, l1_term = qscore_term * on, l1_term * on
    return RegularizerTerms(qscore_term + l1_term, qscore_term, l1_term, q.detach())


def qscore_regularizer(
    h: Tensor,
    discriminative: Tensor,
    eps: float = 4.0,
    lambda1: float = 1e-4,
    lambda2: float = 1e-4,
    validate: bool = True,
) -> Tensor:
    r"""Differentiable Q-Score regulariser :math:`R` (scalar) to add to the training loss.

    Args:
        h: raw representations ``[B, r]`` of all crops of the batch (with gradients).
        discriminative: ``BoolTensor[r]``, the current discriminative set :math:`D`.
        eps: threshold of the highly activating sets (SPEC default 4).
        lambda1, lambda2: weights of the Q-Score and column-L1 terms (SPEC default 1e-4).
        validate: check ``h`` for NaN/Inf (a host sync on GPUs; the training adapter turns it off).

    Returns:
        The scalar :math:`R`; :func:`qscore_regularizer_terms` also returns its two parts.
    """
    return qscore_regularizer_terms(h, discriminative, eps, lambda1, lambda2, validate).total


def lasso_penalty(h: Tensor, weight: float = 1e-4, validate: bool = True) -> Tensor:
    r"""Lasso baseline of the paper (Table 1).

    .. math:: \lambda \cdot \operatorname{mean}_i \lVert \hat h_i \rVert_1
    """
    return weight * _normalise(h, validate).abs().sum(1).mean()
