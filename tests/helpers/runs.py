"""Extra callbacks handed to ``pretrain`` by the tests."""

from __future__ import annotations

import lightning.pytorch as pl


class _StepCounter(pl.Callback):
    """An extra callback handed to ``pretrain``: counts the optimiser steps it sees."""

    steps = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        type(self).steps += 1


class _FailsBeforeTheFirstStep(pl.Callback):
    """An extra callback handed to ``pretrain``: the run crashes once training starts, before its first step."""

    def on_train_start(self, trainer, pl_module):
        raise RuntimeError("a crash before the first step")
