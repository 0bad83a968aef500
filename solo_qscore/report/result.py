"""The Q-Score report as a typed object: the one place where its key names are defined.

:func:`~solo_qscore.report.build.qscore_report` returns a :class:`QScoreReport`. Its fields are
the keys of ``probe.json`` (:data:`REPORT_KEYS`, in file order; :meth:`QScoreReport.to_json`), then the
run context a training callback adds (:data:`RUN_KEYS`, in the file only when set). The per-sample
arrays, the fitted probe and the figure data are a separate attribute, :attr:`QScoreReport.arrays`
(:class:`ReportArrays`), never written to JSON.

Its sub-entries are typed too, each a dataclass whose fields are its JSON keys in file order:
:class:`Curves` (``curves``: :class:`PRCurve`, :class:`ROCCurve`), :class:`Compression`
(``compression``), and in ``arrays``: :class:`BinaryView` (the full PR/ROC of Q), :class:`SampleTable`
(the per-sample table) and :class:`Heatmap` (the class means of the heat map). ``associations`` stays
the dict of :func:`~solo_qscore.analysis.associations.association_summary`.

Named groups of keys, each a subset of the fields and checked at import:

* :data:`SCALAR_KEYS`: the headline numbers logged to loggers (:meth:`QScoreReport.scalars`);
* :data:`SUMMARY_KEYS`: the short summary printed by ``solo-qscore probe`` and returned by
  ``pretrain`` (:meth:`QScoreReport.summary`).

For compatibility with the dict the report used to be, every class here is a read-only
:class:`~collections.abc.Mapping` view of its fields (``report["auroc"]``, ``report.get("note")``,
``report["arrays"]["q"]``, ``report["compression"]["sizes"]``, ``{**report, "auroc": 0.5}``; the
report's view lists ``arrays`` like the dict did, ``to_json`` leaves it out); the run-context fields
can also be set by key (``report["epoch"] = 3``). Functions that accept a report (``write_report``,
``report_figures``, ...) also accept a plain mapping, e.g. a ``probe.json`` read back; they read it
through :func:`as_report`, the one accessor that gives the typed view of either (sub-entries
included), so that no reader indexes a report by key name.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from torch import Tensor

__all__ = [
    "ARRAYS",
    "SAMPLE_COLUMNS",
    "BinaryView",
    "Compression",
    "Curves",
    "Heatmap",
    "PRCurve",
    "QScoreReport",
    "REPORT_KEYS",
    "ROCCurve",
    "RUN_KEYS",
    "ReportArrays",
    "SAMPLES_FILE",
    "SampleTable",
    "SCALAR_KEYS",
    "SUMMARY_KEYS",
    "as_report",
    "report_json",
    "report_scalars",
    "to_jsonable",
]

ARRAYS = "arrays"  # the key under which the old dict report held the arrays (kept readable)
SAMPLES_FILE = "samples.csv"


class _FieldMapping(Mapping):
    """Read access by name to the fields of a dataclass (``obj["name"]`` is ``obj.name``)."""

    __slots__ = ()

    def _keys(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self))

    def __getitem__(self, key: str) -> Any:
        if key in self._keys():
            return getattr(self, key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    @classmethod
    def of(cls, value: Any) -> Any:
        """``value`` as this type: itself, ``None``, or built from a mapping of its fields (missing ones
        ``None``; typed sub-entries converted too, :data:`_SUB_ENTRIES`)."""
        if value is None or isinstance(value, cls):
            return value
        subs = _SUB_ENTRIES.get(cls, {})
        return cls(**{f.name: subs[f.name].of(value.get(f.name)) if f.name in subs else value.get(f.name)
                      for f in dataclasses.fields(cls)})


# ------------------------------------------------------------------------------------ sub-entries
@dataclass(eq=False)
class PRCurve(_FieldMapping):
    """Points of a precision-recall curve (recall descending, torchmetrics' order)."""

    recall: Any
    precision: Any


@dataclass(eq=False)
class ROCCurve(_FieldMapping):
    """Points of a ROC curve (false positive rate ascending)."""

    fpr: Any
    tpr: Any


@dataclass(eq=False)
class Curves(_FieldMapping):
    """``curves`` of ``probe.json``: the subsampled PR/ROC of Q for "correct" and the PR of -Q for
    "misclassified" (lists, at most ``max_curve_points`` each)."""

    pr: PRCurve
    roc: ROCCurve
    pr_misclassified: PRCurve


@dataclass(eq=False)
class BinaryView(_FieldMapping):
    """A score as a predictor of a positive class: AUROC, AUPRC and the full curves (numpy arrays; the
    thresholds in the score's own units)."""

    auroc: float
    auprc: float
    precision: np.ndarray
    recall: np.ndarray
    pr_thresholds: np.ndarray
    fpr: np.ndarray
    tpr: np.ndarray
    roc_thresholds: np.ndarray


@dataclass(eq=False)
class Compression(_FieldMapping):
    """``compression`` of ``probe.json``: probe accuracy with ``k`` features kept, per method and size."""

    sizes: list[int]  #: the numbers of kept features ``k``, ascending
    fractions: list[float]  #: ``k / r``
    band: list[float]  #: a window of ``k`` ranks of A centred on the discriminative band
    random_mean: list[Optional[float]]  #: random subsets, mean over the seeds
    random_std: list[Optional[float]]
    lower_tail: list[float]  #: the ``k`` least frequently active features
    upper_tail: list[float]  #: the ``k`` most frequently active features
    pca: list[float]  #: the top-``k`` principal components
    full_accuracy: float
    num_features: int
    num_discriminative: int
    num_random_seeds: int
    num_train: int  #: the train samples the study's probes were fitted on
    band_rule: str


@dataclass(eq=False)
class SampleTable(_FieldMapping):
    """The per-sample table of a split (``samples.csv``): one numpy column per :data:`SAMPLE_COLUMNS` name."""

    split: str  #: the split the rows are of (``val``, ``train``)
    index: np.ndarray  #: the position in the evaluated dataset
    label: np.ndarray
    prediction: np.ndarray  #: the probe's argmax
    confidence: np.ndarray  #: the probe's max softmax probability
    q: np.ndarray  #: :math:`Q_i`
    num_active: np.ndarray  #: :math:`|L_i|`
    correct: np.ndarray  #: ``prediction == label`` as 0/1


@dataclass(eq=False)
class Heatmap(_FieldMapping):
    """The class means of the discriminative features behind the heat map (paper Fig. 3)."""

    feature_index: np.ndarray  #: the discriminative features, in display order
    classes: np.ndarray  #: the classes shown (most errors first, at most ``heatmap_max_classes``), sorted
    correct: np.ndarray  #: ``[num_classes, |D|]`` mean of the normalised features of correct samples (NaN: none)
    misclassified: np.ndarray  #: the same of misclassified samples
    count_correct: np.ndarray  #: correct samples per class
    count_misclassified: np.ndarray


#: the columns of ``samples.csv``, in file order
SAMPLE_COLUMNS: tuple[str, ...] = ("index", "label", "prediction", "correct", "confidence", "q", "num_active")


# ----------------------------------------------------------------------------------------- report
@dataclass(eq=False)
class ReportArrays(_FieldMapping):
    """What a fresh report holds besides its JSON part (none when read back from ``probe.json``)."""

    A: np.ndarray  #: activation frequencies of the train set, ``[r]`` float64
    discriminative: np.ndarray  #: ``D`` as a bool mask ``[r]``
    q: np.ndarray  #: :math:`Q_i` of every validation sample
    correct: np.ndarray  #: bool, the probe's outcome on every validation sample
    val_y: np.ndarray  #: validation labels
    preds: np.ndarray  #: the probe's predictions
    confidence: np.ndarray  #: the probe's max softmax probability
    samples: SampleTable  #: the per-sample table of the validation set (``sample_table``)
    probe: Any  #: the fitted :class:`~solo_qscore.probe.linear.LinearProbe`
    binary_correct: Optional[BinaryView]  #: full PR/ROC of Q for "correct" (None when undefined)
    binary_misclassified: Optional[BinaryView]  #: the same of -Q for "misclassified"
    heatmap: Heatmap  #: class means of the discriminative features (heat map figure)
    associations: Any  #: the class-feature associations of the discriminative features


@dataclass(eq=False)
class QScoreReport(_FieldMapping):
    """The Q-Score report (see :func:`~solo_qscore.report.build.qscore_report` for the meaning).

    Metrics are ``None`` when undefined; ``note`` then says why. The fields down to
    ``associations`` are the keys of ``probe.json`` in file order (:data:`REPORT_KEYS`).
    """

    auroc: Optional[float]
    auprc: Optional[float]
    accuracy: float
    base_rate: float
    auroc_misclassified: Optional[float]
    auprc_misclassified: Optional[float]
    base_rate_misclassified: float
    num_features: int
    num_discriminative: int
    band_ranks: list[int]
    eps: float
    band: list[float]
    num_train: int
    num_val: int
    num_correct: int
    num_misclassified: int
    num_classes: int
    mean_active: float
    q_mean: float
    q_mean_correct: Optional[float]
    q_mean_misclassified: Optional[float]
    q_zero_fraction: float
    q_quantiles: dict[str, float]
    confidence_mean: float
    confidence_mean_correct: Optional[float]
    confidence_mean_misclassified: Optional[float]
    probe: dict[str, Any]
    note: Optional[str]
    curves: Optional[Curves]
    compression: Optional[Compression]
    class_names: Optional[list[str]]
    associations: Optional[dict[str, Any]]
    # run context, set by the probe callback (in probe.json only when set)
    rankme: Optional[float] = None
    embedding_std: Optional[float] = None
    epoch: Optional[int] = None
    global_step: Optional[int] = None
    arrays: Optional[ReportArrays] = dataclasses.field(default=None, repr=False)

    def _keys(self) -> tuple[str, ...]:
        # the keys of the dict the report used to be: "arrays" too, so that {**report, ...} keeps them
        arrays = (ARRAYS,) if self.arrays is not None else ()
        return REPORT_KEYS + arrays + tuple(k for k in RUN_KEYS if getattr(self, k) is not None)

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in REPORT_KEYS + RUN_KEYS:
            raise KeyError(f"{key!r} is not a field of QScoreReport")
        setattr(self, key, value)

    def to_json(self, samples: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The content of ``probe.json`` (see :func:`report_json`)."""
        return report_json(self, samples)

    def scalars(self) -> dict[str, float]:
        """The headline numbers that are defined (see :func:`report_scalars`)."""
        return report_scalars(self)

    def summary(self) -> dict[str, Any]:
        """The short summary (:data:`SUMMARY_KEYS`, ``None`` where undefined)."""
        return {key: getattr(self, key) for key in SUMMARY_KEYS}


#: the run context a training callback adds
RUN_KEYS: tuple[str, ...] = ("rankme", "embedding_std", "epoch", "global_step")
#: the keys of ``probe.json``, in file order (``samples`` is appended by :func:`report_json`)
REPORT_KEYS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(QScoreReport) if f.name not in (*RUN_KEYS, ARRAYS)
)
#: the run-context numbers logged with the headline numbers
SCALAR_RUN_KEYS: tuple[str, ...] = ("rankme", "embedding_std")
#: the headline numbers logged to loggers
SCALAR_KEYS: tuple[str, ...] = (
    "auroc",
    "auprc",
    "accuracy",
    "base_rate",
    "auroc_misclassified",
    "auprc_misclassified",
    "num_discriminative",
    "mean_active",
    "q_mean",
    "q_mean_correct",
    "q_mean_misclassified",
    "confidence_mean",
)
#: the short summary of a report
SUMMARY_KEYS: tuple[str, ...] = ("auroc", "auprc", "accuracy", "num_features", "num_discriminative", "note")

#: the fields of each class that hold a typed sub-entry (what :meth:`_FieldMapping.of` converts)
_SUB_ENTRIES: dict[type, dict[str, type]] = {
    Curves: {"pr": PRCurve, "roc": ROCCurve, "pr_misclassified": PRCurve},
    ReportArrays: {"samples": SampleTable, "binary_correct": BinaryView, "binary_misclassified": BinaryView,
                   "heatmap": Heatmap},
    QScoreReport: {"curves": Curves, "compression": Compression, ARRAYS: ReportArrays},
}

for _group in (SCALAR_KEYS, SUMMARY_KEYS):
    assert set(_group) <= set(REPORT_KEYS), set(_group) - set(REPORT_KEYS)
assert set(SCALAR_RUN_KEYS) <= set(RUN_KEYS)
assert {f.name for f in dataclasses.fields(QScoreReport)} == set(REPORT_KEYS + RUN_KEYS) | {ARRAYS}


def as_report(report: Mapping[str, Any]) -> QScoreReport:
    """The typed view of a report: a :class:`QScoreReport` itself, or one built from a mapping (a ``probe.json``
    read back, ``{**report, "auroc": 0.5}``, a dict report): its fields by name, missing ones ``None``, keys
    that are not fields (``samples`` of a read-back ``probe.json``) left out. ``arrays`` is kept when the mapping
    has them (a :class:`ReportArrays`, or a mapping of its fields, missing ones ``None``); a ``probe.json``
    read back has none (``arrays`` is ``None``). Sub-entries read back (``curves``, ``compression``) get
    their types too."""
    return QScoreReport.of(report)


def to_jsonable(value: Any) -> Any:
    """Convert tensors, numpy values, tuples and non-finite floats (to ``None``) for strict JSON."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return [to_jsonable(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def report_json(report: Mapping[str, Any], samples: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The content of ``probe.json`` for a :class:`QScoreReport` or a report read back from JSON.

    Every key but ``arrays``, as strict JSON, and ``samples``: which per-sample table ``samples.csv``
    holds (``samples``, by default the report's validation table ``arrays["samples"]``; a report read
    back from JSON keeps its own entry).
    """
    if samples is None:
        arrays = as_report(report).arrays
        samples = arrays.samples if arrays is not None else None
    payload = to_jsonable({k: v for k, v in report.items() if k != ARRAYS})
    if samples is not None:
        payload["samples"] = {"file": SAMPLES_FILE, "split": samples.get("split") or "val",
                              "num_samples": int(np.asarray(samples["q"]).size)}
    return payload


def report_scalars(report: Mapping[str, Any]) -> dict[str, float]:
    """The headline numbers (:data:`SCALAR_KEYS`, then ``rankme`` and ``embedding_std`` when set) of a
    report that are finite numbers: what the loggers get (as ``probe/<key>``)."""
    report = as_report(report)
    out = {}
    for key in SCALAR_KEYS + SCALAR_RUN_KEYS:
        value = getattr(report, key)
        if isinstance(value, (int, float)) and not (isinstance(value, float) and not math.isfinite(value)):
            out[key] = value
    return out
