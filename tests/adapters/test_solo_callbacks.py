"""The callbacks of a solo-learn run (solo_qscore.adapters.solo_callbacks): on solo-learn's image folders
(labelled, unlabelled, h5), and the probe's report settings built once from the run."""

from __future__ import annotations

import re

import pytest
from conftest import tiny_config

from solo_qscore.adapters.solo_callbacks import qscore_callbacks
from solo_qscore.config import ConfigError


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    pass


def _custom(folder, *overrides: str):
    return tiny_config("simclr", "data.dataset=custom", f"data.train_path={folder}", "data.val_path=null",
                       *overrides)


def _types(callbacks) -> list[str]:
    return [type(c).__name__ for c in callbacks]


def test_qscore_callbacks_on_image_folders(tmp_path):
    """Issue 22 (3): ``qscore_callbacks`` raised "unknown dataset 'custom'" for solo-learn's documented
    custom-data keys. The probe runs on labelled folders (a held-out part of the training folder when there is
    no ``val_path``) and is skipped, with one warning, where there are no labels; the statistics always run."""
    from helpers.image_folders import flat_folder, labelled_folder

    from solo_qscore.callbacks import QScoreProbeCallback

    labelled = labelled_folder(tmp_path / "labelled", classes=("ant", "bee"), per_class=5)
    callbacks = qscore_callbacks(_custom(labelled))
    assert _types(callbacks) == ["FiniteLossCallback", "ActivationStatisticsCallback", "LabelFreeMetricsCallback",
                                 "QScoreProbeCallback", "BadImagesCallback"]
    probe = next(c for c in callbacks if isinstance(c, QScoreProbeCallback))
    assert (len(probe.train_loader.dataset), len(probe.val_loader.dataset)) == (8, 2)

    single = labelled_folder(tmp_path / "single", classes=("ant",), per_class=3)
    cases = [(_custom(flat_folder(tmp_path / "flat", n=4)), "no class sub-folders"),
             (_custom(single), "a single class sub-folder (ant)"),
             (_custom(labelled, "+data.no_labels=true"), "data.no_labels=true")]
    for cfg, reason in cases:
        with pytest.warns(UserWarning, match=f"solo-qscore: the probe is skipped: .*{re.escape(reason)}") as caught:
            callbacks = qscore_callbacks(cfg)
        assert sum("probe is skipped" in str(w.message) for w in caught) == 1
        assert _types(callbacks) == ["FiniteLossCallback", "ActivationStatisticsCallback",
                                     "LabelFreeMetricsCallback", "BadImagesCallback"]
    with pytest.warns(UserWarning, match="probe is skipped"):  # the exact statistics pass reads unlabelled images
        stats = qscore_callbacks(_custom(single, "qscore.statistics=dataloader"))[1]
    assert len(stats.dataloader.dataset) == 3

    with pytest.raises(ConfigError, match="config key 'data.format': h5 files"):
        qscore_callbacks(_custom(labelled, "data.format=h5"))
    cfg = _custom(labelled)
    cfg.data.bad_images = "ignore"  # solo's own script: no compose-time check
    with pytest.raises(ConfigError, match="config key 'data.bad_images' must be one of error, skip"):
        qscore_callbacks(cfg)



def test_the_probe_gets_the_runs_report_settings_built_once():
    """Issue 23: the probe's report settings are the run's (``ReportConfig.from_run``), not assembled by hand."""
    from solo_qscore.callbacks import QScoreProbeCallback
    from solo_qscore.report.config import ReportConfig

    cfg = tiny_config("simclr", "qscore.eps=2.5", "qscore.band=[40,90]", "probe.max_iter=7",
                      "probe.weight_decay=0.001")
    probe = next(c for c in qscore_callbacks(cfg) if isinstance(c, QScoreProbeCallback))
    assert probe.config == ReportConfig.from_run(cfg)
    assert (probe.config.eps, probe.config.band, probe.config.probe) == (
        2.5, (40.0, 90.0), {"max_iter": 7, "weight_decay": 0.001})
    assert probe.class_names[:2] == ["T-shirt/top", "Trouser"]
