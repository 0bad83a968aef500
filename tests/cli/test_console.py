"""What the program prints (solo_qscore/cli/console.py): other packages' noise hidden only inside
``quiet_console`` (the entry point's), our warnings one line each, the main job's closing summary. The whole
program's output, import-time warnings included: ``tests/cli/test_app.py::test_main_job_prints_...``."""

from __future__ import annotations

import logging
import sys
import time
import warnings

import pytest

import solo_qscore.train as ours
from solo_qscore.cli.console import duration, main_summary, process_age, quiet_console

_IMPORTED = time.monotonic()


def _warn(message: str, category: type[Warning], filename: str, module: str) -> None:
    warnings.warn_explicit(message, category, filename, 7, module=module)


def test_other_packages_deprecations_are_hidden_and_ours_kept():
    warnings.simplefilter("always")  # this test's own filters (pytest restores them): every warning counts
    with warnings.catch_warnings(record=True) as seen, quiet_console():
        _warn("Importing from timm.models.helpers is deprecated", FutureWarning, "/x/timm/models/helpers.py",
              "timm.models.helpers")
        _warn("`isinstance(treespec, LeafSpec)` is deprecated", DeprecationWarning,
              "/x/lightning/pytorch/utilities/_pytree.py", "lightning.pytorch.utilities._pytree")
        _warn("Overwriting convnext_tiny in registry with solo.backbones.convnext.convnext.convnext_tiny",
              UserWarning, "/x/solo/backbones/convnext/convnext.py", "solo.backbones.convnext.convnext")
        _warn("solo-qscore: precision 16-mixed -> 32-true (CPU)", UserWarning, ours.__file__, "solo_qscore.train")
        _warn("an old solo-qscore argument", DeprecationWarning, ours.__file__, "solo_qscore.train")
        _warn("a warning of another package a user may act on", UserWarning, "/x/other/mod.py", "other.mod")
    assert [str(w.message) for w in seen] == ["solo-qscore: precision 16-mixed -> 32-true (CPU)",
                                              "an old solo-qscore argument",
                                              "a warning of another package a user may act on"]


def test_our_warnings_are_one_line_and_everything_is_restored_afterwards():
    before_format, before_filters = warnings.formatwarning, list(warnings.filters)
    with quiet_console():
        ours_line = warnings.formatwarning("Using the dataset 'fashion_mnist' instead of 'cifar10'", UserWarning,
                                           ours.__file__, 10)
        adapted = warnings.formatwarning("solo-qscore: devices [0] -> 1", UserWarning, ours.__file__, 10)
        other = warnings.formatwarning("a message", UserWarning, "/x/other/mod.py", 3)
    assert ours_line == "solo-qscore: Using the dataset 'fashion_mnist' instead of 'cifar10'\n"
    assert adapted == "solo-qscore: devices [0] -> 1\n"
    assert other.startswith("/x/other/mod.py:3: UserWarning: a message")
    assert warnings.formatwarning is before_format and warnings.filters == before_filters


def test_tips_and_solos_scheduler_caveat_are_hidden_from_the_log(caplog):
    caplog.set_level(logging.INFO)
    with quiet_console():
        for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
            logging.getLogger(name).info("💡 Tip: For seamless cloud logging, try installing litlogger")
            logging.getLogger(name).info("GPU available: False, used: False")
        logging.getLogger().warning("Using scheduler_interval=step might generate issues when resuming a checkpoint.")
    logging.getLogger("pytorch_lightning.utilities.rank_zero").info("💡 Tip: outside the entry point: shown")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False"] * 2 + [
        "💡 Tip: outside the entry point: shown"]


@pytest.mark.parametrize("namespace", ["lightning.fabric", "lightning_fabric"])
def test_lightnings_seed_line_is_hidden(caplog, namespace):
    """"Seed set to 5" came before a refusal's one line (a second line on stderr) when Lightning's logger
    had no handler of its own; the seed is in the run's config."""
    import importlib

    seed = importlib.import_module(f"{namespace}.utilities.seed")
    with caplog.at_level(logging.INFO), quiet_console():
        seed.seed_everything(5)
    assert "Seed set to" not in caplog.text
    seed.seed_everything(5)
    assert "Seed set to 5" in caplog.text  # only while a command runs


def test_main_summary_says_what_ran_how_long_where_and_the_headline_numbers():
    summary = {"global_step": 12, "train_seconds": 121.4, "stopped_by_time": True, "dataset": "fashion_mnist",
               "precision": "32-true", "checkpoint": "runs/main/checkpoints/last.ckpt", "probe_dir": "runs/main/probe",
               "wandb_dir": "runs/main/wandb/offline-run-1/files",
               "probe": {"accuracy": 0.7294, "auroc": 0.4456, "auprc": 0.6947, "num_features": 512,
                         "num_discriminative": 230, "note": None}}
    text = main_summary(summary, 236.4, "simclr + Q-Score + IFM", "00:00:02:00")
    assert text.splitlines() == [
        "solo-qscore main: done in 3 min 56 s",
        "  trained     simclr + Q-Score + IFM on fashion_mnist, 32-true: 12 steps in 2 min 01 s, stopped by the "
        "training budget (max_time=00:00:02:00)",
        "  checkpoint  runs/main/checkpoints/last.ckpt",
        "  report      runs/main/probe/probe.json (+ samples.csv and PNG figures)",
        "  wandb run   runs/main/wandb/offline-run-1 (offline: upload it with "
        "`wandb sync runs/main/wandb/offline-run-1`)",
        "  result      linear-probe accuracy 0.729; Q for \"correct\": AUROC 0.446, AUPRC 0.695 (chance 0.729); "
        "discriminative features 230 of 512",
    ]
    assert duration(42.4) == "42 s" and duration(60) == "1 min 00 s"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_jobs_time_counts_from_the_process_start():
    age = process_age()  # this process has run at least since this module was imported (ticks: 10 ms)
    assert age is not None and age >= time.monotonic() - _IMPORTED - 0.05
