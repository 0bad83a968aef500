r"""The Q-Score report: does Q predict which samples a linear probe gets right? (docs/CONVENTIONS.md §7)

:func:`qscore_report` is a pure function of cached representations, labels and a
:class:`~solo_qscore.report.config.ReportConfig`:

1. :math:`A_j` over the train set (:class:`~solo_qscore.ActivationStatistics`, in batches) and the
   discriminative set :math:`D` = ranks of ``A`` in the percentile band ``[p_lo, p_hi)``.
2. A linear probe (:func:`~solo_qscore.probe.linear.fit_linear_probe`) fitted on the train set marks each
   validation sample correct or misclassified.
3. :math:`Q_i` of every validation sample (:func:`~solo_qscore.q_score`), then AUROC and AUPRC of Q
   (:mod:`~solo_qscore.report.separation`).
4. The compression study (:mod:`~solo_qscore.report.compression`).
5. Class-feature associations (paper Fig. 1, bar plots): for each discriminative feature, the share
   of each class among the train samples that highly activate it
   (:mod:`solo_qscore.analysis.associations`).
6. The per-sample table of the validation set (:mod:`~solo_qscore.report.samples`) and the heat map's
   class means (:mod:`~solo_qscore.report.heatmap`). Drawing is :mod:`~solo_qscore.report.figures`,
   writing :mod:`~solo_qscore.report.writer`, logging :mod:`~solo_qscore.report.wandb`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from solo_qscore._progress import progress
from solo_qscore.analysis.associations import association_summary, feature_class_associations
from solo_qscore.core._validation import check_finite_rows, check_representations
from solo_qscore.core.discriminative import band_ranks, discriminative_mask
from solo_qscore.core.qscore import q_quantiles, q_score
from solo_qscore.core.statistics import ActivationStatistics
from solo_qscore.probe.linear import probe_correctness
from solo_qscore.report.compression import compression_study
from solo_qscore.report.config import ReportConfig
from solo_qscore.report.heatmap import heatmap_arrays
from solo_qscore.report.result import Compression, QScoreReport, ReportArrays
from solo_qscore.report.samples import num_active, sample_columns
from solo_qscore.report.separation import separation, subsampled_curves

__all__ = ["qscore_report"]


def qscore_report(
    train_h: Tensor,
    train_y: Tensor,
    val_h: Tensor,
    val_y: Tensor,
    config: Optional[ReportConfig] = None,
    num_classes: Optional[int] = None,
    class_names: Optional[Sequence[str]] = None,
) -> QScoreReport:
    r"""Compute the Q-Score report of frozen representations (see the module docstring).

    ``D`` and ``A`` come from the train set, ``Q`` and the probe outcome from the validation set.
    With ``c_i = 1[probe(h_i) = y_i]`` and :math:`Q_i` the Q-Score (Q-Score paper eq. 1),
    ``auroc = AUROC(Q, c)``, ``auprc = AP(Q, c)`` whose chance level is ``base_rate = mean(c)``
    (= ``accuracy``), ``auroc_misclassified = AUROC(-Q, 1-c)``, ``auprc_misclassified = AP(-Q, 1-c)``.

    Args:
        train_h, train_y: train representations ``[N, r]`` (raw backbone output) and labels.
        val_h, val_y: validation representations ``[M, r]`` and labels.
        config: what to compute (:class:`~solo_qscore.report.config.ReportConfig`; default: its defaults).
        num_classes: defaults to ``max label + 1`` over train and validation.
        class_names: names of the classes (index = label) for the figures and the associations
            table (see :func:`~solo_qscore.analysis.associations.dataset_class_names`); ``None``: indices.

    Returns:
        A :class:`~solo_qscore.report.result.QScoreReport`: JSON-ready fields (metrics may be ``None``
        when undefined, then ``note`` says why; :meth:`~solo_qscore.report.result.QScoreReport.to_json`),
        plus ``arrays`` (:class:`~solo_qscore.report.result.ReportArrays`, not in the JSON): numpy arrays
        for the figures, the per-sample table of the validation set (``arrays.samples``, see
        :func:`~solo_qscore.report.samples.sample_table`), ``discriminative`` (``D``) and the fitted
        probe (``arrays.probe``, a :class:`~solo_qscore.probe.linear.LinearProbe`).

    Raises:
        ValueError: NaN/Inf in the representations, empty sets, or inconsistent shapes.
    """
    config = config if config is not None else ReportConfig()
    eps, band, r = config.eps, config.band, train_h.shape[1]
    train_y, val_y, num_classes, class_names = _checked_inputs(train_h, train_y, val_h, val_y, num_classes,
                                                               class_names)
    notes: list[str] = []
    # 1. activation frequencies and the discriminative set, on the train set
    A, mean_active, D = _activation_band(train_h, config, notes)
    n_d = int(D.sum())
    # 2. the probe: which validation samples are classified correctly; 4. compression study
    result, compression = _fit_probes(train_h, train_y, val_h, val_y, A, D, num_classes, config)
    correct = result.correct.cpu()
    val_y_cpu = val_y.cpu()
    n_val, n_correct = int(correct.numel()), int(correct.sum())
    _single_class_notes(train_y, val_y_cpu, notes)
    # 3. Q-Score of the validation samples and how well it separates correct from misclassified
    q = q_score(val_h, D.to(val_h.device), eps=eps).double().cpu()
    view, mirror = separation(q, correct, n_d, notes)
    confidence = result.probs.cpu().max(dim=1).values.double()
    # 5. class-feature associations of the discriminative features, on the train set like A and D
    assoc = feature_class_associations(train_h, train_y, D.to(train_h.device), eps=eps, num_classes=num_classes)
    settings = config.associations
    associations = association_summary(assoc, class_names=class_names, max_features=settings.max_features,
                                       top_k=settings.top_k, min_support=settings.min_support)
    associations["population"] = "train"
    # 6. the per-sample table of the validation set
    preds = result.preds.cpu().numpy()
    samples = sample_columns("val", np.arange(n_val), val_y_cpu.numpy(), preds, confidence.numpy(), q.numpy(),
                             num_active(val_h, eps, int(config.batch_size)))
    accuracy = result.accuracy
    return QScoreReport(
        auroc=view.auroc if view else None,
        auprc=view.auprc if view else None,
        accuracy=accuracy,
        base_rate=accuracy,
        auroc_misclassified=mirror.auroc if mirror else None,
        auprc_misclassified=mirror.auprc if mirror else None,
        base_rate_misclassified=1.0 - accuracy,
        num_features=r,
        num_discriminative=n_d,
        band_ranks=list(band_ranks(r, band[0], band[1])),
        eps=eps,
        band=list(band),
        num_train=int(train_h.shape[0]),
        num_val=n_val,
        num_correct=n_correct,
        num_misclassified=n_val - n_correct,
        num_classes=int(num_classes),
        mean_active=float(mean_active),
        **_q_and_confidence_stats(q, confidence, correct),
        probe={
            "num_iterations": result.probe.num_iterations,
            "final_loss": result.probe.final_loss,
            **{k: v for k, v in config.probe.items() if isinstance(v, (int, float, bool, str))},
        },
        note="; ".join(notes) if notes else None,
        curves=subsampled_curves(view, mirror, config.max_curve_points),
        compression=compression,
        class_names=class_names,
        associations=associations,
        arrays=ReportArrays(
            A=A.double().cpu().numpy(),
            discriminative=D.cpu().numpy(),
            q=q.numpy(),
            correct=correct.numpy(),
            val_y=val_y_cpu.numpy(),
            preds=preds,
            confidence=confidence.numpy(),
            samples=samples,
            probe=result.probe,
            binary_correct=view,
            binary_misclassified=mirror,
            heatmap=heatmap_arrays(val_h.cpu(), val_y_cpu, correct, D.cpu(), num_classes, config.heatmap_max_classes),
            associations=assoc,
        ),
    )


def _check_inputs(h: Tensor, y: Tensor, name: str, num_features: Optional[int] = None) -> None:
    check_representations(h, f"{name}_h")
    if h.shape[0] == 0:
        raise ValueError(f"{name}_h is empty: the Q-Score report needs at least one {name} sample")
    if num_features is not None and h.shape[1] != num_features:
        raise ValueError(f"{name}_h has {h.shape[1]} features but train_h has {num_features}")
    check_finite_rows(h, f"{name}_h")
    if not isinstance(y, Tensor) or y.ndim != 1 or y.shape[0] != h.shape[0]:
        shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"{name}_y must be a 1-D tensor of {h.shape[0]} class indices, got {shape}")
    if y.is_floating_point() or y.dtype == torch.bool or int(y.min()) < 0:
        raise ValueError(f"{name}_y must hold non-negative integer class indices")


def _checked_inputs(
    train_h: Tensor, train_y: Tensor, val_h: Tensor, val_y: Tensor, num_classes: Optional[int],
    class_names: Optional[Sequence[str]],
) -> tuple[Tensor, Tensor, int, Optional[list[str]]]:
    """Checked inputs of :func:`qscore_report`: long labels, the number of classes, the class names."""
    _check_inputs(train_h, train_y, "train")
    _check_inputs(val_h, val_y, "val", num_features=train_h.shape[1])
    train_y = train_y.long().to(train_h.device)
    val_y = val_y.long().to(val_h.device)
    if num_classes is None:
        num_classes = max(int(train_y.max()), int(val_y.max())) + 1
    if class_names is not None:
        class_names = [str(name) for name in class_names]
        if len(class_names) < num_classes:
            raise ValueError(f"class_names has {len(class_names)} names but there are {num_classes} classes")
    return train_y, val_y, num_classes, class_names


def _activation_band(train_h: Tensor, config: ReportConfig, notes: list[str]) -> tuple[Tensor, float, Tensor]:
    """``A``, the mean ``|L_i|`` and ``D`` of the train set (step 1 of :func:`qscore_report`)."""
    r, band, batch_size = train_h.shape[1], config.band, int(config.batch_size)
    # the report is computed where the features are: never wait for other processes
    stats = ActivationStatistics(r, eps=config.eps, sync_on_compute=False).to(train_h.device)
    for start in range(0, train_h.shape[0], batch_size):
        stats.update(train_h[start : start + batch_size])
    A = stats.compute()
    D = discriminative_mask(A, band[0], band[1])
    if not int(D.sum()):
        notes.append(
            f"the band [{band[0]:g}, {band[1]:g}) selects no feature of r = {r}: D is empty, so Q = 0 for "
            "every sample and AUROC = 0.5 (AUPRC = base rate) by construction"
        )
    return A, stats.mean_active, D


def _fit_probes(
    train_h: Tensor, train_y: Tensor, val_h: Tensor, val_y: Tensor, A: Tensor, D: Tensor, num_classes: int,
    config: ReportConfig,
) -> tuple[Any, Optional[Compression]]:
    """The report's probe (step 2) and the compression study (step 4), under one progress bar."""
    # one bar over all probe fits (this one and the compression study's), drawn only if they are slow
    fits = progress(total=1, desc="linear probe fits", unit="fit")
    try:
        result = probe_correctness(train_h, train_y, val_h, val_y, num_classes=num_classes, **config.probe)
        fits.update(1)
        compression = None
        if config.compression is not None and config.compression.fractions:
            compression = compression_study(train_h.float(), train_y, val_h.float().to(train_h.device),
                                            val_y.to(train_h.device), A, D, result.accuracy, num_classes,
                                            config.compression, config.probe, bar=fits)
    finally:
        fits.close()
    return result, compression


def _single_class_notes(train_y: Tensor, val_y: Tensor, notes: list[str]) -> None:
    if int(torch.unique(val_y).numel()) == 1:
        notes.append(f"the validation set has a single class ({int(val_y[0])})")
    if int(torch.unique(train_y).numel()) == 1:
        notes.append(f"the train set has a single class ({int(train_y[0])}): the probe predicts it everywhere")


def _masked_mean(values: Tensor, mask: Tensor) -> Optional[float]:
    return float(values[mask].mean()) if bool(mask.any()) else None


def _q_and_confidence_stats(q: Tensor, confidence: Tensor, correct: Tensor) -> dict[str, Any]:
    """The report's ``q_*`` and ``confidence_*`` fields."""
    return {
        "q_mean": float(q.mean()),
        "q_mean_correct": _masked_mean(q, correct),
        "q_mean_misclassified": _masked_mean(q, ~correct),
        "q_zero_fraction": float((q == 0).double().mean()),
        "q_quantiles": {f"{p:g}": value for p, value in q_quantiles(q).items()},
        "confidence_mean": float(confidence.mean()),
        "confidence_mean_correct": _masked_mean(confidence, correct),
        "confidence_mean_misclassified": _masked_mean(confidence, ~correct),
    }
