"""Lightning callback: unreadable image files in the datasets a run trains and validates on.

solo-learn's own ``main_pretrain.py`` builds its datasets (torchvision ``ImageFolder``,
``CustomDatasetWithoutLabels``) before any of our code sees them, and a truncated or corrupt file
there ends the run with PIL's ``OSError``, naming no file. This callback reaches those datasets
through the Trainer and makes them follow ``data.bad_images`` (:mod:`solo_qscore.data.bad_images`):
the first unreadable file stops the run naming it (``error``), or it is skipped and listed (``skip``).

Hooks:
    ``setup``: guard the datasets of the loaders handed to ``trainer.fit`` before Lightning starts
    their worker processes (Lightning keeps them in its loops' data sources; it may iterate the train
    loader as early as ``configure_optimizers``, to count the steps of a schedule, before ``on_fit_start``).
    ``on_train_start``, ``on_sanity_check_start``, ``on_validation_start``: guard what the Trainer
    holds by then (loaders a LightningModule or DataModule returns).
    ``teardown``: one warning with how many files were skipped and which; a temporary list is removed.
"""

from __future__ import annotations

from typing import Any, Optional

from solo_qscore.adapters.lightning import CALLBACK_BASES, rank_zero_warn
from solo_qscore.data.bad_images import SkippedImages, check_policy, guard_images


def _loaders(value: Any) -> list[Any]:
    """The DataLoaders in a loader, a list/tuple/dict of them, or a Lightning ``CombinedLoader``."""
    if value is None:
        return []
    flattened = getattr(value, "flattened", None)
    if isinstance(flattened, list):
        return [dl for item in flattened for dl in _loaders(item)]
    if isinstance(value, dict):
        return [dl for item in value.values() for dl in _loaders(item)]
    if isinstance(value, (list, tuple)):
        return [dl for item in value for dl in _loaders(item)]
    return [value] if hasattr(value, "dataset") else []


def _fit_sources(trainer: Any) -> list[Any]:
    """What was handed to ``trainer.fit`` as train/val dataloaders (not a module or data module)."""
    fit_loop = getattr(trainer, "fit_loop", None)
    val_loop = getattr(getattr(fit_loop, "epoch_loop", None), "val_loop", None)
    found = []
    for loop in (fit_loop, val_loop):
        instance = getattr(getattr(loop, "_data_source", None), "instance", None)
        if instance is not None and not hasattr(instance, "train_dataloader"):  # loaders, not a (data) module
            found.extend(_loaders(instance))
    return found


class BadImagesCallback(*CALLBACK_BASES):
    """Applies ``data.bad_images`` (``error`` | ``skip``) to every image-folder dataset of the run.

    Args:
        policy: ``error`` (stop at the first unreadable file, naming it) or ``skip``.
        skipped: the list skipped files go to (shared with the evaluation loaders of the run);
            a temporary one when not given.
    """

    def __init__(self, policy: str = "error", skipped: Optional[SkippedImages] = None) -> None:
        super().__init__()
        self.policy = check_policy(policy)
        self.skipped = skipped if skipped is not None else SkippedImages()

    def _guard(self, loaders: list[Any]) -> None:
        for loader in loaders:
            guard_images(getattr(loader, "dataset", None), self.policy, self.skipped)

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._guard(_fit_sources(trainer))

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._guard(_loaders(getattr(trainer, "train_dataloader", None)))

    def on_sanity_check_start(self, trainer: Any, pl_module: Any) -> None:
        self._guard(_loaders(getattr(trainer, "val_dataloaders", None)))

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._guard(_loaders(getattr(trainer, "val_dataloaders", None)))

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        message = self.skipped.summary()
        if message is not None:
            rank_zero_warn(message)
        self.skipped.discard()
