"""The ``solo-qscore`` commands of solo_qscore/cli/app.py (pretrain, probe, finetune) on solo-learn main's own
config files."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import SOLO_CIFAR
from helpers.cli import CFG, SMALL

from solo_qscore.cli import main


def _check_auroc(value) -> None:
    assert value is None or 0.0 <= value <= 1.0


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    pass


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrain") / "run"
    with pytest.warns(UserWarning):  # cifar10 is not on disk: falls back to fashion_mnist with a warning
        code = main(["pretrain", *CFG, "--config-name", "simclr.yaml", "--qscore", "--ifm", *SMALL,
                     "data.dataset=cifar10", f"output_dir={out}"])
    assert code == 0
    return out


def test_pretrain_writes_checkpoint_and_probe(pretrained):
    assert (pretrained / "checkpoints" / "last.ckpt").is_file()
    report = json.loads((pretrained / "probe" / "probe.json").read_text())
    _check_auroc(report["auroc"])
    assert report["num_features"] == 512
    assert list((pretrained / "probe").glob("*.png"))
    assert (pretrained / "probe" / "samples.csv").is_file()
    rows = list(csv.DictReader(next((pretrained / "logs").rglob("metrics.csv")).open()))
    keys = set().union(*(r.keys() for r in rows))
    assert {"val_acc1", "val_loss"} <= keys  # solo's validation metrics: a validation loader is passed
    saved = torch.load(pretrained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["solo_qscore"]["config"]["data"]["dataset_used"] == "fashion_mnist"
    assert saved["solo_qscore"]["config"]["ifm"]["enabled"] is True


def test_probe_command_on_the_checkpoint(pretrained, tmp_path, capsys):
    capsys.readouterr()
    out = tmp_path / "probe2"
    assert main(["probe", str(pretrained / "checkpoints" / "last.ckpt"), "--out", str(out)]) == 0
    report = json.loads((out / "probe.json").read_text())
    assert report["num_features"] == 512
    _check_auroc(report["auroc"])
    printed = capsys.readouterr().out
    assert "probe.json" in printed and '"num_features": 512' in printed


def test_probe_refuses_to_replace_a_report_without_overwrite(pretrained, tmp_path, capsys):
    out = pretrained / "probe"
    before = (out / "probe.json").read_bytes()
    assert main(["probe", str(pretrained / "checkpoints" / "last.ckpt"), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "probe.json").read_bytes() == before


def test_pretrain_twice_into_one_output_dir_keeps_the_first_run(pretrained, capsys):
    ckpt = pretrained / "checkpoints" / "last.ckpt"
    before = (ckpt.read_bytes(), (pretrained / "probe" / "probe.json").read_bytes())
    code = main(["pretrain", *CFG, "--config-name", "simclr.yaml", *SMALL, f"output_dir={pretrained}"])
    assert code == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (ckpt.read_bytes(), (pretrained / "probe" / "probe.json").read_bytes()) == before


def test_resume_without_output_dir_continues_in_the_checkpoints_run_folder(pretrained, tmp_path, monkeypatch):
    """Not in runs/<name> under the current folder: one run (and one wandb id) lives in one folder."""
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    shutil.copytree(pretrained, run)
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code = main(["pretrain", *CFG, "--config-name", "simclr.yaml", "--qscore", "--ifm", *SMALL, "data.dataset=cifar10",
                 "max_epochs=3", "++max_steps=5", "--resume", str(run / "checkpoints" / "last.ckpt")])
    assert code == 0
    assert not (elsewhere / "runs").exists()
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 5  # the fixture's run stopped at step 4, at the end of its (counted) epoch


def test_a_second_probe_into_a_folder_being_written_is_refused(pretrained, tmp_path, monkeypatch, capsys):
    """Two `probe --out X` at once: the second one refuses (one line) instead of replacing the first's report."""
    import solo_qscore.probe.features as features
    from solo_qscore.output_folder import lock_path

    out, ckpt = tmp_path / "probe", str(pretrained / "checkpoints" / "last.ckpt")
    real, second = features.extract_features, {}

    def first_probe_midway(*args, **kwargs):  # the first probe is extracting features: a second one starts
        if not second:
            second["started"] = True
            second["code"] = main(["probe", ckpt, "--out", str(out)])
            second["err"] = capsys.readouterr().err
        return real(*args, **kwargs)

    monkeypatch.setattr(features, "extract_features", first_probe_midway)
    assert main(["probe", ckpt, "--out", str(out)]) == 0
    assert second["code"] == 2 and second["err"].count("\n") == 1, second
    assert f"--out {out} is in use by another solo-qscore process (pid {os.getpid()})" in second["err"]
    assert (out / "probe.json").is_file()
    assert not lock_path(out).exists()  # released when the first one finished


def test_bad_argument_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["pretrain", "--config-name", "simclr.yaml", "--no-such-flag"])
    assert exc.value.code == 2
    assert "--no-such-flag" in capsys.readouterr().err


def test_packaged_configs_are_found_from_any_directory(tmp_path, monkeypatch):
    from solo_qscore.cli import packaged_configs
    from solo_qscore.config import compose

    monkeypatch.chdir(tmp_path)
    folder = packaged_configs() / "cifar"
    for name in ("simclr", "mocov2plus", "byol", "dino", "simsiam", "vicreg", "barlow", "swav", "nnclr", "mocov3"):
        cfg = compose(folder, name)
        assert cfg.wandb.offline is True and cfg.data.fallback == "fashion_mnist"


def test_wandb_offline_run_folder(tmp_path, monkeypatch):
    import wandb  # noqa: F401  (a dependency: its absence is a failure, not a skip)

    out = tmp_path / "run"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    code = main(["pretrain", *CFG, "--config-name", "simclr.yaml", "--qscore", *SMALL, "++max_steps=2",
                 "wandb.enabled=true", "++wandb.offline=true", f"output_dir={out}"])
    assert code == 0
    runs = [p for p in (out / "wandb").glob("offline-run-*") if p.is_dir()]
    assert runs, sorted(os.listdir(out))
    assert any(p.suffix == ".wandb" for p in runs[0].rglob("*") if p.is_file())
    assert (out / "probe" / "probe.json").is_file()


def test_probe_command_on_a_plain_torchvision_state_dict(pretrained, tmp_path):
    """`solo-qscore probe` also takes a torchvision ResNet state dict: same weights, same report."""
    from solo_qscore.adapters.solo_main import load_run

    model, _, _ = load_run(pretrained / "checkpoints" / "last.ckpt")
    state = tmp_path / "resnet18.pt"
    torch.save(model.backbone.state_dict(), state)  # keys of torchvision's ResNet (fc is Identity)
    out_plain, out_ckpt = tmp_path / "plain", tmp_path / "ckpt"
    data = ["data.dataset=fashion_mnist", "data.train_subset=32", "data.val_subset=32", "data.num_workers=0",
            "data.image_size=16", "probe.max_iter=20"]
    assert main(["probe", str(state), "--config", str(SOLO_CIFAR / "simclr.yaml"), "--out", str(out_plain),
                 *data]) == 0
    assert main(["probe", str(pretrained / "checkpoints" / "last.ckpt"), "--out", str(out_ckpt), *data]) == 0
    plain = json.loads((out_plain / "probe.json").read_text())
    ckpt = json.loads((out_ckpt / "probe.json").read_text())
    for key in ("accuracy", "auroc", "auprc", "num_discriminative", "mean_active"):
        assert plain[key] == pytest.approx(ckpt[key], abs=1e-6), key


def test_probe_command_rejects_a_state_dict_of_another_architecture(tmp_path, capsys):
    import torchvision

    state = tmp_path / "resnet50.pt"
    torch.save(torchvision.models.resnet50().state_dict(), state)
    assert main(["probe", str(state), "--config", str(SOLO_CIFAR / "simclr.yaml"), "--out", str(tmp_path / "out"),
                 "data.dataset=fashion_mnist", "data.train_subset=32", "data.val_subset=32"]) == 2
    assert "does not fit a torchvision resnet18" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_finetune_seeds_the_discriminative_set_and_regularises_from_the_first_step(pretrained, tmp_path):
    """`finetune` = the paper's further-training: weights from the checkpoint, D from one pass over
    the train set before training, so the regulariser is on at step 1 (it is off in epoch 1 of pretrain)."""
    out = tmp_path / "ft"
    code = main(["finetune", str(pretrained / "checkpoints" / "last.ckpt"), f"output_dir={out}",
                 "+max_steps=2", "+log_every_n_steps=1", "qscore.eps=2.0", "wandb.enabled=false"])
    assert code == 0
    rows = list(csv.DictReader(next((out / "logs").rglob("metrics.csv")).open()))
    reg = [float(r["train_qscore_reg_step"]) for r in rows if r.get("train_qscore_reg_step")]
    assert reg and reg[0] > 0  # on from the first logged step
    saved = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["solo_qscore"]["source_config"]["optimizer"]["lr"] == pytest.approx(1e-5)
    assert saved["solo_qscore"]["config"]["qscore"]["enabled"] is True
    assert bool(saved["state_dict"]["qscore_discriminative"].any())


def test_checkpoint_written_before_a_config_section_existed_still_loads(pretrained, tmp_path):
    """A checkpoint whose stored config lacks a section added later (here ``lasso``) loads with its default."""
    from solo_qscore.adapters.solo_main import CHECKPOINT_KEY, load_run

    checkpoint = torch.load(pretrained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    del checkpoint[CHECKPOINT_KEY]["config"]["lasso"]
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    model, cfg, _ = load_run(old)
    assert cfg.lasso.enabled is False and cfg.lasso.weight == 1e-4
    assert model.cfg.lasso.enabled is False


def test_samples_csv_matches_freshly_extracted_features(pretrained):
    """samples.csv of the run's report against Q recomputed from features extracted again from the checkpoint."""
    from sklearn.metrics import roc_auc_score

    from solo_qscore.cli.open_run import load_checkpoint
    from solo_qscore.core.discriminative import discriminative_mask
    from solo_qscore.core.qscore import q_score
    from solo_qscore.core.statistics import ActivationStatistics
    from solo_qscore.data import make_eval_loaders
    from solo_qscore.probe.features import extract_features

    probe_dir = pretrained / "probe"
    report = json.loads((probe_dir / "probe.json").read_text())
    rows = list(csv.DictReader((probe_dir / "samples.csv").open()))
    model, view, _ = load_checkpoint(str(pretrained / "checkpoints" / "last.ckpt"))
    train_loader, val_loader = make_eval_loaders(view["data"])
    train_h, _ = extract_features(model.backbone, train_loader, torch.device("cpu"))
    val_h, val_y = extract_features(model.backbone, val_loader, torch.device("cpu"))
    stats = ActivationStatistics(train_h.shape[1], eps=view["qscore"]["eps"])
    stats.update(train_h)
    D = discriminative_mask(stats.compute(), *view["qscore"]["band"])
    q = q_score(val_h, D, eps=view["qscore"]["eps"])
    assert len(rows) == val_h.shape[0]
    assert [int(r["label"]) for r in rows] == val_y.tolist()
    assert torch.allclose(torch.tensor([float(r["q"]) for r in rows]), q.float(), atol=1e-5)
    correct = [int(r["correct"]) for r in rows]
    if 0 < sum(correct) < len(correct):
        assert roc_auc_score(correct, [float(r["q"]) for r in rows]) == pytest.approx(report["auroc"], abs=1e-5)


def test_main_job_prints_what_a_user_needs_to_read(tmp_path):
    """``solo-qscore main``, shrunk, as a new process (import-time warnings included): other packages' deprecation
    warnings and tips hidden, our adaptations one line each, and a closing summary."""
    import re
    import subprocess
    import sys

    out = tmp_path / "main"
    tiny = ["data.train_subset=32", "data.val_subset=16", "optimizer.batch_size=16", "data.num_workers=0",
            "method_kwargs.proj_hidden_dim=32", "method_kwargs.proj_output_dim=16", "augmentations.0.crop_size=16",
            "probe.max_iter=20", "max_epochs=1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "CI"}
    env.update(WANDB_MODE="offline", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "solo_qscore", "main", f"output_dir={out}", *tiny],
                          capture_output=True, text=True, env=env)  # no timeout: a busy machine is slow
    assert proc.returncode == 0, proc.stderr[-3000:]
    err = proc.stderr
    assert not re.search(r"^\S+\.py:\d+: \w*Warning: ", err, re.M), err  # Python's two-line warning format
    for noise in ("Deprecat", "deprecated", "Overwriting", "💡", "litlogger", "anonymous setting",
                  "scheduler_interval", "Seed set to"):
        assert noise not in err, (noise, err)
    lines = err.splitlines()
    assert len(lines) == len(set(lines)), err  # Lightning's log lines once, not again through the root logger
    if not torch.cuda.is_available():  # the GPU config adapted to the CPU: one line per change
        assert re.search(r"^solo-qscore: accelerator gpu -> cpu \(no GPU here\)\n(?! )", err, re.M), err
        assert re.search(r"^solo-qscore: precision 16-mixed -> (32-true|bf16-mixed) \(CPU\)\n(?! )", err, re.M), err

    lines = proc.stdout.splitlines()
    summary = lines[lines.index(next(x for x in lines if x.startswith("solo-qscore main: done in"))):]
    assert re.match(r"solo-qscore main: done in (\d+ min \d\d|\d+) s$", summary[0])
    assert re.match(r"  trained     simclr \+ Q-Score \+ IFM on fashion_mnist, (32-true|bf16-mixed): 2 steps in "
                    r".+, all of them within the training budget \(max_time=00:00:02:00\)$", summary[1]), summary
    assert summary[2] == f"  checkpoint  {out / 'checkpoints' / 'last.ckpt'}"
    assert summary[3].startswith(f"  report      {out / 'probe'}/probe.json")
    assert summary[4].startswith(f"  wandb run   {out / 'wandb'}/offline-run-") and "wandb sync" in summary[4]
    assert re.match(r"  result      linear-probe accuracy 0\.\d{3}; Q for \"correct\": AUROC ", summary[5]), summary
    assert (out / "checkpoints" / "last.ckpt").is_file() and (out / "probe" / "probe.json").is_file()
