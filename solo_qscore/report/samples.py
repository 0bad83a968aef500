r"""The per-sample table (``samples.csv``): for every sample of a split, its label, the probe's prediction
and confidence, :math:`Q_i` and :math:`|L_i|`.

The report holds the table of its validation set (``arrays.samples``); :func:`sample_table` computes
the same table for any split (e.g. the train set) from the report's fitted probe and :math:`D`;
:func:`write_samples_csv` writes one.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from solo_qscore._files import atomic_file
from solo_qscore.core._validation import check_finite_rows, check_representations
from solo_qscore.core.activations import highly_activating
from solo_qscore.core.qscore import q_score
from solo_qscore.probe.linear import LinearProbe
from solo_qscore.report.result import SAMPLE_COLUMNS, SampleTable, as_report

__all__ = ["SAMPLE_COLUMNS", "num_active", "sample_columns", "sample_table", "write_samples_csv"]


def num_active(h: Tensor, eps: float, batch_size: int = 16384) -> np.ndarray:
    """``|L_i|`` of every row of ``h`` (int64), by chunks so no ``[N, r]`` mask of the whole set is held."""
    counts = [highly_activating(h[start : start + batch_size], eps).sum(1).cpu()
              for start in range(0, h.shape[0], batch_size)]
    return torch.cat(counts).long().numpy() if counts else np.zeros(0, dtype=np.int64)


def sample_columns(
    split: str,
    index: np.ndarray,
    label: np.ndarray,
    prediction: np.ndarray,
    confidence: np.ndarray,
    q: np.ndarray,
    active: np.ndarray,
) -> SampleTable:
    """The table of these columns (``correct`` derived), each checked to have one entry per sample."""
    prediction = np.asarray(prediction, dtype=np.int64)
    label = np.asarray(label, dtype=np.int64)
    table = SampleTable(
        split=str(split),
        index=np.asarray(index, dtype=np.int64),
        label=label,
        prediction=prediction,
        confidence=np.asarray(confidence, dtype=np.float64),
        q=np.asarray(q, dtype=np.float64),
        num_active=np.asarray(active, dtype=np.int64),
        correct=(prediction == label).astype(np.int64),
    )
    n = table.index.shape[0]
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
) -> SampleTable:
    r"""The per-sample table of any split, given the fitted probe and the discriminative set.

    For each row ``i`` of ``h``: ``index`` (``indices[i]``, default ``i``: the position in the
    evaluated dataset), ``label`` (``y[i]``), ``prediction`` (the probe's argmax), ``correct``
    (0/1), ``confidence`` (the probe's max softmax probability), ``q`` (:math:`Q_i` under ``D``,
    :func:`~solo_qscore.q_score`) and ``num_active`` (:math:`|L_i|`).

    Args:
        source: a report of :func:`~solo_qscore.report.build.qscore_report` (its fitted probe
            ``arrays.probe``, its ``D`` from the train set ``arrays.discriminative`` and its ``eps``
            are used), or a fitted
            :class:`~solo_qscore.probe.linear.LinearProbe` (then ``discriminative`` is required).
        h, y: representations ``[N, r]`` and labels of the split, e.g. the train set.
        discriminative: ``D`` as a bool mask ``[r]``; overrides the report's.
        eps: threshold of the highly activating sets; default the report's, else 4.
        split: name of the split, kept in the table (``probe.json`` and the figure title show it).
        indices: dataset positions of the rows of ``h`` (default ``0 .. N-1``).
        batch_size: rows per chunk for the probe and :math:`|L_i|`.

    Returns:
        A :class:`~solo_qscore.report.result.SampleTable` (``split`` and the columns of
        :data:`SAMPLE_COLUMNS`), which :func:`write_samples_csv` and
        :func:`~solo_qscore.report.writer.write_report` (``samples=``) write.
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
    return sample_columns(
        split,
        index,
        y.cpu().numpy(),
        torch.cat(preds).numpy() if preds else np.zeros(0, dtype=np.int64),
        torch.cat(confidence).numpy() if confidence else np.zeros(0),
        q_score(h, D.to(h.device), eps=eps).double().cpu().numpy(),
        num_active(h, eps, int(batch_size)),
    )


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
