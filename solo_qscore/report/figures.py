"""The report's figures: what a report holds, turned into the arrays of :mod:`solo_qscore.plotting`.

:data:`FIGURE_NAMES` lists the figures of a report folder, in order, once: :func:`report_figures`
builds those the report has the data for (a fresh report all of them; a ``probe.json`` read back
only the PR/ROC curves and the compression plot). ``q_extremes`` (:data:`EXTREMES_FIGURE`) needs the
images of the samples as well (:func:`q_extremes_figure`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

import numpy as np
from matplotlib.figure import Figure

import solo_qscore.plotting as plots
from solo_qscore.report.result import QScoreReport, as_report

__all__ = [
    "EXTREMES_FIGURE",
    "FIGURE_NAMES",
    "associations_figure",
    "heatmap_figure",
    "q_extremes_figure",
    "report_figures",
]

EXTREMES_FIGURE = "q_extremes"  # drawn only when the images of the samples are given


def _curves(report: QScoreReport) -> tuple[tuple[Any, Any], tuple[Any, Any], tuple[Any, Any]]:
    """The PR, ROC and mirrored PR points: the full ones of a fresh report, else those of ``probe.json``."""
    arrays = report.arrays
    view = arrays.binary_correct if arrays is not None else None
    mirror = arrays.binary_misclassified if arrays is not None else None
    curves = report.curves
    if view is not None:
        mpr = (mirror.recall, mirror.precision) if mirror is not None else (None, None)
        return (view.recall, view.precision), (view.fpr, view.tpr), mpr
    if curves:
        return ((curves.pr.recall, curves.pr.precision), (curves.roc.fpr, curves.roc.tpr),
                (curves.pr_misclassified.recall, curves.pr_misclassified.precision))
    return ([], []), ([], []), (None, None)


def _pr_curve(report: QScoreReport) -> Figure:
    pr, _, mpr = _curves(report)
    return plots.pr_curve_figure(pr[0], pr[1], report.auprc, report.base_rate, mpr[0], mpr[1],
                                 report.auprc_misclassified)


def _roc_curve(report: QScoreReport) -> Figure:
    _, roc, _ = _curves(report)
    return plots.roc_curve_figure(roc[0], roc[1], report.auroc)


def _activation_frequency(report: QScoreReport) -> Optional[Figure]:
    arrays = report.arrays
    if arrays is None or arrays.A is None:
        return None
    return plots.activation_frequency_figure(arrays.A, tuple(report.band_ranks), band=_band(report),
                                             eps=4.0 if report.eps is None else report.eps,
                                             mean_active=report.mean_active)


def _compression(report: QScoreReport) -> Optional[Figure]:
    return plots.compression_figure(report.compression) if report.compression else None


def _heatmap(report: QScoreReport) -> Optional[Figure]:
    return heatmap_figure(report) if report.arrays is not None and report.arrays.heatmap is not None else None


def _q_histogram(report: QScoreReport) -> Optional[Figure]:
    arrays = report.arrays
    if arrays is None or arrays.q is None:
        return None
    return plots.q_histogram_figure(arrays.q, arrays.correct, report.auroc)


def _associations(report: QScoreReport) -> Optional[Figure]:
    arrays = report.arrays
    if arrays is None or arrays.associations is None or report.associations is None:
        return None
    return associations_figure(report)


#: each figure of a report folder (``NAME.png``) and what builds it from a report, in order
_BUILDERS: dict[str, Callable[[QScoreReport], Optional[Figure]]] = {
    "pr_curve": _pr_curve,
    "roc_curve": _roc_curve,
    "activation_frequency": _activation_frequency,
    "compression": _compression,
    "discriminative_heatmap": _heatmap,
    "q_histogram": _q_histogram,
    "associations": _associations,
}
#: the names of the figures :func:`report_figures` can build, in order
FIGURE_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def report_figures(report: Mapping[str, Any]) -> dict[str, Figure]:
    """Build the report's figures (``name -> matplotlib Figure``, :data:`FIGURE_NAMES` order) from what
    the report holds: all of them with ``arrays`` (a fresh report); from a report read back from
    ``probe.json`` only the PR/ROC curves and the compression plot."""
    report = as_report(report)
    figures = {name: build(report) for name, build in _BUILDERS.items()}
    return {name: fig for name, fig in figures.items() if fig is not None}


def _band(report: QScoreReport) -> tuple[float, ...]:
    """The report's percentile band (the paper's default for a report that lacks it)."""
    return tuple((50.0, 95.0) if report.band is None else report.band)


def _class_label(report: QScoreReport, c: int) -> str:
    names = report.class_names
    return str(names[c]) if names is not None and 0 <= c < len(names) else str(c)


def heatmap_figure(report: Mapping[str, Any], title_prefix: str = "") -> Figure:
    """The heat map of mean discriminative activations of correct vs misclassified samples (paper Fig. 3).

    Rows are the classes with most errors (at most ``heatmap_max_classes``), labelled by name when
    the report has ``class_names``; needs the fresh report's ``arrays``.
    """
    report = as_report(report)
    if report.arrays is None or report.arrays.heatmap is None:
        raise ValueError("the heat map needs a fresh report's arrays (a probe.json read back has none)")
    heat = report.arrays.heatmap
    band = _band(report)
    classes = heat.classes
    present = int(np.count_nonzero(heat.count_correct + heat.count_misclassified))
    subset = ""
    if len(classes) < present:
        subset = f"; the {len(classes)} of {present} classes with most errors"
    return plots.discriminative_heatmap_figure(
        heat.correct[classes],
        heat.misclassified[classes],
        [_class_label(report, int(c)) for c in classes],
        heat.count_correct[classes],
        heat.count_misclassified[classes],
        title=f"{title_prefix}Mean activations of the {report.num_discriminative} discriminative features "
        f"per class (band [{band[0]:g}, {band[1]:g}){subset})",
    )


def associations_figure(report: Mapping[str, Any]) -> Figure:
    """Grid of bar plots of the report's ``associations`` table (paper Fig. 1, bar plots)."""
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
) -> Figure:
    """Thumbnails of the ``k`` lowest-Q and the ``k`` highest-Q samples of a per-sample table.

    ``images`` gives the image of a sample from its ``index`` column: a dataset (items may be
    ``(image, label)`` pairs, tensors normalised for the network are stretched per channel for
    display), a sequence of images, or a callable ``index -> HxWxC uint8 array / PIL image``.
    Each thumbnail is titled with its label, the probe's prediction (class names when known) and Q;
    misclassified samples are marked in red. Ties in Q (e.g. the many Q = 0 samples) keep the table
    order.
    """
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
