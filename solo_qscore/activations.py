r"""Highly activating features of L2-normalised representations (SPEC §1, §2.1).

For a representation :math:`h_i \in \mathbb{R}^r` and its normalisation
:math:`\hat h_i = h_i / \max(\lVert h_i \rVert_2, 10^{-12})`, let :math:`\mu_i, \sigma_i` be the
mean and population standard deviation of the coordinates of :math:`\hat h_i`. The highly
activating set is

.. math:: L_i = \{ j : \hat h_{ij} > \mu_i + \epsilon \sigma_i \}.

Scaling a row by a positive number scales :math:`\hat h_{ij}`, :math:`\mu_i` and :math:`\sigma_i`
alike, so the test is evaluated on the raw row (no normalised copy is made). A constant row
has :math:`\sigma_i = 0` and, with the strict ``>``, an empty :math:`L_i`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from solo_qscore._validation import check_finite, check_representations

NORM_EPS = 1e-12


class RowStats(NamedTuple):
    """Per-row statistics of raw representations, in float32 (or float64 for float64 inputs)."""

    h: Tensor  # the representations, upcast to the compute dtype
    mean: Tensor  # [N] mean of the raw coordinates
    threshold: Tensor  # [N] mean + eps * std of the raw coordinates
    norm: Tensor  # [N] max(||h_i||_2, 1e-12)


def compute_dtype(h: Tensor) -> torch.dtype:
    """Half-precision inputs are computed in float32 so thresholds do not lose bits."""
    return torch.float64 if h.dtype == torch.float64 else torch.float32


def row_stats(h: Tensor, eps: float = 4.0, validate: bool = True) -> RowStats:
    """Mean, threshold ``mean + eps*std`` (population std) and L2 norm of each raw row."""
    check_representations(h)
    h = h.to(compute_dtype(h))
    var, mean = torch.var_mean(h, dim=1, correction=0)
    r = h.shape[1]
    # ||h||^2 = r * (var + mean^2): one pass over the data gives both.
    norm = (r * (var + mean * mean)).sqrt().clamp_min(NORM_EPS)
    if validate:
        check_finite(norm)
    threshold = mean + eps * var.sqrt()
    return RowStats(h, mean, threshold, norm)


def highly_activating(h: Tensor, eps: float = 4.0) -> Tensor:
    r"""The sets :math:`L_i = \{j : \hat h_{ij} > \mu_i + \epsilon\sigma_i\}` as a ``BoolTensor[N, r]``.

    Args:
        h: raw representations ``[N, r]`` (any float dtype, any device).
        eps: the threshold in standard deviations, :math:`\epsilon` (SPEC default 4).

    Raises:
        ValueError: if ``h`` is not ``[N, r]`` floating point or contains NaN/Inf.
    """
    stats = row_stats(h, eps)
    return stats.h > stats.threshold[:, None]
