"""The pretrain runner (solo_qscore.train): extra callbacks, the max_epochs check, the loss check of smoke runs,
the run folder (its marker, one process at a time, an old run put back when the new one fails before training)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import tiny_pretrain
from helpers.cli import CFG, SMALL
from helpers.runs import _FailsBeforeTheFirstStep, _StepCounter

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


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_run_folder_holds_the_marker(tiny_run):
    from solo_qscore import __version__
    from solo_qscore.output_folder import MARKER

    marker = json.loads((tiny_run.parents[1] / MARKER).read_text())
    assert marker["solo_qscore"] == __version__ and marker["created"] and isinstance(marker["command"], list)


def test_a_run_that_fails_before_its_first_step_puts_the_replaced_run_back(tiny_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(tiny_run.parents[1], out)
    before = _snapshot(out)
    with pytest.raises(RuntimeError, match="before the first step"):
        tiny_pretrain(out, "simclr", "+max_steps=1", overwrite=True, extra_callbacks=[_FailsBeforeTheFirstStep()])
    assert _snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in tiny_run.parents[1].iterdir())


def test_a_second_pretrain_into_a_folder_in_use_is_refused(tmp_path, capsys):
    from solo_qscore.output_folder import folder_lock

    out = tmp_path / "run"
    with folder_lock(out, "output_dir"):  # what a pretrain writing into ``out`` holds
        code = main(["pretrain", *CFG, "--config-name", "simclr.yaml", *SMALL, f"output_dir={out}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"output_dir {out} is in use by another solo-qscore process" in err
    assert not out.exists()


def test_a_run_cut_short_by_max_time_keeps_its_checkpoint_d_and_report(tmp_path):
    """The main job's wall-clock budget (Lightning's ``max_time``) stops training mid-epoch on a slow machine:
    the run still ends with a checkpoint of the last step, the discriminative set and the probe report."""
    import torch

    out = tmp_path / "run"
    # 1,000 planned epochs of 8 steps: the 1 s budget ends training, whatever the machine's speed
    summary = tiny_pretrain(out, "simclr", "max_epochs=1000", "+max_time=00:00:00:01")
    steps = summary["global_step"]
    assert summary["stopped_by_time"] and 1 <= steps < 8000 and summary["train_seconds"] >= 1.0
    ckpt = torch.load(summary["checkpoint"], map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == steps
    d = next(v for k, v in ckpt["state_dict"].items() if k.endswith("qscore_discriminative"))
    assert 0 < int(d.sum()) == summary["num_discriminative"]
    report = json.loads((out / "probe" / "probe.json").read_text())
    assert report["num_discriminative"] > 0 and summary["probe"]["accuracy"] is not None
    assert report["compression"] is None  # the tiny config's probe.compression=false reaches the report
