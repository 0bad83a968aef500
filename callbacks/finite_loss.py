"""Lightning callback: stop a run at its first non-finite training loss, before diverged weights are saved.

A NaN or Inf loss (a temperature near 0, a learning rate far too high, half precision overflowing) turns
every weight into NaN at the next optimiser step; Lightning trains on and ModelCheckpoint writes those
weights over ``last.ckpt``. This callback raises :class:`NonFiniteLossError` instead, so the run ends with
a message that says where and why, and the checkpoints written before it, all of finite weights, are kept.

No host sync per step on an accelerator: each step only updates an on-device flag
(``bad |= ~isfinite(loss)``, with the position and value of the first bad loss), read every
``log_every_n_steps`` steps, before validation (whose end is when ModelCheckpoint saves) and at the end of
each epoch (callbacks run before ModelCheckpoint there; Lightning orders checkpoint callbacks last). On the
CPU a read costs nothing, so it is read every step. Whatever saves a checkpoint, whenever (ModelCheckpoint
every n steps, solo-learn's own ``Checkpointer``), :meth:`on_save_checkpoint` checks the flag and the weights
first and raises before anything is written.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import Tensor

from solo_qscore.adapters.lightning import CALLBACK_BASES
from solo_qscore.config import ConfigError
from solo_qscore.core._validation import check_count

CAUSES = ("likely causes: a learning rate too high (optimizer.lr), a temperature too small "
          "(method_kwargs.temperature), or half precision overflowing (precision=16-mixed; "
          "try bf16-mixed or 32-true)")


class NonFiniteLossError(ConfigError):
    """The training loss became NaN or Inf and the run was stopped (a ``ConfigError``: the fix is in the
    config, so the command line answers with one line and exit code 2)."""


class FiniteLossCallback(*CALLBACK_BASES):
    """Raises :class:`NonFiniteLossError` at the first non-finite training loss; never saves NaN weights.

    Args:
        check_every_n_steps: read the on-device flag every this many training batches (default: every
            batch on the CPU, the trainer's ``log_every_n_steps`` on an accelerator).
    """

    def __init__(self, check_every_n_steps: Optional[int] = None) -> None:
        super().__init__()
        self.check_every_n_steps = (None if check_every_n_steps is None
                                    else check_count(check_every_n_steps, "check_every_n_steps"))
        self._bad: Optional[Tensor] = None  # bool, on the loss's device: a loss so far was not finite
        self._first_index: Optional[Tensor] = None  # index in `_window` of the first such loss
        self._first_loss: Optional[Tensor] = None  # its value
        self._window: list[tuple[int, int, int]] = []  # (epoch, batch, global step) of the batches not yet read

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._bad = self._first_index = self._first_loss = None
        self._window = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, Tensor):  # a skipped step (training_step returned None)
            return
        loss = loss.detach()
        if self._bad is None:
            self._bad = torch.zeros((), dtype=torch.bool, device=loss.device)
            self._first_index = torch.zeros((), dtype=torch.long, device=loss.device)
            self._first_loss = torch.zeros((), dtype=torch.float32, device=loss.device)
        now = ~torch.isfinite(loss).all()
        new = now & ~self._bad
        self._first_index = torch.where(new, len(self._window), self._first_index)  # python scalars: no copy
        self._first_loss = torch.where(new, loss.float().reshape(-1)[0], self._first_loss)
        self._bad |= now
        self._window.append((trainer.current_epoch, batch_idx, trainer.global_step))
        every = self.check_every_n_steps
        if every is None:
            every = 1 if loss.device.type == "cpu" else max(1, int(getattr(trainer, "log_every_n_steps", 50)))
        if len(self._window) >= every:
            self.check(trainer)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self.check(trainer)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self.check(trainer)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.check(trainer)

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict) -> None:
        """Called while a checkpoint is assembled, before it is written: refuse diverged weights.

        No collective here (a checkpoint may be saved from one process only): the local flag with a single
        process, and in any case the weights, which DDP keeps identical on every process.
        """
        if trainer.world_size == 1:
            self.check(trainer, sync=False)
        params = [p.detach() for p in pl_module.parameters() if p.is_floating_point()]
        if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
            bad = sum(int((~torch.isfinite(p)).sum()) for p in params)
            raise NonFiniteLossError(
                f"the model's weights are no longer finite ({bad} NaN/Inf values) at epoch "
                f"{trainer.current_epoch}, global step {trainer.global_step}; the run was stopped before "
                f"writing a checkpoint of them (the earlier checkpoints are kept); {CAUSES}")

    def check(self, trainer: Any, sync: bool = True) -> None:
        """Read the flag (one host sync; across DDP processes when ``sync``); raise if a loss was not finite."""
        if self._bad is None:
            return
        here = anywhere = bool(self._bad)
        if sync and trainer.world_size > 1:
            anywhere = trainer.strategy.reduce_boolean_decision(here, all=False)
        if not anywhere:
            self._window = []
            return
        if not here:  # another process saw it; every process stops at the same read
            raise NonFiniteLossError(f"the training loss became NaN or Inf on another process by epoch "
                                     f"{trainer.current_epoch}, global step {trainer.global_step}; the run was "
                                     f"stopped there and no checkpoint was written after it; {CAUSES}")
        epoch, batch, step = self._window[int(self._first_index)]
        value = float(self._first_loss)
        shown = "NaN" if math.isnan(value) else ("Inf" if value > 0 else "-Inf")
        raise NonFiniteLossError(
            f"the training loss became {shown} at epoch {epoch}, batch {batch} (global step {step}); the run was "
            f"stopped there and no checkpoint was written after it{_kept(trainer)}; {CAUSES}")


def _kept(trainer: Any) -> str:
    """``" (the last one, ..., is kept)"`` when the trainer's ModelCheckpoint has written a ``last.ckpt``."""
    callback = getattr(trainer, "checkpoint_callback", None)
    path = getattr(callback, "last_model_path", "") or getattr(callback, "best_model_path", "")
    return f" (the last one, {path}, is kept)" if path else ""
