"""Opening a checkpoint for a command (solo_qscore/cli/open_run.py): a crafted checkpoint runs no code, an
unreadable one gets one line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers.cli import CFG, SMALL

from solo_qscore.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Payload:
    """Unpickling this writes a file: what a crafted checkpoint would do."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.write_text, (Path(self.target), "pwned"))


@pytest.mark.parametrize("command", ["probe", "finetune", "explain", "pretrain-from"])
def test_a_crafted_checkpoint_runs_no_code(tmp_path, capsys, command):
    target = tmp_path / "written_by_payload"
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "solo_qscore": {"config": {"x": _Payload(str(target))}}}, ckpt)
    argv = {"probe": ["probe", str(ckpt), "--out", str(tmp_path / "o")],
            "finetune": ["finetune", str(ckpt)],
            "explain": ["explain", str(ckpt)],
            "pretrain-from": ["pretrain", *CFG, "--config-name", "simclr.yaml", *SMALL, "--from", str(ckpt),
                              f"output_dir={tmp_path / 'r'}"]}[command]
    assert main(argv) == 2
    assert not target.exists()
    assert "--trust-checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all\n", os.urandom(256)])
def test_unreadable_checkpoints_get_one_line(tmp_path, capsys, content):
    ckpt = tmp_path / "bad.ckpt"
    ckpt.write_bytes(content)
    assert main(["probe", str(ckpt), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "bad.ckpt" in err
