"""The ``solo-qscore`` command line end to end: solo-learn SimCLR + Q-Score + IFM, tiny and offline."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from solo_qscore.cli import main

ROOT = Path(__file__).resolve().parent.parent
SIMCLR = str(ROOT / "method_configs" / "cifar10" / "simclr.yaml")
BYOL = str(ROOT / "method_configs" / "cifar10" / "byol.yaml")
TINY = ["trainer.max_steps=4", "data.batch_size=8", "data.train_subset=32", "data.val_subset=32",
        "data.num_workers=0", "method_kwargs.proj_hidden_dim=64", "method_kwargs.proj_output_dim=32"]


def _check_auroc(value) -> None:
    assert value is None or 0.0 <= value <= 1.0


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrain")
    with pytest.warns(UserWarning):  # cifar10 is not on disk: falls back to fashion_mnist with a warning
        code = main(["pretrain", SIMCLR, "--qscore", "--ifm", *TINY, "wandb.enabled=false",
                     f"output_dir={out}"])
    assert code == 0
    return out


def test_pretrain_writes_checkpoint_and_probe(pretrained, capsys):
    assert (pretrained / "checkpoints" / "last.ckpt").is_file()
    report = json.loads((pretrained / "probe" / "probe.json").read_text())
    _check_auroc(report["auroc"])
    assert report["num_features"] == 512
    assert list((pretrained / "probe").glob("*.png"))
    assert list((pretrained / "logs").rglob("metrics.csv"))  # CSV logger when wandb is off


def test_probe_command_on_the_checkpoint(pretrained, tmp_path, capsys):
    capsys.readouterr()
    out = tmp_path / "probe2"
    assert main(["probe", str(pretrained / "checkpoints" / "last.ckpt"), "--out", str(out)]) == 0
    report = json.loads((out / "probe.json").read_text())
    assert report["num_features"] == 512
    _check_auroc(report["auroc"])
    printed = capsys.readouterr().out
    assert "probe.json" in printed and '"num_features": 512' in printed


def test_unknown_override_key_exits_2(tmp_path, capsys):
    code = main(["pretrain", SIMCLR, "foo.bar=1", f"output_dir={tmp_path}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "foo" in err and "configuration error" in err
    assert not (tmp_path / "checkpoints").exists()


def test_ifm_on_byol_exits_2_naming_supported_methods(tmp_path, capsys):
    from solo_qscore import IFM_METHODS

    code = main(["pretrain", BYOL, "--ifm", *TINY, f"output_dir={tmp_path}", "wandb.enabled=false"])
    assert code == 2
    err = capsys.readouterr().err
    assert "byol" in err.lower()
    for method in IFM_METHODS:
        assert method in err, (method, err)


def test_bad_argument_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["pretrain", SIMCLR, "--no-such-flag"])
    assert exc.value.code == 2
    assert "--no-such-flag" in capsys.readouterr().err


def test_wandb_offline_run_folder(tmp_path, monkeypatch):
    import wandb  # noqa: F401  (a dependency: its absence is a failure, not a skip)
    out = tmp_path / "run"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    code = main(["pretrain", SIMCLR, "--qscore", *TINY, "trainer.max_steps=2", "wandb.enabled=true",
                 "wandb.offline=true", f"output_dir={out}"])
    assert code == 0
    runs = [p for p in (out / "wandb").glob("offline-run-*") if p.is_dir()]
    assert runs, sorted(os.listdir(out)) + sorted(os.listdir(out / "wandb")) if (out / "wandb").exists() else []
    files = [p for p in runs[0].rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files), files
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "probe" / "probe.json").is_file()


def test_probe_command_on_a_plain_torchvision_state_dict(pretrained, tmp_path):
    """`solo-qscore probe` also takes a torchvision ResNet state dict: same weights, same report."""
    import torch

    from solo_qscore.adapters.solo_v1 import load_method

    model, _, _ = load_method(str(pretrained / "checkpoints" / "last.ckpt"))
    state = tmp_path / "resnet18.pt"
    torch.save(model.encoder.state_dict(), state)  # keys of torchvision's ResNet (fc is Identity)
    out_plain, out_ckpt = tmp_path / "plain", tmp_path / "ckpt"
    data = ["data.dataset=fashion_mnist", "data.train_subset=32", "data.val_subset=32", "data.num_workers=0"]
    assert main(["probe", str(state), "--config", SIMCLR, "--out", str(out_plain), *data]) == 0
    assert main(["probe", str(pretrained / "checkpoints" / "last.ckpt"), "--out", str(out_ckpt), *data]) == 0
    plain = json.loads((out_plain / "probe.json").read_text())
    ckpt = json.loads((out_ckpt / "probe.json").read_text())
    for key in ("accuracy", "auroc", "auprc", "num_discriminative", "mean_active"):
        assert plain[key] == pytest.approx(ckpt[key], abs=1e-6), key


def test_probe_command_rejects_a_state_dict_of_another_architecture(tmp_path, capsys):
    import torch
    import torchvision

    state = tmp_path / "resnet50.pt"
    torch.save(torchvision.models.resnet50().state_dict(), state)
    assert main(["probe", str(state), "--config", SIMCLR, "--out", str(tmp_path / "out"),
                 "data.dataset=fashion_mnist", "data.train_subset=32", "data.val_subset=32"]) == 2
    assert "does not fit a torchvision resnet18" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_finetune_seeds_the_discriminative_set_and_regularises_from_the_first_step(pretrained, tmp_path):
    """`finetune` = the paper's further-training: weights from the checkpoint, D from one pass over
    the train set before training, so the regulariser is on at step 1 (it is off in epoch 1 of pretrain)."""
    import csv

    import torch

    out = tmp_path / "ft"
    code = main(["finetune", str(pretrained / "checkpoints" / "last.ckpt"), f"output_dir={out}",
                 "trainer.max_steps=2", "trainer.log_every_n_steps=1", "data.dataset=fashion_mnist",
                 "qscore.eps=2.0"])
    assert code == 0
    rows = list(csv.DictReader(next((out / "logs").rglob("metrics.csv")).open()))
    reg = [float(r["train_qscore_reg_step"]) for r in rows if r.get("train_qscore_reg_step")]
    assert reg and reg[0] > 0  # on from the first logged step
    saved = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["solo_qscore"]["config"]["optimizer"]["lr"] == pytest.approx(1e-5)
    assert saved["solo_qscore"]["config"]["qscore"]["enabled"] is True
    assert bool(saved["state_dict"]["qscore_discriminative"].any())


def test_checkpoint_written_before_a_config_section_existed_still_loads(pretrained, tmp_path):
    """A checkpoint whose stored config lacks a section added later (here ``lasso``) loads with its default."""
    import torch

    from solo_qscore.adapters.solo_v1 import CHECKPOINT_KEY, load_method

    checkpoint = torch.load(pretrained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    del checkpoint[CHECKPOINT_KEY]["config"]["lasso"]
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    model, cfg, _ = load_method(str(old))
    assert cfg["lasso"] == {"enabled": False, "weight": 1e-4}
    assert model.lasso_cfg["enabled"] is False
