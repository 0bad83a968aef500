"""Writing a report folder, whole or not at all: ``probe.json``, ``samples.csv`` and the figures.

:func:`write_report` fills a temporary folder and swaps it into place
(:func:`solo_qscore._files.write_folder`); :data:`REPORT_FILES` are the names a report folder owns.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import solo_qscore.plotting as plotting
from solo_qscore._files import write_folder, write_json_atomic
from solo_qscore.report.figures import EXTREMES_FIGURE, FIGURE_NAMES, q_extremes_figure, report_figures
from solo_qscore.report.result import SAMPLES_FILE, as_report, report_json
from solo_qscore.report.samples import write_samples_csv

__all__ = ["REPORT_FILES", "write_report"]

#: every file a report folder holds (``probe.json``, ``samples.csv``, the PNGs of :data:`FIGURE_NAMES` and
#: ``q_extremes``); anything else in an existing report folder is kept when :func:`write_report` replaces it
REPORT_FILES: tuple[str, ...] = ("probe.json", SAMPLES_FILE) + tuple(
    f"{name}.png" for name in (*FIGURE_NAMES, EXTREMES_FIGURE))


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
    ``discriminative_heatmap``, ``q_histogram`` and ``associations`` (:data:`FIGURE_NAMES`; those the report
    has the data for).

    ``samples.csv`` has one row per sample (``SAMPLE_COLUMNS``) of ``samples`` (a
    :func:`~solo_qscore.report.samples.sample_table`, e.g. of the train split) or, by default, of the
    report's validation set (``arrays.samples``); a report read back from JSON has none, and then no
    CSV is written. ``probe.json`` then says which split it covers (``samples``). With ``images`` (a
    dataset, a sequence or a callable ``index -> image`` of the same split) and ``plots``,
    ``q_extremes.png`` shows the ``extremes_k`` lowest- and highest-Q samples
    (:func:`~solo_qscore.report.figures.q_extremes_figure`); without images it is skipped, and if the
    images cannot be read it is skipped with a warning.

    Returns:
        The path of ``probe.json``.
    """

    def fill(folder: Path) -> None:
        _write_report_files(report, folder, plots, images, samples, extremes_k)

    return write_folder(out_dir, fill, REPORT_FILES) / "probe.json"


def _write_report_files(report: Mapping[str, Any], out_dir: Path, plots: bool, images: Any,
                        samples: Mapping[str, Any] | None, extremes_k: int) -> Path:
    """The files of :func:`write_report` into the (new, empty) folder ``out_dir``."""
    typed = as_report(report)
    if samples is None:
        samples = typed.arrays.samples if typed.arrays is not None else None
    path = write_json_atomic(report_json(report, samples), out_dir / "probe.json")
    if samples is not None:
        write_samples_csv(samples, out_dir / SAMPLES_FILE)
    if plots:
        for name, fig in report_figures(typed).items():
            plotting.save_figure_atomic(fig, out_dir / f"{name}.png")
        if images is not None and samples is not None and extremes_k > 0:
            try:
                fig = q_extremes_figure(samples, images, k=extremes_k, class_names=typed.class_names)
            except Exception as err:  # the report is written; a bad image source only costs this figure
                warnings.warn(f"{EXTREMES_FIGURE}.png skipped: could not read the sample images ({err!r})",
                              stacklevel=5)  # the caller of write_report
            else:
                plotting.save_figure_atomic(fig, out_dir / f"{EXTREMES_FIGURE}.png")
    return path

