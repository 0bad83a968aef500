"""The report in Weights & Biases: scalars, native PR/ROC panels, tables, figures and the report folder.

:func:`log_report_to_wandb` logs a report to a run (or a Lightning ``WandbLogger``);
:func:`log_report_artifact` uploads a written report folder as a ``qscore-report`` artifact. wandb
is imported only when they are called.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np

from solo_qscore.plotting import figure_to_png_bytes
from solo_qscore.report.figures import report_figures
from solo_qscore.report.result import QScoreReport, as_report
from solo_qscore.report.separation import subsample

__all__ = ["log_report_artifact", "log_report_to_wandb"]


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
        idx = subsample(x.size, 500)
        return [[name, float(a), float(b)] for a, b in zip(x[idx], y[idx])]

    if view is not None:
        pr_rows = points(correct, view.recall, view.precision)
        if mirror is not None:
            pr_rows += points(wrong, mirror.recall, mirror.precision)
        roc_rows = points(correct, view.fpr, view.tpr)
    else:
        pr_rows = points(correct, curves.pr.recall, curves.pr.precision)
        if curves.pr_misclassified:
            pr_rows += points(wrong, curves.pr_misclassified.recall, curves.pr_misclassified.precision)
        roc_rows = points(correct, curves.roc.fpr, curves.roc.tpr)
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
        for i, k in enumerate(compression.sizes)
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


def log_report_artifact(run: Any, folder: str | os.PathLike, report: QScoreReport,
                        aliases: Optional[list[str]] = None) -> Any:
    """Upload the report folder as written (``probe.json``, ``samples.csv``, PNGs) as the wandb artifact
    ``qscore-report-<run id>`` (type ``qscore-report``), its metadata the report's scalars, ``eps``,
    ``epoch`` and ``global_step``; ``aliases`` default to ``latest`` and ``step-<global_step>``."""
    import wandb

    metadata = {**report.scalars(), "eps": report.eps, "epoch": report.epoch, "global_step": report.global_step}
    artifact = wandb.Artifact(f"qscore-report-{run.id}", type="qscore-report",
                              description="solo-qscore probe report", metadata=metadata)
    artifact.add_dir(str(folder))
    run.log_artifact(artifact, aliases=aliases or ["latest", f"step-{report.global_step}"])
    return artifact

