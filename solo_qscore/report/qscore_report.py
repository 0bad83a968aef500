r"""The Q-Score report: does Q predict which samples a linear probe gets right? (docs/CONVENTIONS.md §7)

:func:`qscore_report` is a pure function of cached representations and labels:

1. :math:`A_j` over the train set (:class:`~solo_qscore.ActivationStatistics`, in batches) and the
   discriminative set :math:`D` = ranks of ``A`` in the percentile band ``[p_lo, p_hi)``.
2. A linear probe (:func:`~solo_qscore.probe.linear.fit_linear_probe`) fitted on the train set marks each
   validation sample correct or misclassified.
3. :math:`Q_i` of every validation sample (:func:`~solo_qscore.q_score`), then AUROC and AUPRC of Q
   as a score for the positive class *correct* (the paper's convention; the AUPRC of a random score
   is the base rate, i.e. the accuracy), and the mirrored view: positive = misclassified, score = -Q.
4. Compression (paper Fig. 2, A.5, A.7): probe accuracy with only ``k`` features kept, for the
   discriminative band, random subsets (mean and std over seeds), the lower and upper tails of ``A``
   and the top-``k`` principal components.
5. Class-feature associations (paper Fig. 1, bar plots): for each discriminative feature, the share
   of each class among the train samples that highly activate it
   (:mod:`solo_qscore.analysis.associations`).

6. Per-sample table (``arrays.samples``): index, label, probe prediction, correct, confidence,
   :math:`Q_i` and :math:`|L_i|` of every validation sample; :func:`sample_table` computes the same
   table for any split (e.g. the train set) from the fitted probe (``arrays.probe``) and :math:`D`.

:func:`write_report` writes ``probe.json``, ``samples.csv`` and the PNG figures atomically (with
``images``, also ``q_extremes.png``: the lowest- and highest-Q samples); :func:`log_report_to_wandb`
sends the report to Weights & Biases.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    binary_precision_recall_curve,
    binary_roc,
)

from solo_qscore._progress import progress
from solo_qscore.analysis.associations import association_summary, feature_class_associations
from solo_qscore.core._validation import check_finite_rows, check_representations
from solo_qscore.core.activations import highly_activating
from solo_qscore.core.discriminative import (
    band_ranks,
    discriminative_mask,
    feature_ranks,
    lower_tail_mask,
    random_mask,
    rank_band_mask,
    upper_tail_mask,
)
from solo_qscore.core.qscore import q_score
from solo_qscore.core.statistics import ActivationStatistics
from solo_qscore.plotting.figures import atomic_file
from solo_qscore.probe.linear import LinearProbe, feature_mean_std, fit_linear_probe, probe_correctness
from solo_qscore.report.result import (
    SAMPLES_FILE,
    QScoreReport,
    ReportArrays,
    as_report,
    report_json,
    to_jsonable,
)

__all__ = [
    "DEFAULT_COMPRESSION_FRACTIONS",
    "QScoreReport",
    "SAMPLE_COLUMNS",
    "associations_figure",
    "band_window_mask",
    "compression_masks",
    "heatmap_figure",
    "log_report_to_wandb",
    "q_extremes_figure",
    "qscore_report",
    "report_figures",
    "sample_table",
    "to_jsonable",
    "write_json_atomic",
    "write_report",
    "write_samples_csv",
]

DEFAULT_COMPRESSION_FRACTIONS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
Q_QUANTILES: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)
PNG_NAMES: tuple[str, ...] = (
    "pr_curve",
    "roc_curve",
    "activation_frequency",
    "compression",
    "discriminative_heatmap",
    "q_histogram",
    "associations",
)
EXTREMES_PNG = "q_extremes"  # written only when the images of the samples are given
SAMPLE_COLUMNS: tuple[str, ...] = ("index", "label", "prediction", "correct", "confidence", "q", "num_active")


# ----------------------------------------------------------------------------------------------- checks
def _check_inputs(h: Tensor, y: Tensor, name: str, num_features: int | None = None) -> None:
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


# ------------------------------------------------------------------------------------------- metrics
def _subsample(n: int, max_points: int) -> np.ndarray:
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, max_points)).astype(np.int64))


def _to_unit_interval(scores: Tensor) -> tuple[Tensor, float, float]:
    """Order-preserving affine map of ``scores`` (float64) to [0, 1].

    torchmetrics treats scores outside [0, 1] as logits and applies a sigmoid; an affine map keeps
    the ranking exact (AUROC/AUPRC depend only on it) and can be inverted for the thresholds.
    """
    lo, hi = float(scores.min()), float(scores.max())
    if hi > lo:
        return (scores - lo) / (hi - lo), lo, hi - lo
    return torch.full_like(scores, 0.5), lo - 0.5, 1.0


def _binary_view(scores: Tensor, positive: Tensor) -> dict[str, Any]:
    """AUROC, AUPRC and the PR/ROC curves of ``scores`` for the positive class ``positive``."""
    unit, offset, scale = _to_unit_interval(scores.double())
    target = positive.long()
    auroc = float(binary_auroc(unit, target, thresholds=None))
    auprc = float(binary_average_precision(unit, target, thresholds=None))
    precision, recall, pr_thr = binary_precision_recall_curve(unit, target, thresholds=None)
    fpr, tpr, roc_thr = binary_roc(unit, target, thresholds=None)
    return {
        "auroc": auroc,
        "auprc": auprc,
        "precision": precision.double().numpy(),
        "recall": recall.double().numpy(),
        "pr_thresholds": (pr_thr.double() * scale + offset).numpy(),
        "fpr": fpr.double().numpy(),
        "tpr": tpr.double().numpy(),
        "roc_thresholds": (roc_thr.double() * scale + offset).numpy(),
    }


# --------------------------------------------------------------------------------------- compression
def band_window_mask(A: Tensor, discriminative: Tensor, size: int) -> Tensor:
    """``size`` consecutive ranks of ``A`` centred on the discriminative band (the band itself at ``|D|``).

    The paper grows and shrinks the band by moving both percentile limits; here the window of
    ``size`` ranks keeps the centre of ``D`` and is shifted inwards when it would leave ``[0, r)``.
    """
    r = A.numel()
    size = int(size)
    if not 0 <= size <= r:
        raise ValueError(f"size must be in [0, {r}], got {size}")
    ranks = feature_ranks(A)
    n_d = int(discriminative.sum())
    if n_d:
        first = int(ranks[discriminative.to(ranks.device)].min())
    else:
        first = r // 2
    start = min(max(first + (n_d - size) // 2, 0), r - size)
    return rank_band_mask(A, start, start + size)


def compression_masks(
    A: Tensor, discriminative: Tensor, size: int, num_random_seeds: int = 5
) -> dict[str, Any]:
    """The feature subsets of size ``size`` compared in the compression study.

    Returns ``{"band": mask, "random": [mask per seed], "lower_tail": mask, "upper_tail": mask}``,
    boolean ``[r]`` masks; random subsets use seeds ``0 .. num_random_seeds-1``.
    """
    r = A.numel()
    return {
        "band": band_window_mask(A, discriminative, size),
        "random": [random_mask(r, size, seed=seed, device=A.device) for seed in range(int(num_random_seeds))],
        "lower_tail": lower_tail_mask(A, size),
        "upper_tail": upper_tail_mask(A, size),
    }


def _compression_sizes(r: int, n_d: int, fractions: Sequence[float]) -> list[int]:
    sizes = {min(r, max(1, int(math.floor(float(f) * r + 0.5)))) for f in fractions if float(f) > 0}
    if n_d > 0:
        sizes.add(n_d)
    return sorted(sizes)


def _compression_study(
    train_x: Tensor,
    train_y: Tensor,
    val_x: Tensor,
    val_y: Tensor,
    A: Tensor,
    discriminative: Tensor,
    full_accuracy: float,
    num_classes: int,
    fractions: Sequence[float],
    num_random_seeds: int,
    probe_kwargs: Mapping[str, Any],
    max_train: int | None = None,
    bar: Any = None,
) -> dict[str, Any]:
    r = train_x.shape[1]
    num_train = train_x.shape[0]
    subsampled = max_train is not None and 0 < int(max_train) < num_train
    if subsampled:
        keep = torch.randperm(num_train, generator=torch.Generator().manual_seed(0))[: int(max_train)]
        keep = keep.sort().values.to(train_x.device)
        train_x, train_y = train_x[keep], train_y[keep]
    n_d = int(discriminative.sum())
    sizes = _compression_sizes(r, n_d, fractions)
    cache: dict[bytes, float] = {}
    if not subsampled:  # the all-features probe is the report's own probe
        cache[torch.ones(r, dtype=torch.bool).numpy().tobytes()] = full_accuracy

    plan = [(k, compression_masks(A, discriminative, k, num_random_seeds)) for k in sizes]
    if bar is not None:  # one PCA fit per size and one per distinct feature subset
        keys = {m.cpu().numpy().tobytes() for _, masks in plan
                for m in (masks["band"], *masks["random"], masks["lower_tail"], masks["upper_tail"])}
        bar.total = (bar.total or 0) + len(sizes) + len(keys - set(cache))
        bar.refresh()

    def tick() -> None:
        if bar is not None:
            bar.update(1)

    def accuracy_of(mask: Tensor) -> float:
        key = mask.cpu().numpy().tobytes()
        if key not in cache:
            idx = mask.nonzero().flatten().to(train_x.device)
            probe = fit_linear_probe(train_x[:, idx], train_y, num_classes=num_classes, **probe_kwargs)
            cache[key] = float((probe.predict(val_x[:, idx]) == val_y).double().mean())
            tick()
        return cache[key]

    # PCA: principal axes of the train features as the probe sees them (standardised unless
    # probe_kwargs says otherwise), largest variance first. The probe on the top-k projections is
    # then fitted without re-standardising, so k = r is a rotation of the full problem (the L2
    # penalty is rotation invariant) and gives the full probe's accuracy.
    train_pc, val_pc = _principal_components(train_x, val_x, bool(probe_kwargs.get("standardize", True)))
    pca_kwargs = {**probe_kwargs, "standardize": False}

    out: dict[str, Any] = {
        "sizes": sizes,
        "fractions": [k / r for k in sizes],
        "band": [],
        "random_mean": [],
        "random_std": [],
        "lower_tail": [],
        "upper_tail": [],
        "pca": [],
    }
    for k, masks in plan:
        out["band"].append(accuracy_of(masks["band"]))
        rnd = np.array([accuracy_of(m) for m in masks["random"]], dtype=float)
        out["random_mean"].append(float(rnd.mean()) if rnd.size else None)
        out["random_std"].append(float(rnd.std()) if rnd.size else None)
        out["lower_tail"].append(accuracy_of(masks["lower_tail"]))
        out["upper_tail"].append(accuracy_of(masks["upper_tail"]))
        probe = fit_linear_probe(train_pc[:, :k].contiguous(), train_y, num_classes=num_classes, **pca_kwargs)
        out["pca"].append(float((probe.predict(val_pc[:, :k].contiguous()) == val_y).double().mean()))
        tick()
    out.update(
        full_accuracy=full_accuracy,
        num_features=r,
        num_discriminative=n_d,
        num_random_seeds=int(num_random_seeds),
        num_train=int(train_x.shape[0]),
        band_rule="window of k consecutive ranks of A centred on the discriminative band",
    )
    return out


def _principal_components(train_x: Tensor, val_x: Tensor, standardize: bool) -> tuple[Tensor, Tensor]:
    """Train and validation features projected on the principal axes of the train features (largest
    variance first), after standardising them (or only centring them without ``standardize``)."""
    r = train_x.shape[1]
    if standardize:
        mean, scale = feature_mean_std(train_x)
    else:
        mean, scale = feature_mean_std(train_x)[0], torch.ones(r, device=train_x.device)
    mean64, scale64 = mean.double(), scale.double()
    cov = torch.zeros(r, r, dtype=torch.float64, device=train_x.device)
    for start in range(0, train_x.shape[0], 16384):
        chunk = (train_x[start : start + 16384].double() - mean64) / scale64
        cov += chunk.t() @ chunk
    _, eigvecs = torch.linalg.eigh(cov / max(train_x.shape[0], 1))
    basis = eigvecs.flip(1).to(train_x.dtype)
    return ((train_x - mean) / scale) @ basis, ((val_x - mean) / scale) @ basis


# ------------------------------------------------------------------------------------------ heat map
def _class_means(hn: Tensor, y: Tensor, select: Tensor, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class mean of the rows of ``hn`` where ``select``; NaN for classes without such rows."""
    rows = select.nonzero().flatten()
    sums = torch.zeros(num_classes, hn.shape[1], dtype=torch.float64)
    sums.index_add_(0, y[rows], hn[rows])
    counts = torch.bincount(y[rows], minlength=num_classes).double()
    means = sums / counts[:, None]
    means[counts == 0] = float("nan")
    return means.numpy(), counts.long().numpy()


def _heatmap_arrays(
    val_h: Tensor, val_y: Tensor, correct: Tensor, discriminative: Tensor, num_classes: int, max_classes: int
) -> dict[str, Any]:
    feature_index = discriminative.nonzero().flatten()
    h = val_h.double()
    hn = h / h.norm(dim=1, keepdim=True).clamp_min(1e-12)
    hd = hn[:, feature_index]
    correct_means, count_correct = _class_means(hd, val_y, correct, num_classes)
    wrong_means, count_wrong = _class_means(hd, val_y, ~correct, num_classes)
    # classes shown: those with both outcomes, most misclassified first, at most max_classes
    eligible = np.flatnonzero((count_correct > 0) & (count_wrong > 0))
    if eligible.size == 0:
        eligible = np.flatnonzero(count_correct + count_wrong > 0)
    ranked = eligible[np.argsort(-count_wrong[eligible], kind="stable")][:max_classes]
    classes = np.sort(ranked)
    # features sorted by the shown class on which their correct-sample mean peaks, then by that peak
    if feature_index.numel() and classes.size:
        shown = correct_means[classes]
        filled = np.where(np.isfinite(shown), shown, -np.inf)
        order = np.lexsort((-filled.max(0), filled.argmax(0)))
    else:
        order = np.arange(feature_index.numel())
    return {
        "feature_index": feature_index.numpy()[order],
        "classes": classes,
        "correct": correct_means[:, order],
        "misclassified": wrong_means[:, order],
        "count_correct": count_correct,
        "count_misclassified": count_wrong,
    }


# ---------------------------------------------------------------------------------------- per sample
def _num_active(h: Tensor, eps: float, batch_size: int = 16384) -> np.ndarray:
    """``|L_i|`` of every row of ``h`` (int64), by chunks so no ``[N, r]`` mask of the whole set is held."""
    counts = [highly_activating(h[start : start + batch_size], eps).sum(1).cpu()
              for start in range(0, h.shape[0], batch_size)]
    return torch.cat(counts).long().numpy() if counts else np.zeros(0, dtype=np.int64)


def _sample_columns(
    split: str,
    index: np.ndarray,
    label: np.ndarray,
    prediction: np.ndarray,
    confidence: np.ndarray,
    q: np.ndarray,
    num_active: np.ndarray,
) -> dict[str, Any]:
    table: dict[str, Any] = {
        "split": str(split),
        "index": np.asarray(index, dtype=np.int64),
        "label": np.asarray(label, dtype=np.int64),
        "prediction": np.asarray(prediction, dtype=np.int64),
        "confidence": np.asarray(confidence, dtype=np.float64),
        "q": np.asarray(q, dtype=np.float64),
        "num_active": np.asarray(num_active, dtype=np.int64),
    }
    table["correct"] = (table["prediction"] == table["label"]).astype(np.int64)
    n = table["index"].shape[0]
    for name in SAMPLE_COLUMNS:
        if table[name].shape != (n,):
            raise ValueError(f"per-sample column {name!r} has shape {table[name].shape}, expected ({n},)")
    return table


def sample_table(
    source: Mapping[str, Any] | LinearProbe,
    h: Tensor,
    y: Tensor,
    discriminative: Tensor | np.ndarray | None = None,
    eps: float | None = None,
    split: str = "val",
    indices: Sequence[int] | np.ndarray | Tensor | None = None,
    batch_size: int = 16384,
) -> dict[str, Any]:
    r"""The per-sample table of any split, given the fitted probe and the discriminative set.

    For each row ``i`` of ``h``: ``index`` (``indices[i]``, default ``i``: the position in the
    evaluated dataset), ``label`` (``y[i]``), ``prediction`` (the probe's argmax), ``correct``
    (0/1), ``confidence`` (the probe's max softmax probability), ``q`` (:math:`Q_i` under ``D``,
    :func:`~solo_qscore.q_score`) and ``num_active`` (:math:`|L_i|`).

    Args:
        source: a report of :func:`qscore_report` (its fitted probe ``arrays.probe``, its ``D``
            from the train set ``arrays.discriminative`` and its ``eps`` are used), or a fitted
            :class:`~solo_qscore.probe.linear.LinearProbe` (then ``discriminative`` is required).
        h, y: representations ``[N, r]`` and labels of the split, e.g. the train set.
        discriminative: ``D`` as a bool mask ``[r]``; overrides the report's.
        eps: threshold of the highly activating sets; default the report's, else 4.
        split: name of the split, kept in the table (``probe.json`` and the figure title show it).
        indices: dataset positions of the rows of ``h`` (default ``0 .. N-1``).
        batch_size: rows per chunk for the probe and :math:`|L_i|`.

    Returns:
        ``{"split": split, column: numpy array, ...}`` with the columns of :data:`SAMPLE_COLUMNS`,
        which :func:`write_samples_csv` and :func:`write_report` (``samples=``) write.
    """
    if isinstance(source, LinearProbe):
        probe = source
        if discriminative is None:
            raise ValueError("sample_table(probe, ...) needs the discriminative set (discriminative=)")
    else:
        report = as_report(source)
        probe = report.arrays.probe if report.arrays is not None else None
        if probe is None:
            raise ValueError("the report has no fitted probe (arrays['probe']): pass a fresh qscore_report")
        if discriminative is None:
            discriminative = report.arrays.discriminative
        if eps is None:
            eps = report.eps
    eps = 4.0 if eps is None else float(eps)
    check_representations(h, f"{split}_h")
    check_finite_rows(h, f"{split}_h")
    if h.shape[1] != probe.num_features:
        raise ValueError(f"{split}_h has {h.shape[1]} features but the probe expects {probe.num_features}")
    if not isinstance(y, Tensor) or y.ndim != 1 or y.shape[0] != h.shape[0]:
        raise ValueError(f"{split}_y must be a 1-D tensor of {h.shape[0]} class indices")
    D = torch.as_tensor(discriminative, dtype=torch.bool)
    if D.shape != (h.shape[1],):
        raise ValueError(f"discriminative must be a bool mask of {h.shape[1]} features, got {tuple(D.shape)}")
    preds, confidence = [], []
    for start in range(0, h.shape[0], int(batch_size)):
        probs = probe(h[start : start + int(batch_size)]).softmax(dim=1)
        best = probs.max(dim=1)
        preds.append(best.indices.cpu())
        confidence.append(best.values.double().cpu())
    n = h.shape[0]
    index = np.arange(n) if indices is None else torch.as_tensor(indices).cpu().numpy()
    if index.shape != (n,):
        raise ValueError(f"indices must hold {n} positions, got shape {index.shape}")
    return _sample_columns(
        split,
        index,
        y.cpu().numpy(),
        torch.cat(preds).numpy() if preds else np.zeros(0, dtype=np.int64),
        torch.cat(confidence).numpy() if confidence else np.zeros(0),
        q_score(h, D.to(h.device), eps=eps).double().cpu().numpy(),
        _num_active(h, eps, int(batch_size)),
    )


# -------------------------------------------------------------------------------------------- report
def qscore_report(
    train_h: Tensor,
    train_y: Tensor,
    val_h: Tensor,
    val_y: Tensor,
    eps: float = 4.0,
    band: tuple[float, float] = (50.0, 95.0),
    num_random_seeds: int = 5,
    compression_fractions: Sequence[float] | None = DEFAULT_COMPRESSION_FRACTIONS,
    probe_kwargs: Mapping[str, Any] | None = None,
    num_classes: int | None = None,
    batch_size: int = 4096,
    max_curve_points: int = 200,
    heatmap_max_classes: int = 20,
    compression_max_train: int | None = None,
    class_names: Sequence[str] | None = None,
    associations_max_features: int = 12,
    associations_top_k: int = 5,
    associations_min_support: int = 5,
) -> QScoreReport:
    r"""Compute the Q-Score report of frozen representations (see the module docstring).

    ``D`` and ``A`` come from the train set, ``Q`` and the probe outcome from the validation set.
    With ``c_i = 1[probe(h_i) = y_i]`` and :math:`Q_i` the Q-Score (Q-Score paper eq. 1),
    ``auroc = AUROC(Q, c)``, ``auprc = AP(Q, c)`` whose chance level is ``base_rate = mean(c)``
    (= ``accuracy``), ``auroc_misclassified = AUROC(-Q, 1-c)``, ``auprc_misclassified = AP(-Q, 1-c)``.

    Args:
        train_h, train_y: train representations ``[N, r]`` (raw backbone output) and labels.
        val_h, val_y: validation representations ``[M, r]`` and labels.
        eps: threshold of the highly activating sets, in standard deviations.
        band: percentile band ``(p_lo, p_hi)`` of the discriminative features.
        num_random_seeds: random subsets per size in the compression study.
        compression_fractions: sizes ``k = round(f r)`` of the compression study (``|D|`` is always
            added); ``None`` or empty skips the study (``compression`` is then ``None``).
        probe_kwargs: keyword arguments of :func:`~solo_qscore.probe.linear.fit_linear_probe`.
        num_classes: defaults to ``max label + 1`` over train and validation.
        batch_size: batch size for the activation statistics.
        max_curve_points: the PR/ROC curves kept in the JSON part are subsampled to this many points.
        heatmap_max_classes: at most this many classes in the heat map (those with most errors).
        compression_max_train: fit the compression probes on at most this many train samples (a
            fixed random subset) to bound its cost (about ``9 x len(sizes)`` probe fits); ``None``
            uses the whole train set.
        class_names: names of the classes (index = label) for the figures and the associations
            table (see :func:`~solo_qscore.analysis.associations.dataset_class_names`); ``None``: indices.
        associations_max_features, associations_top_k, associations_min_support: the associations
            table lists at most this many discriminative features (most class-specific first), each
            with its ``top_k`` classes; features with fewer activating train samples than
            ``min_support`` are ranked last (see
            :func:`~solo_qscore.analysis.associations.association_table`).

    Returns:
        A :class:`~solo_qscore.report.result.QScoreReport`: JSON-ready fields (metrics may be ``None``
        when undefined, then ``note`` says why; :meth:`~solo_qscore.report.result.QScoreReport.to_json`),
        plus ``arrays`` (:class:`~solo_qscore.report.result.ReportArrays`, not in the JSON): numpy arrays
        for the figures, the per-sample table of the validation set (``arrays.samples``, see
        :func:`sample_table`; also ``q``, ``correct``, ``val_y``, ``preds`` and ``confidence``),
        ``discriminative`` (``D``) and the fitted probe (``arrays.probe``, a
        :class:`~solo_qscore.probe.linear.LinearProbe` whose ``predict_proba`` gives the full class
        probabilities). It also reads like the dict it used to be (``report["auroc"]``,
        ``report["arrays"]["q"]``).

    Raises:
        ValueError: NaN/Inf in the representations, empty sets, or inconsistent shapes.
    """
    r = train_h.shape[1]
    train_y, val_y, num_classes, class_names = _checked_inputs(train_h, train_y, val_h, val_y, num_classes,
                                                               class_names)
    probe_kwargs = dict(probe_kwargs or {})
    notes: list[str] = []
    # 1. activation frequencies and the discriminative set, on the train set
    A, mean_active, D = _activation_band(train_h, eps, band, batch_size, notes)
    n_d = int(D.sum())
    # 2. the probe: which validation samples are classified correctly; 4. compression study
    result, compression = _fit_probes(
        train_h, train_y, val_h, val_y, A, D, num_classes, probe_kwargs,
        compression_fractions, num_random_seeds, compression_max_train,
    )
    correct = result.correct.cpu()
    val_y_cpu = val_y.cpu()
    n_val, n_correct = int(correct.numel()), int(correct.sum())
    _single_class_notes(train_y, val_y_cpu, notes)
    # 3. Q-Score of the validation samples and how well it separates correct from misclassified
    q = q_score(val_h, D.to(val_h.device), eps=eps).double().cpu()
    view, mirror = _separation(q, correct, n_d, notes)
    confidence = result.probs.cpu().max(dim=1).values.double()
    # 5. class-feature associations of the discriminative features, on the train set like A and D
    assoc = feature_class_associations(train_h, train_y, D.to(train_h.device), eps=eps, num_classes=num_classes)
    associations = association_summary(assoc, class_names=class_names, max_features=associations_max_features,
                                       top_k=associations_top_k, min_support=associations_min_support)
    associations["population"] = "train"
    # 6. the per-sample table of the validation set
    preds = result.preds.cpu().numpy()
    samples = _sample_columns(
        "val", np.arange(n_val), val_y_cpu.numpy(), preds, confidence.numpy(), q.numpy(),
        _num_active(val_h, eps, int(batch_size)),
    )
    accuracy = result.accuracy
    return QScoreReport(
        auroc=view["auroc"] if view else None,
        auprc=view["auprc"] if view else None,
        accuracy=accuracy,
        base_rate=accuracy,
        auroc_misclassified=mirror["auroc"] if mirror else None,
        auprc_misclassified=mirror["auprc"] if mirror else None,
        base_rate_misclassified=1.0 - accuracy,
        num_features=r,
        num_discriminative=n_d,
        band_ranks=list(band_ranks(r, float(band[0]), float(band[1]))),
        eps=float(eps),
        band=[float(band[0]), float(band[1])],
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
            **{k: v for k, v in probe_kwargs.items() if isinstance(v, (int, float, bool, str))},
        },
        note="; ".join(notes) if notes else None,
        curves=_subsampled_curves(view, mirror, max_curve_points),
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
            heatmap=_heatmap_arrays(val_h.cpu(), val_y_cpu, correct, D.cpu(), num_classes, heatmap_max_classes),
            associations=assoc,
        ),
    )


def _checked_inputs(
    train_h: Tensor, train_y: Tensor, val_h: Tensor, val_y: Tensor, num_classes: int | None,
    class_names: Sequence[str] | None,
) -> tuple[Tensor, Tensor, int, list[str] | None]:
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


def _activation_band(
    train_h: Tensor, eps: float, band: tuple[float, float], batch_size: int, notes: list[str]
) -> tuple[Tensor, float, Tensor]:
    """``A``, the mean ``|L_i|`` and ``D`` of the train set (step 1 of :func:`qscore_report`)."""
    r = train_h.shape[1]
    # the report is computed where the features are: never wait for other processes
    stats = ActivationStatistics(r, eps=eps, sync_on_compute=False).to(train_h.device)
    for start in range(0, train_h.shape[0], int(batch_size)):
        stats.update(train_h[start : start + int(batch_size)])
    A = stats.compute()
    D = discriminative_mask(A, float(band[0]), float(band[1]))
    if not int(D.sum()):
        notes.append(
            f"the band [{band[0]:g}, {band[1]:g}) selects no feature of r = {r}: D is empty, so Q = 0 for "
            "every sample and AUROC = 0.5 (AUPRC = base rate) by construction"
        )
    return A, stats.mean_active, D


def _fit_probes(
    train_h: Tensor,
    train_y: Tensor,
    val_h: Tensor,
    val_y: Tensor,
    A: Tensor,
    D: Tensor,
    num_classes: int,
    probe_kwargs: Mapping[str, Any],
    compression_fractions: Sequence[float] | None,
    num_random_seeds: int,
    compression_max_train: int | None,
) -> tuple[Any, dict[str, Any] | None]:
    """The report's probe (steps 2) and the compression study (step 4), under one progress bar."""
    # one bar over all probe fits (this one and the compression study's), drawn only if they are slow
    fits = progress(total=1, desc="linear probe fits", unit="fit")
    try:
        result = probe_correctness(train_h, train_y, val_h, val_y, num_classes=num_classes, **probe_kwargs)
        fits.update(1)
        compression = None
        if compression_fractions:
            compression = _compression_study(
                train_h.float(),
                train_y,
                val_h.float().to(train_h.device),
                val_y.to(train_h.device),
                A,
                D,
                result.accuracy,
                num_classes,
                compression_fractions,
                num_random_seeds,
                probe_kwargs,
                compression_max_train,
                bar=fits,
            )
    finally:
        fits.close()
    return result, compression


def _single_class_notes(train_y: Tensor, val_y: Tensor, notes: list[str]) -> None:
    if int(torch.unique(val_y).numel()) == 1:
        notes.append(f"the validation set has a single class ({int(val_y[0])})")
    if int(torch.unique(train_y).numel()) == 1:
        notes.append(
            f"the train set has a single class ({int(train_y[0])}): the probe predicts it everywhere"
        )


def _separation(
    q: Tensor, correct: Tensor, n_d: int, notes: list[str]
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The binary views of Q for "correct" and of -Q for "misclassified" (step 3); ``None`` when undefined."""
    n_val, n_correct = int(correct.numel()), int(correct.sum())
    if not 0 < n_correct < n_val:
        outcome = "correctly" if n_correct == n_val else "incorrectly"
        notes.append(
            f"the probe classified all {n_val} validation samples {outcome}: AUROC and AUPRC of Q are "
            "undefined (they need both correct and misclassified samples)"
        )
        return None, None
    if n_d and float(q.max()) == float(q.min()):
        notes.append(
            "Q is constant over the validation set (no sample has a highly activating discriminative "
            "feature): AUROC = 0.5 by construction"
        )
    return _binary_view(q, correct), _binary_view(-q, ~correct)


def _masked_mean(values: Tensor, mask: Tensor) -> float | None:
    return float(values[mask].mean()) if bool(mask.any()) else None


def _q_and_confidence_stats(q: Tensor, confidence: Tensor, correct: Tensor) -> dict[str, Any]:
    """The report's ``q_*`` and ``confidence_*`` fields."""
    quantiles = torch.quantile(q, torch.tensor(Q_QUANTILES, dtype=torch.float64))
    return {
        "q_mean": float(q.mean()),
        "q_mean_correct": _masked_mean(q, correct),
        "q_mean_misclassified": _masked_mean(q, ~correct),
        "q_zero_fraction": float((q == 0).double().mean()),
        "q_quantiles": {f"{p:g}": float(v) for p, v in zip(Q_QUANTILES, quantiles.tolist())},
        "confidence_mean": float(confidence.mean()),
        "confidence_mean_correct": _masked_mean(confidence, correct),
        "confidence_mean_misclassified": _masked_mean(confidence, ~correct),
    }


def _subsampled_curves(
    view: dict[str, Any] | None, mirror: dict[str, Any] | None, max_points: int
) -> dict[str, Any] | None:
    """The PR/ROC curves kept in ``probe.json``, at most ``max_points`` points each."""
    if view is None or mirror is None:
        return None
    pr_idx = _subsample(view["recall"].size, max_points)
    roc_idx = _subsample(view["fpr"].size, max_points)
    mpr_idx = _subsample(mirror["recall"].size, max_points)
    return {
        "pr": {
            "recall": view["recall"][pr_idx].tolist(),
            "precision": view["precision"][pr_idx].tolist(),
        },
        "roc": {"fpr": view["fpr"][roc_idx].tolist(), "tpr": view["tpr"][roc_idx].tolist()},
        "pr_misclassified": {
            "recall": mirror["recall"][mpr_idx].tolist(),
            "precision": mirror["precision"][mpr_idx].tolist(),
        },
    }


# ------------------------------------------------------------------------------------------- writing
def write_json_atomic(payload: Any, path: str | os.PathLike) -> Path:
    """Write ``payload`` as strict JSON to ``path`` via a temp file in the same directory and ``os.replace``.

    If serialisation fails midway, the temp file is removed and a previous ``path`` is left intact.
    """
    with atomic_file(path, binary=False) as handle:
        json.dump(payload, handle, indent=2, allow_nan=False)
        handle.write("\n")
    return Path(path)


def report_figures(report: Mapping[str, Any]) -> dict[str, Any]:
    """Build the report's figures (``name -> matplotlib Figure``) from what the report holds.

    With ``arrays`` (a fresh report) all six figures are built; from a report read back from
    ``probe.json`` only the PR/ROC curves and the compression plot can be.
    """
    from solo_qscore.plotting import figures as plots

    report = as_report(report)
    figures: dict[str, Any] = {}
    arrays = report.arrays
    view = arrays.binary_correct if arrays is not None else None
    mirror = arrays.binary_misclassified if arrays is not None else None
    curves = report.curves or {}
    if view is not None:
        pr = (view["recall"], view["precision"])
        roc = (view["fpr"], view["tpr"])
        mpr = (mirror["recall"], mirror["precision"]) if mirror is not None else (None, None)
    elif curves:
        pr = (curves["pr"]["recall"], curves["pr"]["precision"])
        roc = (curves["roc"]["fpr"], curves["roc"]["tpr"])
        mpr = (curves["pr_misclassified"]["recall"], curves["pr_misclassified"]["precision"])
    else:
        pr = roc = ([], [])
        mpr = (None, None)
    figures["pr_curve"] = plots.pr_curve_figure(
        pr[0],
        pr[1],
        report.auprc,
        report.base_rate,
        mpr[0],
        mpr[1],
        report.auprc_misclassified,
    )
    figures["roc_curve"] = plots.roc_curve_figure(roc[0], roc[1], report.auroc)
    band = _band(report)
    if arrays is not None and arrays.A is not None:
        figures["activation_frequency"] = plots.activation_frequency_figure(
            arrays.A,
            tuple(report.band_ranks),
            band=band,
            eps=4.0 if report.eps is None else report.eps,
            mean_active=report.mean_active,
        )
    if report.compression:
        figures["compression"] = plots.compression_figure(report.compression)
    if arrays is not None and arrays.heatmap is not None:
        figures["discriminative_heatmap"] = heatmap_figure(report)
    if arrays is not None and arrays.q is not None:
        figures["q_histogram"] = plots.q_histogram_figure(arrays.q, arrays.correct, report.auroc)
    if arrays is not None and arrays.associations is not None and report.associations is not None:
        figures["associations"] = associations_figure(report)
    return figures


def _band(report: QScoreReport) -> tuple[float, ...]:
    """The report's percentile band (the paper's default for a report that lacks it)."""
    return tuple((50.0, 95.0) if report.band is None else report.band)


def _class_label(report: QScoreReport, c: int) -> str:
    names = report.class_names
    return str(names[c]) if names is not None and 0 <= c < len(names) else str(c)


def heatmap_figure(report: Mapping[str, Any], title_prefix: str = ""):
    """The heat map of mean discriminative activations of correct vs misclassified samples (paper Fig. 3).

    Rows are the classes with most errors (at most ``heatmap_max_classes``), labelled by name when
    the report has ``class_names``; needs the fresh report's ``arrays``.
    """
    from solo_qscore.plotting import figures as plots

    report = as_report(report)
    if report.arrays is None or report.arrays.heatmap is None:
        raise ValueError("the heat map needs a fresh report's arrays (a probe.json read back has none)")
    heat = report.arrays.heatmap
    band = _band(report)
    classes = heat["classes"]
    present = int(np.count_nonzero(heat["count_correct"] + heat["count_misclassified"]))
    subset = ""
    if len(classes) < present:
        subset = f"; the {len(classes)} of {present} classes with most errors"
    return plots.discriminative_heatmap_figure(
        heat["correct"][classes],
        heat["misclassified"][classes],
        [_class_label(report, int(c)) for c in classes],
        heat["count_correct"][classes],
        heat["count_misclassified"][classes],
        title=f"{title_prefix}Mean activations of the {report.num_discriminative} discriminative features "
        f"per class (band [{band[0]:g}, {band[1]:g}){subset})",
    )


def associations_figure(report: Mapping[str, Any]):
    """Grid of bar plots of the report's ``associations`` table (paper Fig. 1, bar plots)."""
    from solo_qscore.plotting import figures as plots

    report = as_report(report)
    entry = report.associations
    rows = entry.get("features") or []
    title = "Classes among the train samples that highly activate each discriminative feature"
    if entry.get("mean_purity") is not None:
        title += (
            f"\n(most class-specific {len(rows)} of {entry['num_features']}; mean purity over D "
            f"{100 * entry['mean_purity']:.1f}% vs {100 * entry['mean_purity_shuffled']:.1f}% with shuffled labels)"
        )
    return plots.associations_figure(rows, report.class_names, title=title)


def write_samples_csv(table: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write a per-sample table (:func:`sample_table`, ``report.arrays.samples``) as CSV, atomically.

    One row per sample, columns :data:`SAMPLE_COLUMNS` (``correct`` as 0/1, floats with every digit
    so that ``float()`` reads back the exact value), ``\\n`` line ends.
    """
    columns = [np.asarray(table[name]).tolist() for name in SAMPLE_COLUMNS]
    with atomic_file(path, binary=False) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(SAMPLE_COLUMNS)
        writer.writerows(zip(*columns))
    return Path(path)


def _image_getter(images: Any) -> Callable[[int], Any]:
    """``index -> image`` from a dataset / sequence (indexed) or a callable."""
    if hasattr(images, "__getitem__"):
        return lambda index: images[index]
    if callable(images):
        return images
    raise TypeError(f"images must be a dataset, a sequence or a callable index -> image, got {type(images).__name__}")


def q_extremes_figure(
    samples: Mapping[str, Any],
    images: Any,
    k: int = 8,
    class_names: Sequence[str] | None = None,
):
    """Thumbnails of the ``k`` lowest-Q and the ``k`` highest-Q samples of a per-sample table.

    ``images`` gives the image of a sample from its ``index`` column: a dataset (items may be
    ``(image, label)`` pairs, tensors normalised for the network are stretched per channel for
    display), a sequence of images, or a callable ``index -> HxWxC uint8 array / PIL image``.
    Each thumbnail is titled with its label, the probe's prediction (class names when known) and Q;
    misclassified samples are marked in red. Ties in Q (e.g. the many Q = 0 samples) keep the table
    order.
    """
    from solo_qscore.plotting import figures as plots

    q = np.asarray(samples["q"], dtype=float)
    n = q.size
    k = max(0, min(int(k), n))
    order = np.argsort(q, kind="stable")
    low, high = order[:k], order[::-1][:k]
    getter = _image_getter(images)

    def label(c: int) -> str:
        name = str(class_names[c]) if class_names is not None and 0 <= c < len(class_names) else str(c)
        return name if len(name) <= 16 else name[:15] + "\u2026"

    def tiles(rows: np.ndarray) -> list[dict[str, Any]]:
        out = []
        for row in rows.tolist():
            y, pred = int(samples["label"][row]), int(samples["prediction"][row])
            out.append({
                "image": plots.display_image(getter(int(samples["index"][row]))),
                "title": f"{label(y)}\npred: {label(pred)}\nQ = {q[row]:.4g}",
                "wrong": y != pred,
            })
        return out

    split = samples.get("split") or "val"
    zero = float(np.mean(q == 0.0)) if n else 0.0
    tie_note = f"; Q = 0 for {100 * zero:.0f}% of samples" if zero > 0 else ""
    rows = [
        (f"{len(low)} lowest Q", tiles(low)),
        (f"{len(high)} highest Q", tiles(high)),
    ]
    title = (f"Lowest- and highest-Q samples ({split} split, n = {n}{tie_note})\n"
             "each: true label, the probe's prediction, Q-Score; misclassified in red")
    return plots.q_extremes_figure(rows, title=title)


#: every file a report folder holds (the PNGs of :func:`report_figures` and ``q_extremes``); anything
#: else in an existing report folder is kept when :func:`write_report` replaces the report
REPORT_FILES: tuple[str, ...] = ("probe.json", SAMPLES_FILE) + tuple(
    f"{name}.png" for name in ("pr_curve", "roc_curve", "activation_frequency", "compression",
                               "discriminative_heatmap", "q_histogram", "associations", EXTREMES_PNG))


def write_report(
    report: Mapping[str, Any],
    out_dir: str | os.PathLike,
    plots: bool = True,
    images: Any = None,
    samples: Mapping[str, Any] | None = None,
    extremes_k: int = 8,
) -> Path:
    """Write ``out_dir/probe.json`` (everything but ``arrays``), ``samples.csv`` and, if ``plots``, the PNGs.

    The report folder is written whole or not at all: every file goes into a hidden temporary
    sibling folder (``.NAME.*.tmp``), which is renamed to ``out_dir`` once complete; a previous
    report there is replaced only then (its files that are not part of a report, :data:`REPORT_FILES`,
    are kept). A failure or an interruption part-way leaves the previous report as it was and
    removes the temporary folder. Where ``out_dir`` itself cannot be renamed (a mount point, or its
    parent folder is not writable) the files are replaced one by one, each atomically. The PNGs are
    ``pr_curve``, ``roc_curve``, ``activation_frequency``, ``compression``,
    ``discriminative_heatmap``, ``q_histogram`` and ``associations`` (those the report has the data for).

    ``samples.csv`` has one row per sample (:data:`SAMPLE_COLUMNS`) of ``samples`` (a
    :func:`sample_table`, e.g. of the train split) or, by default, of the report's validation set
    (``arrays.samples``); a report read back from JSON has none, and then no CSV is written.
    ``probe.json`` then says which split it covers (``samples``). With ``images`` (a dataset, a
    sequence or a callable ``index -> image`` of the same split) and ``plots``, ``q_extremes.png``
    shows the ``extremes_k`` lowest- and highest-Q samples (:func:`q_extremes_figure`); without
    images it is skipped, and if the images cannot be read it is skipped with a warning.

    Returns:
        The path of ``probe.json``.
    """
    import shutil
    import tempfile

    out_dir = Path(os.path.abspath(out_dir))
    if out_dir.is_symlink():  # replace the folder it points to; the link stays
        out_dir = out_dir.resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir}: exists and is not a folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    except PermissionError:  # the parent is read-only: stage inside out_dir, then move file by file
        out_dir.mkdir(exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".report.", suffix=".tmp"))
    try:
        os.chmod(staging, out_dir.stat().st_mode & 0o7777 if out_dir.is_dir() else 0o777 & ~_umask())
        _write_report_files(report, staging, plots, images, samples, extremes_k)
        _put_in_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir / "probe.json"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _put_in_place(staging: Path, out_dir: Path) -> None:
    """Make the complete report folder ``staging`` the folder ``out_dir`` (see :func:`write_report`)."""
    import shutil
    import tempfile

    if staging.parent == out_dir:  # staged inside: replace the files one by one (each atomic)
        _replace_files(staging, out_dir)
        staging.rmdir()
        return
    if not out_dir.exists():
        try:
            os.rename(staging, out_dir)
            return
        except OSError:  # created meanwhile: replace it as below
            if not out_dir.is_dir():
                raise
    old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".old"))
    try:
        os.rename(out_dir, old / "report")  # the previous report, kept until the new one is in place
    except OSError:  # out_dir cannot move (a mount point, busy): replace the files one by one
        old.rmdir()
        _replace_files(staging, out_dir)
        shutil.rmtree(staging, ignore_errors=True)
        return
    try:
        os.rename(staging, out_dir)
    except BaseException:
        os.rename(old / "report", out_dir)
        old.rmdir()
        raise
    for entry in (old / "report").iterdir():  # keep what was there besides the report
        if entry.name not in REPORT_FILES and not (out_dir / entry.name).exists():
            os.rename(entry, out_dir / entry.name)
    shutil.rmtree(old, ignore_errors=True)


def _replace_files(staging: Path, out_dir: Path) -> None:
    """Fallback of :func:`_put_in_place`: each file replaced atomically, ``probe.json`` last; files of
    the previous report that the new one lacks are removed (no stale figure stays)."""
    new = {p.name for p in staging.iterdir()}
    for name in sorted(new, key=lambda n: n == "probe.json"):
        os.replace(staging / name, out_dir / name)
    for name in REPORT_FILES:
        if name not in new and (out_dir / name).is_file():
            (out_dir / name).unlink()


def _write_report_files(report: Mapping[str, Any], out_dir: Path, plots: bool, images: Any,
                        samples: Mapping[str, Any] | None, extremes_k: int) -> Path:
    """The files of :func:`write_report` into the (new, empty) folder ``out_dir``."""
    from solo_qscore.plotting.figures import save_figure_atomic

    typed = as_report(report)
    if samples is None:
        samples = typed.arrays.samples if typed.arrays is not None else None
    path = write_json_atomic(report_json(report, samples), out_dir / "probe.json")
    if samples is not None:
        write_samples_csv(samples, out_dir / SAMPLES_FILE)
    if plots:
        for name, fig in report_figures(typed).items():
            save_figure_atomic(fig, out_dir / f"{name}.png")
        if images is not None and samples is not None and extremes_k > 0:
            try:
                fig = q_extremes_figure(samples, images, k=extremes_k, class_names=typed.class_names)
            except Exception as err:  # the report is written; a bad image source only costs this figure
                warnings.warn(f"{EXTREMES_PNG}.png skipped: could not read the sample images ({err!r})",
                              stacklevel=3)
            else:
                save_figure_atomic(fig, out_dir / f"{EXTREMES_PNG}.png")
    return path


# --------------------------------------------------------------------------------------------- wandb
def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"


def log_report_to_wandb(
    report: Mapping[str, Any],
    run_or_logger: Any,
    prefix: str = "probe",
    step: int | None = None,
    metrics: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Log the report to Weights & Biases (works offline with ``WANDB_MODE=offline``).

    Scalars go to ``{prefix}/auroc`` etc. (also into the run summary), the PR/ROC curves as wandb's
    native curve panels (``{prefix}/pr_curve_chart``, ``{prefix}/roc_curve_chart``: the
    ``wandb/area-under-curve/v0`` preset of ``wandb.plot.pr_curve``/``roc_curve``, over the report's
    own curve points; the PR panel also shows the mirrored "-Q for misclassified" curve), the
    compression study as a table and a chart, the
    class-feature associations as a table (``{prefix}/associations_table``, with
    ``{prefix}/associations_mean_purity``), and the figures as ``wandb.Image``. ``run_or_logger`` is a
    ``wandb`` run or a Lightning ``WandbLogger`` (its ``.experiment`` is used). ``step`` is passed to
    ``run.log`` for a run, or logged as ``trainer/global_step`` for a Lightning logger (whose charts use
    that as x axis). ``metrics``: further scalars (full keys, e.g. ``probe/rankme``) logged in the same
    call, so that a caller logs each key once per step (a key in both wins from ``metrics``).

    Returns:
        The dict that was logged.
    """
    import wandb
    from PIL import Image

    from solo_qscore.plotting.figures import figure_to_png_bytes

    is_logger = not isinstance(run_or_logger, wandb.sdk.wandb_run.Run) and hasattr(
        run_or_logger, "experiment"
    )
    run = run_or_logger.experiment if is_logger else run_or_logger
    report = as_report(report)
    payload: dict[str, Any] = {f"{prefix}/{key}": value for key, value in report.scalars().items()}
    payload.update(metrics or {})
    for key, value in payload.items():
        run.summary[key] = value
    if report.note:
        run.summary[f"{prefix}/note"] = report.note

    payload.update(_curve_panels(report, prefix))
    payload.update(_compression_panels(report, prefix))
    associations = report.associations
    if associations:
        if associations.get("mean_purity") is not None:
            for key in ("mean_purity", "mean_purity_shuffled"):
                payload[f"{prefix}/associations_{key}"] = associations[key]
                run.summary[f"{prefix}/associations_{key}"] = associations[key]
        payload[f"{prefix}/associations_table"] = _associations_table(report)
    for name, fig in report_figures(report).items():
        image = Image.open(io.BytesIO(figure_to_png_bytes(fig)))
        payload[f"{prefix}/{name}"] = wandb.Image(image, caption=name.replace("_", " "))
    if step is not None:
        if is_logger:
            payload["trainer/global_step"] = int(step)
            run.log(payload)
        else:
            run.log(payload, step=int(step))
    else:
        run.log(payload)
    return payload


def _curve_panels(report: QScoreReport, prefix: str) -> dict[str, Any]:
    """wandb's native PR and ROC panels of the report (see :func:`log_report_to_wandb`)."""
    import wandb

    arrays = report.arrays
    view = arrays.binary_correct if arrays is not None else None
    mirror = arrays.binary_misclassified if arrays is not None else None
    curves = report.curves
    if view is None and not curves:
        return {}
    correct = f"Q, correct (AUPRC {_fmt(report.auprc)})"
    wrong = f"-Q, misclassified (AUPRC {_fmt(report.auprc_misclassified)})"

    def points(name: str, x: Any, y: Any) -> list[list[Any]]:  # at most 500 points, x ascending
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        if x.size > 1 and x[0] > x[-1]:  # the PR curve comes with recall descending: reverse the path
            x, y = x[::-1], y[::-1]
        idx = _subsample(x.size, 500)
        return [[name, float(a), float(b)] for a, b in zip(x[idx], y[idx])]

    if view is not None:
        pr_rows = points(correct, view["recall"], view["precision"])
        if mirror is not None:
            pr_rows += points(wrong, mirror["recall"], mirror["precision"])
        roc_rows = points(correct, view["fpr"], view["tpr"])
    else:
        pr_rows = points(correct, curves["pr"]["recall"], curves["pr"]["precision"])
        if curves.get("pr_misclassified"):
            pr_rows += points(wrong, curves["pr_misclassified"]["recall"], curves["pr_misclassified"]["precision"])
        roc_rows = points(correct, curves["roc"]["fpr"], curves["roc"]["tpr"])
    payload = {}
    # the ROC curve of -Q for misclassified is the same curve (AUROC(-Q, 1-c) = AUROC(Q, c))
    for key, rows, (x, y), (x_title, y_title), title in (
        ("pr_curve_chart", pr_rows, ("recall", "precision"), ("Recall", "Precision"),
         f"Q-Score PR curve (AUPRC {_fmt(report.auprc)})"),
        ("roc_curve_chart", roc_rows, ("fpr", "tpr"), ("False positive rate", "True positive rate"),
         f"Q-Score ROC curve (AUROC {_fmt(report.auroc)})"),
    ):
        payload[f"{prefix}/{key}"] = wandb.plot_table(
            "wandb/area-under-curve/v0",
            wandb.Table(data=rows, columns=["class", x, y]),
            {"x": x, "y": y, "class": "class"},
            {"title": title, "x-axis-title": x_title, "y-axis-title": y_title},
        )
    return payload


def _compression_panels(report: QScoreReport, prefix: str) -> dict[str, Any]:
    """The compression study as a wandb table and line chart (none without the study)."""
    import wandb

    compression = report.compression
    if not compression:
        return {}
    methods = ("band", "random_mean", "lower_tail", "upper_tail", "pca")
    rows = [
        [method, int(k), compression[method][i]]
        for method in methods
        for i, k in enumerate(compression["sizes"])
        if compression[method][i] is not None
    ]
    table = wandb.Table(data=rows, columns=["method", "num_features", "accuracy"])
    return {
        f"{prefix}/compression_table": table,
        f"{prefix}/compression_chart": wandb.plot.line(
            table, "num_features", "accuracy", stroke="method", title="Probe accuracy on feature subsets"
        ),
    }


def _associations_table(report: QScoreReport) -> Any:
    """The class-feature associations as a wandb table, one row per listed feature."""
    import wandb

    names = report.class_names

    def label(c: int) -> str:
        return str(names[c]) if names is not None else str(c)

    rows = [
        [
            row["feature"],
            row["support"],
            row["activation_frequency"],
            label(row["top_class"]),
            row["purity"],
            ", ".join(f"{label(c)}: {100 * f:.1f}%" for c, f in zip(row["top_classes"], row["top_fractions"])),
        ]
        for row in report.associations.get("features") or []
    ]
    return wandb.Table(
        data=rows,
        columns=["feature", "support", "activation_frequency_%", "top_class", "purity", "top_classes"],
    )
