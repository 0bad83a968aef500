"""The pretrain runner (solo_qscore.train): extra callbacks, the max_epochs check, the loss check of smoke runs."""

from __future__ import annotations

import pytest
from helpers.cli import CFG, SMALL
from helpers.runs import _StepCounter

from solo_qscore.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_pretrain_runs_extra_callbacks(tiny_run):
    assert tiny_run.exists() and _StepCounter.steps == 1  # max_steps=1


def test_max_epochs_zero_is_refused(tmp_path, capsys):
    assert main(["pretrain", *CFG, "--config-name", "simclr.yaml", *SMALL, "max_epochs=0",
                 f"output_dir={tmp_path / 'z'}"]) == 2
    assert "max_epochs" in capsys.readouterr().err


def test_loss_check_of_smoke_runs():
    from solo_qscore.train import check_loss_decreases

    assert "first third 3.0000 -> last third 1.0000" in check_loss_decreases([3.0, 3.0, 2.0, 2.0, 1.0, 1.0])
    with pytest.raises(AssertionError, match="at least 6 steps"):
        check_loss_decreases([3.0, 2.0, 1.0])
    with pytest.raises(AssertionError, match="non-finite"):
        check_loss_decreases([3.0, 3.0, float("nan"), 2.0, 1.0, 1.0])
    with pytest.raises(AssertionError, match="did not decrease"):
        check_loss_decreases([1.0, 1.0, 2.0, 2.0, 3.0, 3.0])
