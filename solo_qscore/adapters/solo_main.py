"""solo-learn main (1.0.6: ``lightning.pytorch``, Hydra configs, ``Method(cfg)``) adapter: the public names.

Everything specific to solo-learn main lives in the adapter modules; the core never imports them. A user
who keeps solo-learn's own ``main_pretrain.py`` adds two lines::

    model = with_qscore(METHODS[cfg.method])(cfg)
    callbacks += qscore_callbacks(cfg)

This module is the import path users know; each name lives in the module of its concept:

* :mod:`~solo_qscore.adapters.solo_method`: :func:`with_qscore` (any solo-learn method with Q-Score, IFM,
  lasso and hard negatives), :func:`build_model`, :func:`method_name`;
* :mod:`~solo_qscore.adapters.solo_ifm`: the IFM training steps, one per InfoNCE method;
* :mod:`~solo_qscore.adapters.solo_callbacks`: :func:`qscore_callbacks`;
* :mod:`~solo_qscore.adapters.solo_config`: :func:`adapt_to_machine`, :func:`prepare_config`,
  :func:`eval_data_config`, :func:`run_view`;
* :mod:`~solo_qscore.adapters.solo_data`: :func:`make_pretrain_loader`, :func:`validation_loader`;
* :mod:`~solo_qscore.adapters.solo_checkpoint`: :func:`read_checkpoint`, :func:`load_run`,
  :func:`source_config`, :func:`load_weights_into`, :func:`check_resume_checkpoint`, :class:`CheckpointError`;
* :mod:`~solo_qscore.adapters.solo_backbone`: the CIFAR stem rule.
"""

from __future__ import annotations

from solo_qscore.adapters.solo_backbone import apply_cifar_stem, uses_cifar_stem
from solo_qscore.adapters.solo_callbacks import SKIPPED_IMAGES_FILE, qscore_callbacks
from solo_qscore.adapters.solo_checkpoint import (
    CheckpointError,
    check_resume_checkpoint,
    load_run,
    load_weights_into,
    read_checkpoint,
    source_config,
)
from solo_qscore.adapters.solo_config import (
    SOLO_DATASETS,
    adapt_to_machine,
    eval_data_config,
    prepare_config,
    run_environment,
    run_view,
    solo_version,
)
from solo_qscore.adapters.solo_data import make_pretrain_loader, validation_loader
from solo_qscore.adapters.solo_ifm import IFM_STEPS
from solo_qscore.adapters.solo_method import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_KEY,
    QScoreMixin,
    build_model,
    method_name,
    with_qscore,
)

__all__ = [
    "CHECKPOINT_FORMAT", "CHECKPOINT_KEY", "IFM_STEPS", "SKIPPED_IMAGES_FILE", "SOLO_DATASETS", "CheckpointError",
    "QScoreMixin", "adapt_to_machine", "apply_cifar_stem", "build_model",
    "check_resume_checkpoint", "eval_data_config", "load_run", "load_weights_into", "make_pretrain_loader",
    "method_name", "prepare_config", "qscore_callbacks", "read_checkpoint", "run_environment", "run_view",
    "solo_version", "source_config", "uses_cifar_stem", "validation_loader", "with_qscore",
]
