r"""Discriminative features: a band of ranks of the activation frequencies (docs/CONVENTIONS.md §4).

Features are sorted by :math:`A_j` ascending with a stable sort (ties go to the lower feature
index first) and given ranks :math:`0 \dots r-1`. The discriminative set keeps the ranks in

.. math:: [\,\mathrm{round}(p_{lo}/100 \cdot r),\ \mathrm{round}(p_{hi}/100 \cdot r)\,)

with ``round`` rounding halves up; defaults :math:`p_{lo}=50`, :math:`p_{hi}=95`
(so ``r = 512`` keeps ranks 256..485, 230 features). The baselines of the paper
(lower tail, upper tail, random subsets of the same size) are here too.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from solo_qscore.core._validation import check_count


def _band_edge(percent: float, r: int) -> int:
    return int(math.floor(percent / 100.0 * r + 0.5))


def _check_band(low: float, high: float) -> tuple[float, float]:
    low, high = float(low), float(high)
    if not (0.0 <= low < high <= 100.0):
        raise ValueError(f"invalid band [{low}, {high}): need 0 <= low < high <= 100")
    return low, high


def band_ranks(num_features: int, low: float = 50.0, high: float = 95.0) -> tuple[int, int]:
    """``(first, stop)``: the ranks ``first .. stop-1`` form the band ``[low, high)`` of ``r`` features.

    Raises:
        ValueError: unless ``0 <= low < high <= 100``.
    """
    low, high = _check_band(low, high)
    num_features = check_count(num_features, "num_features", 0)
    return _band_edge(low, num_features), _band_edge(high, num_features)


def _check_frequencies(A: Tensor) -> None:
    if not isinstance(A, Tensor) or A.ndim != 1 or A.numel() == 0:
        shape = tuple(A.shape) if isinstance(A, Tensor) else type(A).__name__
        raise ValueError(f"activation frequencies must be a non-empty 1-D tensor [r], got {shape}")
    if not bool(torch.isfinite(A).all()):
        raise ValueError("activation frequencies contain NaN or Inf")


def feature_ranks(A: Tensor) -> Tensor:
    """Rank of each feature when sorted by ``A`` ascending, ties by lower index (``LongTensor[r]``)."""
    _check_frequencies(A)
    order = torch.sort(A, stable=True).indices
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(A.numel(), device=A.device)
    return ranks


def rank_band_mask(A: Tensor, first: int, stop: int) -> Tensor:
    """Features whose rank lies in ``[first, stop)``."""
    ranks = feature_ranks(A)
    return (ranks >= first) & (ranks < stop)


def discriminative_mask(A: Tensor, low: float = 50.0, high: float = 95.0) -> Tensor:
    """The discriminative set ``D`` as a ``BoolTensor[r]``: ranks in the percentile band ``[low, high)``.

    Args:
        A: activation frequencies ``[r]`` (from :class:`~solo_qscore.ActivationStatistics`).
        low, high: band edges in percent, ``0 <= low < high <= 100``.

    Raises:
        ValueError: for an invalid band or frequencies that are not a finite 1-D tensor.
    """
    low, high = _check_band(low, high)
    r = A.numel() if isinstance(A, Tensor) else 0
    return rank_band_mask(A, *band_ranks(r, low, high))


def _check_size(size: int, r: int) -> int:
    return check_count(size, "subset size", 0, r)  # not int(): 2.5 would become 2


def lower_tail_mask(A: Tensor, size: int) -> Tensor:
    """The ``size`` least frequently activating features (ranks ``[0, size)``)."""
    return rank_band_mask(A, 0, _check_size(size, A.numel()))


def upper_tail_mask(A: Tensor, size: int) -> Tensor:
    """The ``size`` most frequently activating features (ranks ``[r - size, r)``)."""
    r = A.numel()
    return rank_band_mask(A, r - _check_size(size, r), r)


def random_mask(
    num_features: int, size: int, seed: int = 0, device: torch.device | str | None = None
) -> Tensor:
    """A uniformly random subset of ``size`` features, reproducible from ``seed``."""
    num_features = check_count(num_features, "num_features", 0)
    size = _check_size(size, num_features)
    generator = torch.Generator().manual_seed(check_count(seed, "seed", None))
    chosen = torch.randperm(num_features, generator=generator)[:size]
    mask = torch.zeros(num_features, dtype=torch.bool)
    mask[chosen] = True
    return mask.to(device) if device is not None else mask
