r"""Activation frequency of each feature over a population (docs/CONVENTIONS.md §3), as a torchmetrics ``Metric``.

.. math:: A_j = \frac{100}{N} \sum_{i=1}^{N} \mathbb{1}[j \in L_i]

The states are integer counts, so the metric can be fed batch by batch and summed across
processes (DDP) exactly; memory is :math:`O(r)` whatever :math:`N` is.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import torch
from torch import Tensor
from torchmetrics import Metric

from solo_qscore.core._kernels import activation_summary
from solo_qscore.core._validation import check_count, check_mask, check_representations
from solo_qscore.core.activations import check_eps


class ActivationStatistics(Metric):
    r"""Accumulates :math:`A_j`, the percentage of samples whose highly activating set holds feature j.

    Args:
        num_features: ``r >= 1``, the dimension of the representation.
        eps: threshold of the highly activating sets, in standard deviations, ``>= 0`` (default 4, the paper's).

    Raises:
        ValueError: ``num_features`` not a whole number ``>= 1`` (``2.5`` or ``True`` are refused, not
            truncated), or a negative ``eps``.

    States (all summed across processes):
        ``counts`` ``LongTensor[r]``: :math:`\sum_i \mathbb{1}[j \in L_i]`;
        ``num_samples``: N; ``num_active``: :math:`\sum_i |L_i|`;
        ``num_nonfinite``: rows with NaN/Inf, which are left out of every other state.

    ``update`` never synchronises with the host, so it is safe on the training hot path; rows
    with NaN/Inf are counted and reported by :meth:`compute`, which raises ``ValueError``.
    An empty batch (``B = 0``) changes no state. :meth:`compute` returns shape ``[r]`` for every
    ``r``, ``r = 1`` included (torchmetrics would squeeze a one-element result to 0-d).

    Example:
        >>> stats = ActivationStatistics(num_features=512)
        >>> for h in loader_of_features:   # doctest: +SKIP
        ...     stats.update(h)
        >>> A = stats.compute()            # doctest: +SKIP
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    counts: Tensor
    num_samples: Tensor
    num_active: Tensor
    num_nonfinite: Tensor

    def __init__(self, num_features: int, eps: float = 4.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_features = check_count(num_features, "num_features")  # not int(): 2.5 would become 2
        self.eps = check_eps(eps)
        self.add_state("counts", torch.zeros(self.num_features, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("num_samples", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("num_active", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("num_nonfinite", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.last_q: Optional[Tensor] = None

    def update(self, h: Tensor, discriminative: Optional[Tensor] = None) -> None:  # type: ignore[override]
        """Add a batch of raw representations ``[B, r]`` (detached internally).

        With ``discriminative`` given, the batch's Q-Scores are computed in the same pass over
        ``h`` and kept in :attr:`last_q` (see :meth:`update_and_score`).
        """
        check_representations(h, num_features=self.num_features)
        if discriminative is not None:
            check_mask(discriminative, self.num_features)
        disc = discriminative if discriminative is not None else self._no_features
        summary = activation_summary(h, disc.to(h.device), self.eps)
        device = self.counts.device
        self.counts += summary.counts.to(device)
        self.num_active += summary.num_active.sum().to(device)
        num_finite = summary.finite.sum().to(device)
        self.num_samples += num_finite
        self.num_nonfinite += summary.finite.numel() - num_finite
        self.last_q = summary.q if discriminative is not None else None

    def update_and_score(self, h: Tensor, discriminative: Tensor) -> Tensor:
        """Add a batch and return its Q-Scores ``[B]`` for ``discriminative``, in one pass over ``h``.

        Rows with NaN/Inf get ``Q = 0`` here (they are reported by :meth:`compute`).
        """
        self.update(h, discriminative)
        return self.last_q

    def _wrap_compute(self, compute: Callable) -> Callable:
        """torchmetrics' wrapper squeezes one-element results to 0-d; keep ``[r]`` (``r = 1``)."""
        wrapped = super()._wrap_compute(compute)

        @functools.wraps(compute)
        def keep_shape(*args: Any, **kwargs: Any) -> Any:
            value = wrapped(*args, **kwargs)
            if isinstance(value, Tensor) and value.ndim == 0:
                value = value.reshape(1).clone()
            return value

        return keep_shape

    @property
    def _no_features(self) -> Tensor:
        return torch.zeros(self.num_features, dtype=torch.bool)

    def compute(self) -> Tensor:
        """:math:`A_j` in percent, ``FloatTensor[r]``.

        Raises:
            ValueError: if no finite sample was seen, or if any sample had NaN/Inf features.
        """
        if int(self.num_nonfinite) > 0:
            raise ValueError(
                f"ActivationStatistics saw {int(self.num_nonfinite)} representation(s) with NaN or Inf "
                f"values (out of {int(self.num_nonfinite + self.num_samples)}); the encoder has diverged"
            )
        if int(self.num_samples) == 0:
            raise ValueError("ActivationStatistics.compute() called before any sample was added")
        return self.counts.double().mul(100.0 / float(self.num_samples)).float()

    @property
    def mean_active(self) -> float:
        r"""Mean size of the highly activating sets, :math:`\frac1N\sum_i |L_i|` (0 when empty)."""
        n = int(self.num_samples)
        return float(self.num_active) / n if n else 0.0
