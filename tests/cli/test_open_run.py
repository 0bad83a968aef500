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


# -- issue 22: what a file is, said in one complete line ---------------------------------------------------
def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.mark.parametrize("content", [bytes((7 * i + 3) % 256 for i in range(1024)), b"not a checkpoint at all\n",
                                     b"\x80\x7f" + bytes(range(256))], ids=["random", "text", "bad-protocol"])
def test_a_file_that_is_no_torch_file_is_called_not_a_checkpoint(tmp_path, capsys, content):
    ckpt = tmp_path / "bad.ckpt"
    ckpt.write_bytes(content)
    assert main(["probe", str(ckpt), "--out", str(tmp_path / "o")]) == 2
    err = _one_line(capsys)
    assert f"{ckpt}: not a checkpoint: it is neither a torch zip archive nor a pickle" in err
    assert "could run code" not in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_the_refusal_of_an_unsafe_pickle_is_a_complete_sentence(tmp_path, capsys, zipped):
    target = tmp_path / "written_by_payload"
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": _Payload(str(target))}, ckpt, _use_new_zipfile_serialization=zipped)
    assert main(["probe", str(ckpt), "--out", str(tmp_path / "o")]) == 2
    assert _one_line(capsys) == (f"solo-qscore: error: {ckpt}: refused to load: it holds Python objects that could "
                                 "run code (the global getattr); load it only if you trust the file, with "
                                 "--trust-checkpoint.")
    assert not target.exists()


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A real (untrained) SimCLR in the checkpoint format of ``pretrain``, as a dict to edit by hand."""
    from conftest import tiny_model

    model, _ = tiny_model("simclr", "data.train_subset=16", "data.val_subset=8")
    checkpoint = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    return checkpoint


def _edited(checkpoint: dict, edit) -> dict:
    import copy

    checkpoint = copy.deepcopy(checkpoint)
    edit(checkpoint)
    return checkpoint


def _drop_backbone(state: dict) -> None:
    for key in [k for k in state if k.startswith("backbone.")]:
        del state[key]


HAND_EDITS = {
    "no-backbone-weights": (lambda c: _drop_backbone(c["state_dict"]),
                            "its weights do not fit its own simclr resnet18 config: no weights for backbone (120 "
                            "tensors, e.g. backbone.conv1.weight); was the file edited?"),
    "unknown-method": (lambda c: c["solo_qscore"]["config"].update(method="simclrr"),
                       "its saved run config names method 'simclrr', which solo-learn does not have (it has "),
    "other-method": (lambda c: c["solo_qscore"]["config"].update(method="byol"),
                     "its saved run config does not build a byol model (ConfigAttributeError: Missing key momentum)"),
    "unknown-backbone": (lambda c: c["solo_qscore"]["config"]["backbone"].update(name="vgg"),
                         "its saved run config names backbone 'vgg', which solo-learn does not have"),
    "config-not-a-dict": (lambda c: c["solo_qscore"].update(config="hello"),
                          "its saved run config is a str, not a config"),
    "weights-not-a-dict": (lambda c: c.update(state_dict=[1, 2]), "its 'state_dict' is a list, not a dict of weights"),
}


@pytest.mark.parametrize("edit", sorted(HAND_EDITS))
def test_a_hand_edited_checkpoint_gets_one_line(saved_run, tmp_path, capsys, edit):
    change, named = HAND_EDITS[edit]
    ckpt = tmp_path / "edited.ckpt"
    torch.save(_edited(saved_run, change), ckpt)
    assert main(["probe", str(ckpt), "--out", str(tmp_path / "o")]) == 2
    err = _one_line(capsys)
    assert err.startswith(f"solo-qscore: error: {ckpt}: ") and named in err, err
    assert not (tmp_path / "o").exists()


def test_finetune_of_a_checkpoint_without_a_source_config_says_what_to_do(saved_run, tmp_path, capsys):
    ckpt = tmp_path / "no_source.ckpt"
    torch.save(saved_run, ckpt)  # written by with_qscore outside `solo-qscore pretrain`: no source config
    assert main(["finetune", str(ckpt)]) == 2
    assert f"--from {ckpt} --qscore" in _one_line(capsys)
