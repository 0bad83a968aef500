"""Lightning 2 under either of its two import names: ``lightning.pytorch`` and ``pytorch_lightning``.

solo-learn main (and most new code) uses ``lightning.pytorch``; older code and many users still
import ``pytorch_lightning``. The two packages define distinct ``Callback`` and ``WandbLogger``
classes, and a ``Trainer`` of one namespace rejects callbacks of the other (Lightning 2.1:
``ValueError: Expected a parent``) and would not recognise its logger. This module is the one place
that imports either; the callbacks subclass every ``Callback`` class that is installed, so one
instance works in both Trainers.
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from typing import Any

NAMESPACES = ("lightning.pytorch", "pytorch_lightning")


def _installed(namespace: str) -> bool:
    try:
        return importlib.util.find_spec(namespace) is not None
    except ModuleNotFoundError:  # "lightning" itself missing when asking for "lightning.pytorch"
        return False


def available_namespaces() -> tuple[str, ...]:
    """The Lightning namespaces importable here, ``lightning.pytorch`` first."""
    return tuple(ns for ns in NAMESPACES if _installed(ns))


def _callback_bases() -> tuple[type, ...]:
    bases = tuple(importlib.import_module(ns).Callback for ns in available_namespaces())
    if not bases:
        raise ImportError("solo-qscore's callbacks need Lightning: pip install lightning (or pytorch-lightning)")
    return bases


#: Every installed ``Callback`` class; a class deriving from all of them passes both Trainers' checks.
CALLBACK_BASES: tuple[type, ...] = _callback_bases()


def lightning_module_types() -> tuple[type, ...]:
    """The ``LightningModule`` classes of the installed namespaces."""
    return tuple(importlib.import_module(ns).LightningModule for ns in available_namespaces())


def is_wandb_logger(logger: Any) -> bool:
    """True for a ``WandbLogger`` of either namespace (imports nothing that is not installed)."""
    for ns in available_namespaces():
        try:
            cls = importlib.import_module(f"{ns}.loggers").WandbLogger
        except (ImportError, AttributeError):
            continue
        if isinstance(logger, cls):
            return True
    return False


def wandb_loggers(trainer: Any) -> list[Any]:
    """The trainer's wandb loggers, whichever Lightning namespace they come from."""
    return [logger for logger in getattr(trainer, "loggers", []) if is_wandb_logger(logger)]


def rank_zero_warn(message: str) -> None:
    """Warn once, from global rank 0 only (Lightning's helper when installed)."""
    for ns in available_namespaces():
        try:
            importlib.import_module(f"{ns}.utilities").rank_zero_warn(message)
            return
        except (ImportError, AttributeError):
            continue
    warnings.warn(message, stacklevel=2)


def autocast_dtype(trainer: Any, device: Any) -> Any:
    """The autocast dtype of a trainer's precision, for a forward pass outside training (the probe's
    features): ``bf16-*`` -> bfloat16, ``16-*`` on a GPU -> float16; ``None`` (float32) otherwise."""
    import torch

    precision = str(getattr(trainer, "precision", "32-true"))
    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16") and getattr(device, "type", "cpu") == "cuda":
        return torch.float16
    return None


def solo_lightning() -> Any:
    """``lightning.pytorch``: the namespace of solo-learn main's methods, so the one a solo-learn run's
    ``Trainer``, checkpoint callbacks, loggers and strategies come from (a Trainer rejects another's)."""
    return importlib.import_module("lightning.pytorch")


def timer_types() -> tuple[type, ...]:
    """The ``Timer`` callback classes (Lightning's ``max_time``) of the installed namespaces."""
    return tuple(importlib.import_module(f"{ns}.callbacks").Timer for ns in available_namespaces())
