"""The callbacks a solo-learn run needs for Q-Score: the non-finite-loss stop, the activation statistics
(D), the probe, and ``data.bad_images`` on every image folder the run reads."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig

from solo_qscore.adapters.solo_config import bad_images_policy, check_eval_format, eval_data_config
from solo_qscore.config import with_plugin_defaults

#: the list of unreadable images a run skipped (data.bad_images=skip), in its output folder
SKIPPED_IMAGES_FILE = Path("logs") / "skipped_images.jsonl"


def qscore_callbacks(cfg: DictConfig, output_dir: Optional[str | Path] = None,
                     seed_from_train_set: bool = False) -> list:
    """The callbacks a run needs: a stop at the first non-finite training loss (which never lets a
    checkpoint of NaN weights be written), activation statistics (refreshing D each epoch), the label-free
    metrics of the training features each epoch (``label_free/rankme``, ``alpha_req``, ``embedding_std``) and, when
    ``cfg.probe.enabled``, the Q-Score probe (its report written to ``output_dir/probe``), and
    ``data.bad_images`` applied to every image folder the run reads (solo-learn's own datasets too).

    The probe needs labelled classes: on an image folder without them (``data.no_labels``, no class
    sub-folders, a single class) it is skipped with a one-line warning; the statistics and D are not.

    Args:
        seed_from_train_set: fill D by one pass over the train set before training (further-training
            a pre-trained encoder, as the paper does), so the regulariser is on from the first step.
    """
    from solo_qscore.adapters.lightning import rank_zero_warn
    from solo_qscore.analysis.associations import dataset_class_names
    from solo_qscore.callbacks import (
        ActivationStatisticsCallback,
        BadImagesCallback,
        FiniteLossCallback,
        LabelFreeMetricsCallback,
        QScoreProbeCallback,
    )
    from solo_qscore.data import SkippedImages, make_eval_loader, make_eval_loaders, missing_labels
    from solo_qscore.report.config import ReportConfig

    cfg = with_plugin_defaults(cfg)
    qcfg = cfg.qscore
    band = (float(qcfg.band[0]), float(qcfg.band[1]))
    exact = qcfg.statistics == "dataloader"
    data_cfg = eval_data_config(cfg)
    policy = bad_images_policy(cfg)
    skipped = SkippedImages(None if output_dir is None else Path(output_dir) / SKIPPED_IMAGES_FILE)
    no_labels = missing_labels(data_cfg) if cfg.probe.enabled else None
    if no_labels is not None:
        rank_zero_warn(f"solo-qscore: the probe is skipped: {no_labels}, so it has no classes to predict; "
                       "the activation statistics and D are computed as usual")
    probe = bool(cfg.probe.enabled) and no_labels is None
    train_loader = val_loader = None
    if probe or exact or seed_from_train_set:
        check_eval_format(cfg)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the fallback warning was given when training data loaded
            if probe:
                train_loader, val_loader = make_eval_loaders(data_cfg, skipped=skipped)
            else:
                train_loader = make_eval_loader(data_cfg, skipped=skipped)
    callbacks: list = [FiniteLossCallback(), ActivationStatisticsCallback(  # first: stop a NaN loss before all else
        eps=float(qcfg.eps), band=band, dataloader=train_loader if (exact or seed_from_train_set) else None,
        exact=exact), LabelFreeMetricsCallback()]  # RankMe, alpha-ReQ, embedding std of the training features
    if probe:
        out = None if output_dir is None else str(Path(output_dir) / "probe")
        callbacks.append(QScoreProbeCallback(
            train_loader, val_loader, every_n_epochs=int(cfg.probe.every_n_epochs),
            config=ReportConfig.from_run(cfg), out_dir=out,
            class_names=dataset_class_names(train_loader.dataset)))
    callbacks.append(BadImagesCallback(policy, skipped))
    return callbacks
