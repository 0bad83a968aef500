"""Lightning callbacks that keep a ``solo-qscore pretrain`` run's own books: the loss of every step (smoke
runs), how long training took, the wandb run a ``--resume`` continues, and when an ``--overwrite``d run
may be deleted. :func:`solo_qscore.train.pretrain` adds them; each subclasses every installed Lightning
``Callback`` class, as the other callbacks do."""

from __future__ import annotations

import time
from typing import Any, Optional

from solo_qscore.adapters.lightning import CALLBACK_BASES, is_wandb_logger, timer_types


class LossHistory(*CALLBACK_BASES):
    """Records the training loss of every step (only used by smoke runs: ``.item()`` syncs)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss.detach()))


class TrainClock(*CALLBACK_BASES):
    """How long training took and whether Lightning's ``max_time`` cut it short, read in ``on_train_end``
    before the probe report (a later callback's ``on_train_end``) runs, so that its time is not counted."""

    def __init__(self) -> None:
        self.start: Optional[float] = None
        self.seconds: Optional[float] = None
        self.stopped_by_time = False

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = time.monotonic()

    def on_train_end(self, trainer, pl_module) -> None:
        if self.start is not None:
            self.seconds = time.monotonic() - self.start
        timer = next((c for c in trainer.callbacks if isinstance(c, timer_types())), None)
        remaining = timer.time_remaining() if timer is not None else None
        # the planned steps not all taken, and the time up: the budget stopped it (not the last epoch's end)
        self.stopped_by_time = bool(remaining is not None and remaining <= 0
                                    and trainer.global_step < trainer.estimated_stepping_batches)


class RunRecord(*CALLBACK_BASES):
    """Stores the wandb run id in checkpoints, so ``--resume`` continues the same wandb run, and
    finishes that run when the fit ends (everything is flushed to its record, and a later
    :func:`~solo_qscore.train.pretrain` in the same process starts its own run instead of logging into this one)."""

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        run_id = getattr(self.logger, "version", None) if is_wandb_logger(self.logger) else None  # CSVLogger: an int
        checkpoint["solo_qscore_run"] = {"wandb_id": str(run_id) if run_id else None}

    def teardown(self, trainer, pl_module, stage: str) -> None:
        # after every other callback's hooks (the probe logs its report in on_train_end);
        # ``_experiment``, not ``experiment``: never start a run only to finish it
        run = getattr(self.logger, "_experiment", None) if is_wandb_logger(self.logger) else None
        if run is not None and trainer.is_global_zero and hasattr(run, "finish"):
            run.finish()


class CommitRunFolder(*CALLBACK_BASES):
    """Deletes the run an ``--overwrite`` replaced once the new run has trained its first step (``folder``: a
    :class:`~solo_qscore.output_folder.RunFolder`, whose ``commit``, until then, a failure undoes)."""

    def __init__(self, folder: Any) -> None:
        self.folder = folder

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.folder.commit()
