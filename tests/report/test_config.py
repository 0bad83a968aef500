"""The report's settings (solo_qscore.report.config): one ReportConfig, a run's settings read in one place."""

from __future__ import annotations

import dataclasses

import pytest
from omegaconf import OmegaConf

from solo_qscore.report.config import (
    DEFAULT_COMPRESSION_FRACTIONS,
    AssociationSettings,
    CompressionSettings,
    ReportConfig,
)

RUN = {"qscore": {"eps": 2, "band": [40, 90]}, "probe": {"max_iter": "50", "weight_decay": 5e-4, "enabled": True}}


def test_defaults_are_the_papers_and_the_reports():
    config = ReportConfig()
    assert config.eps == 4.0 and config.band == (50.0, 95.0) and config.probe == {}
    assert config.compression == CompressionSettings(DEFAULT_COMPRESSION_FRACTIONS, 5, None)
    assert config.associations == AssociationSettings(12, 5, 5)
    assert (config.max_curve_points, config.heatmap_max_classes, config.batch_size) == (200, 20, 4096)


@pytest.mark.parametrize("kind", ["run view", "DictConfig"])
def test_from_run_reads_the_qscore_and_probe_sections(kind):
    run = RUN if kind == "run view" else OmegaConf.create(RUN)
    config = ReportConfig.from_run(run)
    assert config.eps == 2.0 and isinstance(config.eps, float) and config.band == (40.0, 90.0)
    assert config.probe == {"max_iter": 50, "weight_decay": 5e-4}
    assert list(config.probe) == ["max_iter", "weight_decay"]  # probe.json's order
    assert config.compression == ReportConfig().compression  # what a run does not set keeps its default
    assert ReportConfig.from_run(run, compression=None).compression is None


@pytest.mark.parametrize("kind", ["run view", "DictConfig"])
def test_a_run_without_the_compression_study(kind):
    """``probe.compression=false`` (the tests' tiny runs): the end-of-training report skips the ~90 probe fits."""
    run = {**RUN, "probe": {**RUN["probe"], "compression": False}}
    assert ReportConfig.from_run(run if kind == "run view" else OmegaConf.create(run)).compression is None
    kept = {**RUN, "probe": {**RUN["probe"], "compression": True}}
    assert ReportConfig.from_run(kept).compression == ReportConfig().compression


def test_replace_copies_and_the_config_is_frozen():
    config = ReportConfig(eps=3)
    without = config.replace(compression=None)
    assert without.compression is None and config.compression is not None and without.eps == 3.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.eps = 1.0  # type: ignore[misc]
    probe = {"max_iter": 5}
    kept = ReportConfig(probe=probe)
    probe["max_iter"] = 6
    assert kept.probe == {"max_iter": 5}  # a copy of the caller's dict
