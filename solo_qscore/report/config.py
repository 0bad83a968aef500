"""The settings of a Q-Score report, in one object: :class:`ReportConfig`.

Every caller (the probe callback, ``solo-qscore probe``, ``compare``, the benchmarks) builds one
:class:`ReportConfig` and passes it to :func:`~solo_qscore.report.build.qscore_report`; a run's
settings become one through :meth:`ReportConfig.from_run`, the one place that reads them (the
``qscore`` and ``probe`` sections of a run). Everything else keeps the defaults below: the paper's
(``eps`` 4, band ``[50, 95)``) and the report's own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

__all__ = ["DEFAULT_COMPRESSION_FRACTIONS", "AssociationSettings", "CompressionSettings", "ReportConfig"]

#: the kept fractions ``k / r`` of the compression study (``|D|`` is always added)
DEFAULT_COMPRESSION_FRACTIONS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True)
class CompressionSettings:
    """The compression study (paper Fig. 2, A.5, A.7): probe accuracy with ``k`` features kept.

    Attributes:
        fractions: sizes ``k = round(f r)``; ``|D|`` is always added; empty: no study.
        num_random_seeds: random subsets per size (their mean and std are reported).
        max_train: fit the study's probes on at most this many train samples (a fixed random subset)
            to bound its cost (about ``9 x len(sizes)`` probe fits); ``None``: the whole train set.
    """

    fractions: tuple[float, ...] = DEFAULT_COMPRESSION_FRACTIONS
    num_random_seeds: int = 5
    max_train: Optional[int] = None


@dataclass(frozen=True)
class AssociationSettings:
    """The class-feature associations table (paper Fig. 1, bar plots): at most ``max_features``
    discriminative features (most class-specific first), each with its ``top_k`` classes; features
    with fewer activating train samples than ``min_support`` are ranked last (see
    :func:`~solo_qscore.analysis.associations.association_table`)."""

    max_features: int = 12
    top_k: int = 5
    min_support: int = 5


@dataclass(frozen=True)
class ReportConfig:
    """What a Q-Score report computes, and how much of it.

    Attributes:
        eps: threshold of the highly activating sets, in standard deviations.
        band: percentile band ``(p_lo, p_hi)`` of the discriminative features.
        probe: keyword arguments of :func:`~solo_qscore.probe.linear.fit_linear_probe` (its scalar
            ones are recorded in ``probe.json``, in this order).
        compression: the compression study; ``None`` skips it (``compression`` is then ``None``).
        max_curve_points: the PR/ROC curves kept in ``probe.json`` are subsampled to this many points.
        heatmap_max_classes: at most this many classes in the heat map (those with most errors).
        associations: the class-feature associations table.
        batch_size: rows per batch for the activation statistics and ``|L_i|``.
    """

    eps: float = 4.0
    band: tuple[float, float] = (50.0, 95.0)
    probe: Mapping[str, Any] = field(default_factory=dict)
    compression: Optional[CompressionSettings] = CompressionSettings()
    max_curve_points: int = 200
    heatmap_max_classes: int = 20
    associations: AssociationSettings = AssociationSettings()
    batch_size: int = 4096

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", float(self.eps))
        object.__setattr__(self, "band", (float(self.band[0]), float(self.band[1])))
        object.__setattr__(self, "probe", dict(self.probe))

    @classmethod
    def from_run(cls, run: Mapping[str, Any], **changes: Any) -> ReportConfig:
        """The report settings of a run: ``eps`` and ``band`` of its ``qscore`` section, ``max_iter``,
        ``weight_decay`` and ``compression`` (a run from before that key: true) of its ``probe`` section;
        ``changes`` replace fields (e.g. ``compression=None``).

        ``run`` is a run view (:func:`~solo_qscore.adapters.solo_main.run_view`, what a checkpoint's
        commands read) or a run config itself: anything whose sections read by key.
        """
        qscore, probe = run["qscore"], run["probe"]
        config = cls(eps=float(qscore["eps"]), band=(float(qscore["band"][0]), float(qscore["band"][1])),
                     probe={"max_iter": int(probe["max_iter"]), "weight_decay": float(probe["weight_decay"])},
                     compression=CompressionSettings() if probe.get("compression", True) else None)
        return config.replace(**changes) if changes else config

    def replace(self, **changes: Any) -> ReportConfig:
        """A copy with ``changes`` (``config.replace(compression=None)``: the same report without the study)."""
        return dataclasses.replace(self, **changes)

