r"""Highly activating features of L2-normalised representations (docs/CONVENTIONS.md §1-2).

For a representation :math:`h_i \in \mathbb{R}^r` and its normalisation
:math:`\hat h_i = h_i / \max(\lVert h_i \rVert_2, 10^{-12})`, let :math:`\mu_i, \sigma_i` be the
mean and population standard deviation of the coordinates of :math:`\hat h_i`. The highly
activating set is

.. math:: L_i = \{ j : \hat h_{ij} > \mu_i + \epsilon \sigma_i \}.

Scaling a row by a positive number scales :math:`\hat h_{ij}`, :math:`\mu_i` and :math:`\sigma_i`
alike, so the test is evaluated on a rescaled copy of the raw row,
:math:`y_i = 2^{-e_i} h_i` with :math:`2^{e_i - 1} \le \max_j |h_{ij}| < 2^{e_i}`: multiplying by a
power of two is exact, and the sums of squares of :math:`y_i` neither overflow nor underflow,
whatever the magnitude of :math:`h_i` (``1e-25`` or ``1e25`` give the same :math:`L_i` as ``1``).
The comparison is made on the centred row :math:`y_i - c_i` (:math:`c_i` the float mean of
:math:`y_i`, which makes the difference exact near the mean) against
:math:`(\bar y_i - c_i) + \epsilon\,\sigma(y_i)`, so that a row whose mean is large against its
spread (``mean/std`` up to ``1e6`` in float32) is not decided by the rounding of its mean.
A constant row has :math:`\sigma_i = 0` and, with the strict ``>``, an empty :math:`L_i`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from solo_qscore.core._validation import check_finite, check_nonnegative, check_representations

NORM_EPS = 1e-12

# (mantissa bits, exponent bias, integer type of the same width) of the compute dtypes
_FLOAT_LAYOUT = {torch.float32: (23, 127, torch.int32), torch.float64: (52, 1023, torch.int64)}


class RowStats(NamedTuple):
    """Per-row statistics of rescaled representations ``y_i = 2^-e_i h_i`` (float32, or float64 for float64).

    ``j in L_i`` iff ``centred[i, j] > threshold[i]``, and ``centred[i, j] - offset[i]`` is
    ``y_ij - mean(y_i)``; ``norm`` is ``max(||h_i||, 1e-12)`` in the units of ``y_i``.
    """

    centred: Tensor  # [N, r] y_i - c_i, c_i the float mean of y_i
    offset: Tensor  # [N] mean(y_i) - c_i (small: the rounding of c_i)
    threshold: Tensor  # [N] offset + eps * std(y_i), population std
    norm: Tensor  # [N] max(||y_i||, 2^-e_i * 1e-12) = 2^-e_i max(||h_i||, 1e-12)
    finite: Tensor  # [N] bool, rows without NaN/Inf (the other fields are meaningless elsewhere)
    scale: Tensor  # [N] 2^-e_i, the exact power of two with y_i = 2^-e_i h_i
    centre: Tensor  # [N] c_i, so centred[i] = y_i - c_i (the regulariser rebuilds it with gradients)


def compute_dtype(h: Tensor) -> torch.dtype:
    """Half-precision inputs are computed in float32 so thresholds do not lose bits."""
    return torch.float64 if h.dtype == torch.float64 else torch.float32


def check_eps(eps: float) -> float:
    """The threshold ``eps`` of the highly activating sets: a finite number ``>= 0``."""
    return check_nonnegative(eps, "eps")


def row_scale(h: Tensor) -> tuple[Tensor, Tensor]:
    r"""``(scale, amax)`` of each row of a float32/float64 ``h`` ``[N, r]`` (no gradients).

    ``amax`` is :math:`\max_j |h_{ij}|` (NaN/Inf for a row with NaN/Inf) and ``scale`` the power of
    two :math:`2^{-e_i}` that brings it into ``[0.5, 1)`` (``1`` for a zero row; the exponent is
    clamped to the normal range of the dtype, so the scale itself is always a normal float).
    The scale is assembled from the bits of the float, so it is exact on every device.
    """
    mantissa_bits, bias, int_type = _FLOAT_LAYOUT[h.dtype]
    amax = h.detach().abs().amax(dim=1)
    exponent = torch.frexp(amax).exponent.to(int_type).clamp(-(bias - 1), bias - 1)
    scale = ((bias - exponent) << mantissa_bits).view(h.dtype)
    return scale, amax


def row_stats(h: Tensor, eps: float = 4.0, validate: bool = True) -> RowStats:
    """Threshold, offsets and L2 norm of each row, rescaled and centred (see :class:`RowStats`).

    Two passes over the rescaled row (its float mean, then the variance of the centred row),
    so neither large means nor large or tiny magnitudes cost precision.
    """
    check_representations(h)
    eps = check_eps(eps)
    h = h.detach().to(compute_dtype(h))
    scale, amax = row_scale(h)
    finite = torch.isfinite(amax)
    if validate:
        check_finite(amax)
    centred = h * scale[:, None]  # exact: a power of two
    centre = centred.mean(dim=1)
    centred -= centre[:, None]  # exact for the coordinates near the mean (Sterbenz)
    if centred.shape[0]:
        var, offset = torch.var_mean(centred, dim=1, correction=0)
    else:  # an empty batch (torch warns about var_mean over no rows)
        var = offset = centre
    mean = centre + offset
    norm = torch.maximum((h.shape[1] * (var + mean * mean)).sqrt(), NORM_EPS * scale)
    threshold = offset + eps * var.sqrt()
    return RowStats(centred, offset, threshold, norm, finite, scale, centre)


def highly_activating(h: Tensor, eps: float = 4.0) -> Tensor:
    r"""The sets :math:`L_i = \{j : \hat h_{ij} > \mu_i + \epsilon\sigma_i\}` as a ``BoolTensor[N, r]``.

    Args:
        h: raw representations ``[N, r]`` (any float dtype, any device, any magnitude).
        eps: the threshold in standard deviations, :math:`\epsilon \ge 0` (default 4, as in the Q-Score paper).

    Raises:
        ValueError: if ``h`` is not ``[N, r]`` floating point (``r >= 1``), contains NaN/Inf,
            or ``eps`` is negative. An empty batch (``N = 0``) gives an empty ``[0, r]`` mask.
    """
    stats = row_stats(h, eps)
    return stats.centred > stats.threshold[:, None]
