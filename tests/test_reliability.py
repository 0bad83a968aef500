"""Issue 13: nothing lost, nothing executed, every bad input answered (see docs/RELIABILITY.md).

* a report folder is written whole or not at all (``write_report``);
* every analysis command that writes checks its output folder before any computation
  (``--overwrite``, unusable ``--out``) and loads checkpoints safely (``--trust-checkpoint``);
* bad configs and checkpoints give one line and exit code 2 (a traceback only with ``--debug``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import SHRINK, SOLO_CIFAR, TINY, tiny_model, tiny_pretrain

from solo_qscore.cli import main
from solo_qscore.config import ConfigError

CFG = ["--config-path", str(SOLO_CIFAR)]
SMALL = [*SHRINK["simclr"], *TINY, "data.train_subset=32", "data.val_subset=32", "+max_steps=2",
         "augmentations.0.crop_size=16", "probe.max_iter=20"]


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    pass


def _one_line_error(capsys, code: int, *named: str) -> str:
    """Exit code 2, exactly one line on stderr, no traceback, and each of ``named`` in it."""
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("solo-qscore: "), err
    assert "Traceback" not in err
    for text in named:
        assert text in err, (text, err)
    return err


# ------------------------------------------------------------------ 1. a report is written whole or not at all
@pytest.fixture(scope="module")
def small_report():
    from solo_qscore.report.qscore_report import qscore_report

    g = torch.Generator().manual_seed(0)
    train_y, val_y = torch.randint(0, 3, (120,), generator=g), torch.randint(0, 3, (60,), generator=g)
    train_h = (torch.randn(120, 16, generator=g) + 2.0 * torch.nn.functional.one_hot(train_y, 16)).relu()
    val_h = (torch.randn(60, 16, generator=g) + 2.0 * torch.nn.functional.one_hot(val_y, 16)).relu()
    return qscore_report(train_h, train_y, val_h, val_y, eps=1.0, compression_fractions=None, num_random_seeds=1,
                         probe_kwargs={"max_iter": 20})


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _interrupt_after(monkeypatch, calls: int, exc: BaseException) -> None:
    """Make the report's figure writer fail at its ``calls``-th figure (the earlier ones are written)."""
    import solo_qscore.plotting.figures as plots

    real, count = plots.save_figure_atomic, {"n": 0}

    def flaky(fig, path, *args, **kwargs):
        count["n"] += 1
        if count["n"] >= calls:
            raise exc
        return real(fig, path, *args, **kwargs)

    monkeypatch.setattr(plots, "save_figure_atomic", flaky)


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), OSError(28, "No space left on device")],
                         ids=["interrupted", "disk-full"])
def test_an_interrupted_report_leaves_the_previous_one_intact(small_report, tmp_path, monkeypatch, exc):
    from solo_qscore.report.qscore_report import write_report

    out = tmp_path / "probe"
    write_report(small_report, out)
    (out / "notes.txt").write_text("mine")  # not part of a report
    before = _snapshot(out)
    assert "probe.json" in before and "pr_curve.png" in before
    changed = {**small_report, "auroc": 0.123}
    _interrupt_after(monkeypatch, 3, exc)
    with pytest.raises(type(exc)):
        write_report(changed, out)
    assert _snapshot(out) == before  # probe.json, samples.csv and every PNG as they were
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probe"]  # no .tmp / .old folder left beside it
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_an_interrupted_first_report_leaves_no_folder(small_report, tmp_path, monkeypatch):
    from solo_qscore.report.qscore_report import write_report

    _interrupt_after(monkeypatch, 2, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        write_report(small_report, tmp_path / "probe")
    assert list(tmp_path.iterdir()) == []


def test_a_new_report_replaces_the_old_one_whole_and_keeps_other_files(small_report, tmp_path):
    import json

    from solo_qscore.report.qscore_report import write_report

    out = tmp_path / "probe"
    write_report(small_report, out, images=torch.rand(60, 3, 8, 8))
    assert (out / "q_extremes.png").is_file()
    (out / "notes.txt").write_text("mine")
    (out / "extra").mkdir()
    (out / "extra" / "x.txt").write_text("kept")
    path = write_report({**small_report, "auroc": 0.5}, out, plots=False)  # no figures this time
    assert path == out / "probe.json" and json.loads(path.read_text())["auroc"] == 0.5
    assert not list(out.glob("*.png"))  # no stale figure of the previous report
    assert (out / "notes.txt").read_text() == "mine" and (out / "extra" / "x.txt").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probe"]


def test_an_interrupted_probe_command_keeps_the_previous_report(run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "probe"
    assert main(["probe", str(run / "checkpoints" / "last.ckpt"), "--out", str(out)]) == 0
    before = _snapshot(out)
    _interrupt_after(monkeypatch, 2, KeyboardInterrupt())
    assert main(["probe", str(run / "checkpoints" / "last.ckpt"), "--out", str(out), "--overwrite"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probe"]


# ------------------------------------------------------------------ 2. analysis commands: output folder, checkpoints
@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One tiny pretrain run (checkpoint + probe report), shared by the module."""
    out = tmp_path_factory.mktemp("reliability") / "run"
    tiny_pretrain(out, "simclr", "+max_steps=2")
    assert (out / "checkpoints" / "last.ckpt").is_file()
    return out


#: command -> (argv for checkpoint(s) CKPT, report file, default folder under output_dir)
ANALYSIS = {
    "explain": (lambda c: ["explain", c], "explain.json", "explain"),
    "miou": (lambda c: ["miou", c, "--masks", "trifeature"], "miou.json", "miou"),
    "compare": (lambda c: ["compare", c, c], "compare.json", "compare"),
    "ifm-neighbours": (lambda c: ["ifm-neighbours", c], "ifm_neighbours.json", "ifm_neighbours"),
    "loss-readout": (lambda c: ["loss-readout", c, c, c], "loss_readout.json", "loss_readout"),
    "robust-features": (lambda c: ["robust-features", c], "robust_features.json", "robust_features"),
}


@pytest.fixture
def no_computation(monkeypatch):
    """Any data loading (features, probes, Grad-CAM) fails the test: the checks must come first."""
    def refuse(self):
        raise AssertionError("a data loader was iterated before the output folder was checked")

    monkeypatch.setattr(torch.utils.data.DataLoader, "__iter__", refuse)


@pytest.mark.parametrize("command", sorted(ANALYSIS))
def test_analysis_commands_refuse_an_existing_report_before_computing(run, tmp_path, capsys, no_computation,
                                                                      command):
    argv, report_file, _ = ANALYSIS[command]
    out = tmp_path / "out"
    out.mkdir()
    (out / report_file).write_text("{\"old\": true}")
    code = main([*argv(str(run / "checkpoints" / "last.ckpt")), "--out", str(out)])
    _one_line_error(capsys, code, "--overwrite", str(out))
    assert (out / report_file).read_text() == "{\"old\": true}"


@pytest.mark.parametrize("command", sorted(ANALYSIS))
def test_analysis_commands_fail_early_on_an_unusable_out(run, tmp_path, capsys, no_computation, command):
    argv, _, _ = ANALYSIS[command]
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    ckpt = str(run / "checkpoints" / "last.ckpt")
    for out, named in ((blocker / "sub", "is not a folder"), (blocker, "is not a folder"),
                       (tmp_path / ("x" * 300), "File name too long"), (tmp_path / "a\0b", "NUL")):
        _one_line_error(capsys, main([*argv(ckpt), "--out", str(out)]), named)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


@pytest.mark.parametrize("command", sorted(ANALYSIS))
def test_analysis_commands_pass_trust_checkpoint_and_check_the_default_folder(run, capsys, no_computation,
                                                                              command):
    """``--trust-checkpoint`` reaches the loader (it warns); the default folder OUTPUT_DIR/<name> is checked too."""
    argv, report_file, folder = ANALYSIS[command]
    out = run / folder
    out.mkdir()
    try:
        (out / report_file).write_text("old")
        with pytest.warns(UserWarning, match="trust-checkpoint"):
            code = main([*argv(str(run / "checkpoints" / "last.ckpt")), "--trust-checkpoint"])
        _one_line_error(capsys, code, "--overwrite", str(out))
        assert (out / report_file).read_text() == "old"
    finally:
        shutil.rmtree(out)


class _Payload:
    """Unpickling this writes a file: what a crafted checkpoint would do."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.write_text, (Path(self.target), "pwned"))


@pytest.mark.parametrize("command", sorted(ANALYSIS))
def test_a_crafted_checkpoint_runs_no_code_in_analysis_commands(tmp_path, capsys, no_computation, command):
    argv, _, _ = ANALYSIS[command]
    target = tmp_path / "written_by_payload"
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "solo_qscore": {"config": {"x": _Payload(str(target))}}}, ckpt)
    code = main([*argv(str(ckpt)), "--out", str(tmp_path / "o")])
    _one_line_error(capsys, code, "--trust-checkpoint", "evil.ckpt")
    assert not target.exists() and not (tmp_path / "o").exists()


def test_explain_with_overwrite_replaces_the_report(run, tmp_path, capsys):
    out = tmp_path / "explain"
    out.mkdir()
    (out / "explain.json").write_text("old")
    code = main(["explain", str(run / "checkpoints" / "last.ckpt"), "--out", str(out), "--overwrite",
                 "--top-features", "1", "--samples", "2", "qscore.band=[0,100]"])
    assert code == 0, capsys.readouterr().err
    assert (out / "explain.json").read_text() != "old" and (out / "explain.png").is_file()


# ------------------------------------------------------------------ 3. bad configs: one line, exit code 2
def _pretrain(*overrides: str, config_path: str | Path = SOLO_CIFAR, name: str = "simclr.yaml") -> list[str]:
    return ["pretrain", "--config-path", str(config_path), "--config-name", name, *SMALL, *overrides]


@pytest.fixture
def config_copy(tmp_path) -> Path:
    folder = tmp_path / "configs"
    shutil.copytree(SOLO_CIFAR, folder)
    return folder


def test_yaml_syntax_error_names_the_file_and_line(config_copy, tmp_path, capsys):
    (config_copy / "broken.yaml").write_text("defaults:\n  - _self_\nmethod: simclr\n  bad: [1,\n")
    code = main(_pretrain(f"output_dir={tmp_path / 'o'}", config_path=config_copy, name="broken.yaml"))
    _one_line_error(capsys, code, str(config_copy / "broken.yaml"), "line 4", "YAML syntax error")
    assert not (tmp_path / "o").exists()


def test_yaml_syntax_error_in_an_included_file_names_that_file(config_copy, tmp_path, capsys):
    included = config_copy / "augmentations" / "symmetric.yaml"  # in simclr.yaml's defaults list
    included.write_text(included.read_text() + "\n  : : [\n")
    code = main(_pretrain(f"output_dir={tmp_path / 'o'}", config_path=config_copy))
    _one_line_error(capsys, code, "YAML syntax error", str(included))


BAD_VALUES = [
    ("seed=abc", "+seed=abc"),  # not in the file: Hydra's message says how to add it
    ("++seed=abc", "config key 'seed' must be an integer"),
    ("++seed=1.5", "config key 'seed' must be an integer"),
    ("backbone.name=vgg", "config key 'backbone.name': unknown backbone 'vgg'"),
    ("backbone.name=resnet5", "did you mean 'resnet50'"),
    ("data.dataset=nonsense", "config key 'data.dataset': unknown dataset 'nonsense'"),
    ("optimizer.lr=abc", "optimizer.lr"),
    ("probe.max_iter=abc", "probe.max_iter"),
]


@pytest.mark.parametrize("override, named", BAD_VALUES, ids=[override for override, _ in BAD_VALUES])
def test_bad_values_get_one_line_naming_the_key(tmp_path, capsys, override, named):
    code = main(_pretrain(override, f"output_dir={tmp_path / 'o'}"))
    _one_line_error(capsys, code, named)
    assert not (tmp_path / "o").exists()


def test_a_missing_config_path_is_named(tmp_path, capsys):
    code = main(_pretrain(f"output_dir={tmp_path / 'o'}", config_path=tmp_path / "no_such_folder"))
    _one_line_error(capsys, code, "--config-path", "no_such_folder")
    code = main(_pretrain(f"output_dir={tmp_path / 'o'}", name="no_such_config.yaml"))
    _one_line_error(capsys, code, "--config-name", "no_such_config", "simclr")


def test_a_resnet50_checkpoint_into_a_resnet18_config(tmp_path, capsys):
    model, _ = tiny_model("simclr", "backbone.name=resnet50")
    ckpt = tmp_path / "resnet50.ckpt"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    del model
    code = main(_pretrain("--from", str(ckpt), f"output_dir={tmp_path / 'o'}"))
    _one_line_error(capsys, code, "--from", "resnet50.ckpt", "does not match the config's method/backbone")
    assert not (tmp_path / "o" / "checkpoints").exists()


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ConfigError, match="backbone.name"):
        main(["--debug", *_pretrain("backbone.name=vgg", f"output_dir={tmp_path / 'o'}")])


def test_numbers_in_a_yaml_file_are_numbers(config_copy):
    """YAML 1.1 reads ``5e-4`` (no dot) as a string; solo-learn's files are full of such values."""
    from solo_qscore.config import compose

    text = (config_copy / "simclr.yaml").read_text()
    (config_copy / "simclr.yaml").write_text(text.replace("weight_decay: 1e-4", "weight_decay: 5e-4"))
    assert "weight_decay: 5e-4" in (config_copy / "simclr.yaml").read_text()
    cfg = compose(config_copy, "simclr", ["++qscore.eps=2e0"])
    assert cfg.optimizer.weight_decay == 5e-4 and isinstance(cfg.optimizer.weight_decay, float)
    assert cfg.qscore.eps == 2.0 and isinstance(cfg.qscore.eps, float)


# ------------------------------------------------------------------ more commands that write or read checkpoints
def test_finetune_into_an_existing_run_is_refused(run, capsys):
    ckpt = run / "checkpoints" / "last.ckpt"
    before = ckpt.read_bytes()
    code = main(["finetune", str(ckpt), f"output_dir={run}", "wandb.enabled=false"])
    _one_line_error(capsys, code, "already holds a run", "--overwrite")
    assert ckpt.read_bytes() == before


def test_resume_from_a_crafted_checkpoint_runs_no_code(tmp_path, capsys):
    target = tmp_path / "written_by_payload"
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "solo_qscore_run": {"x": _Payload(str(target))}}, ckpt)
    code = main(_pretrain("--resume", str(ckpt), f"output_dir={tmp_path / 'r'}"))
    _one_line_error(capsys, code, "evil.ckpt")
    assert not target.exists()
