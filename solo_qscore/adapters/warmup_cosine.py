r"""Linear warm-up then cosine annealing, stepped once per epoch.

.. math::
    \eta_e = \begin{cases}
      \eta_{start} + (\eta_{base} - \eta_{start})\, e / \max(W - 1, 1) & e < W \\
      \eta_{min} + \tfrac12 (\eta_{base} - \eta_{min}) (1 + \cos(\pi (e - W) / (E - W))) & e \ge W
    \end{cases}

with ``W`` warm-up epochs and ``E`` epochs in all; solo-learn 1.0.2 uses this schedule through
``pl_bolts``, which cannot be installed beside Lightning 2 (SPEC §5 fix 1). The values are those
of ``pl_bolts.optimizers.lr_scheduler.LinearWarmupCosineAnnealingLR``: its warm-up divides by
``W - 1``, so the base rate is reached at epoch ``W - 1`` and held at epoch ``W`` (where the cosine
starts); after ``E`` epochs the rate stays at :math:`\eta_{min}`.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class LinearWarmupCosineAnnealingLR(LRScheduler):
    """Per-epoch linear warm-up from ``warmup_start_lr`` to each group's lr, then cosine to ``eta_min``."""

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_epochs: float,
        max_epochs: int,
        warmup_start_lr: float = 0.0,
        eta_min: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if max_epochs <= 0 or warmup_epochs < 0:
            raise ValueError(f"need max_epochs > 0 and warmup_epochs >= 0, got {max_epochs}, {warmup_epochs}")
        self.warmup_epochs = warmup_epochs
        self.max_epochs = max_epochs
        self.warmup_start_lr = warmup_start_lr
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr: float, epoch: int) -> float:
        """The learning rate of a group with base ``base_lr`` at ``epoch`` (closed form)."""
        if epoch < self.warmup_epochs:
            return self.warmup_start_lr + (base_lr - self.warmup_start_lr) * epoch / max(self.warmup_epochs - 1, 1)
        span = max(self.max_epochs - self.warmup_epochs, 1)
        progress = min((epoch - self.warmup_epochs) / span, 1.0)
        return self.eta_min + 0.5 * (base_lr - self.eta_min) * (1.0 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float]:
        return [self.lr_at(base, self.last_epoch) for base in self.base_lrs]
