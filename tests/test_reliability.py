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
    from solo_qscore.report.build import qscore_report
    from solo_qscore.report.config import ReportConfig

    g = torch.Generator().manual_seed(0)
    train_y, val_y = torch.randint(0, 3, (120,), generator=g), torch.randint(0, 3, (60,), generator=g)
    train_h = (torch.randn(120, 16, generator=g) + 2.0 * torch.nn.functional.one_hot(train_y, 16)).relu()
    val_h = (torch.randn(60, 16, generator=g) + 2.0 * torch.nn.functional.one_hot(val_y, 16)).relu()
    return qscore_report(train_h, train_y, val_h, val_y, ReportConfig(eps=1.0, compression=None,
                                                                      probe={"max_iter": 20}))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _interrupt_after(monkeypatch, calls: int, exc: BaseException) -> None:
    """Make the report's figure writer fail at its ``calls``-th figure (the earlier ones are written)."""
    import solo_qscore.plotting as plots

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
    from solo_qscore.report.writer import write_report

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
    from solo_qscore.report.writer import write_report

    _interrupt_after(monkeypatch, 2, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        write_report(small_report, tmp_path / "probe")
    assert list(tmp_path.iterdir()) == []


def test_a_new_report_replaces_the_old_one_whole_and_keeps_other_files(small_report, tmp_path):
    import json

    from solo_qscore.report.writer import write_report

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
    "rank": (lambda c: ["rank", c, c], "ranking.csv", None),  # default folder ./rank: tests/cli/test_rank.py
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


@pytest.mark.parametrize("command", sorted(c for c in ANALYSIS if ANALYSIS[c][2] is not None))
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
    # issue 22: values that were ignored, trained on, or failed part-way with a traceback
    ("method_kwargs.temperature=0", "config key 'method_kwargs.temperature' must be a number > 0, got 0"),
    ("method_kwargs.temperature=-1", "config key 'method_kwargs.temperature' must be a number > 0, got -1"),
    ("probe.batch_size=0", "config key 'probe.batch_size' must be an integer >= 1, got 0"),
    ("data.fallback=bogus", "config key 'data.fallback' must be null or one of cifar10, "),
    ("optimizer.name=bogus", "config key 'optimizer.name' must be one of adam, adamw, lars, sgd, got 'bogus'"),
    ("scheduler.name=bogus", "config key 'scheduler.name' must be one of warmup_cosine, step, none, got 'bogus'"),
    ("precision=bogus", "config key 'precision' must be one of "),
    ("accelerator=tpu", "config key 'accelerator': 'tpu' is not available on this machine; use one of auto, cpu,"),
    ("devices=0", "config key 'devices' must be a number of devices >= 1 or a non-empty list of device indices"),
]


@pytest.mark.parametrize("override, named", BAD_VALUES, ids=[override for override, _ in BAD_VALUES])
def test_bad_values_get_one_line_naming_the_key(tmp_path, capsys, override, named):
    code = main(_pretrain(override, f"output_dir={tmp_path / 'o'}"))
    _one_line_error(capsys, code, named)
    assert not (tmp_path / "o").exists()


def test_a_diverging_run_stops_at_its_first_nan_loss(tmp_path, capsys):
    """Issue 22 (4): ``method_kwargs.temperature=0`` trained to 11.3M NaN weights with exit code 0. A real
    solo-learn SimCLR whose loss goes NaN (here through a learning rate of 1e30) stops at that step: one
    line saying where and why, exit code 2, and no checkpoint of NaN weights (tests/callbacks/test_finite_loss.py
    shows the earlier checkpoints kept)."""
    out = tmp_path / "o"
    code = main(_pretrain("optimizer.lr=1e30", "probe.enabled=false", f"output_dir={out}"))
    assert code == 2
    err = capsys.readouterr().err  # Lightning's own INFO lines (model summary) come first, once training started
    assert "Traceback" not in err
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith("solo-qscore: configuration error: the training loss became NaN at epoch 0, batch "), err
    assert "optimizer.lr" in last and "method_kwargs.temperature" in last
    for ckpt in out.rglob("*.ckpt"):
        state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
        assert all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point()), ckpt


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


# ------------------------------------------------------------------ 4. run folders: --overwrite, --resume, --from
def _copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def test_overwrite_never_replaces_the_current_folder_or_a_parent(tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "notes.txt").write_text("mine")
    (work / "sub" / "data.bin").write_bytes(b"\x00")
    monkeypatch.chdir(work)
    before = _snapshot(tmp_path)
    for out, named in ((".", "is the current folder"), ("..", "is a parent of the current folder")):
        _one_line_error(capsys, main(_pretrain(f"output_dir={out}", "--overwrite")), named, "never replaces")
        assert _snapshot(tmp_path) == before


def test_overwrite_refuses_a_folder_that_holds_no_run(tmp_path, capsys):
    user = tmp_path / "userdir"
    (user / "mydata").mkdir(parents=True)
    (user / "notes.txt").write_text("mine")
    (user / "mydata" / "a.bin").write_bytes(b"\x00")
    before = _snapshot(user)
    code = main(_pretrain(f"output_dir={user}", "--overwrite"))
    _one_line_error(capsys, code, f"output_dir {user} holds files but no solo-qscore run")
    assert _snapshot(user) == before


def test_overwrite_replaces_the_run_and_keeps_the_users_files_beside_it(run, tmp_path):
    out = _copy_run(run, tmp_path / "run")
    (out / "mydata").mkdir()
    (out / "mydata" / "a.bin").write_bytes(b"\x00")
    (out / "notes.txt").write_text("mine")
    (out / "checkpoints" / "only-in-the-old-run.ckpt").write_bytes(b"old")
    with pytest.warns(UserWarning, match="keeps what is not part of a run: mydata, notes.txt"):
        assert main(_pretrain(f"output_dir={out}", "--overwrite")) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "mydata" / "a.bin").read_bytes() == b"\x00"
    assert (out / "checkpoints" / "last.ckpt").is_file() and (out / "probe" / "probe.json").is_file()
    assert not (out / "checkpoints" / "only-in-the-old-run.ckpt").exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".solo-qscore-replaced")]


def test_a_refused_input_leaves_the_run_that_overwrite_would_replace(run, tmp_path, capsys):
    """The old run is replaced only once the whole config and every input have been checked."""
    out = _copy_run(run, tmp_path / "run")
    before = _snapshot(out)
    code = main(_pretrain(f"output_dir={out}", "--overwrite", "optimizer.batch_size=16", "data.train_subset=8"))
    _one_line_error(capsys, code, "fewer than optimizer.batch_size=16")
    assert _snapshot(out) == before
    model, _ = tiny_model("simclr", "backbone.name=resnet50")
    ckpt = tmp_path / "resnet50.ckpt"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    del model
    code = main(_pretrain(f"output_dir={out}", "--overwrite", "--from", str(ckpt)))
    _one_line_error(capsys, code, "does not match the config's method/backbone")
    assert _snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in run.iterdir())


def test_resume_into_another_runs_folder_is_refused(run, tmp_path, capsys):
    other = _copy_run(run, tmp_path / "other")
    before = _snapshot(other)
    code = main(_pretrain("--resume", str(run / "checkpoints" / "last.ckpt"), f"output_dir={other}", "++max_steps=3"))
    _one_line_error(capsys, code, f"output_dir {other} holds another run", f"continues the run in {run}",
                    "--overwrite")
    assert _snapshot(other) == before


def test_from_and_resume_together_are_refused(run, tmp_path, capsys):
    ckpt = str(run / "checkpoints" / "last.ckpt")
    code = main(_pretrain("--from", ckpt, "--resume", ckpt, f"output_dir={tmp_path / 'o'}"))
    _one_line_error(capsys, code, "--from and --resume cannot be used together")
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ 5. issue 22: no traceback for what a user can fix
PROBE_OVERRIDES = [("qscore.eps=-1", "config key 'qscore.eps' must be a number >= 0, got -1"),
                   ("qscore.eps=abc", "config key 'qscore.eps' must be a number >= 0, got 'abc'"),
                   ("probe.max_iter=0", "config key 'probe.max_iter' must be an integer >= 1, got 0"),
                   ("data.val_subset=0", "config key 'data.val_subset' must be an integer >= 1, got 0"),
                   ("qscore.band=[95,50]", "config key 'qscore.band' must be [low, high] with 0 <= low < high"),
                   ("data.batch_size=0", "config key 'data.batch_size' must be an integer >= 1, got 0")]


@pytest.mark.parametrize("override, named", PROBE_OVERRIDES, ids=[o for o, _ in PROBE_OVERRIDES])
def test_probe_overrides_are_checked_before_any_feature_is_extracted(run, tmp_path, capsys, no_computation,
                                                                    override, named):
    code = main(["probe", str(run / "checkpoints" / "last.ckpt"), "--out", str(tmp_path / "p"), override])
    _one_line_error(capsys, code, "configuration error", named)
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("case", ["read-only", "name-too-long", "through-a-file"])
def test_an_unusable_output_dir_is_one_line_before_anything_is_created(tmp_path, capsys, case):
    import os

    folder = tmp_path / "folder"
    folder.mkdir()
    if case == "read-only":
        # root writes into a chmod 555 folder; sysfs takes no new files, not even from root
        parent = Path("/sys") if os.geteuid() == 0 else folder
        if parent == folder:
            folder.chmod(0o555)
        # os.access answers for a user ("not writable"); for root only the attempt tells ("cannot write there")
        out, named = parent / "solo-qscore-run", "is not writable" if parent == folder else "cannot write there"
    elif case == "name-too-long":  # an OSError that is not a PermissionError: a traceback before issue 22
        out, named = folder / ("x" * 300), "File name too long"
    else:
        (folder / "a_file").write_text("")
        out, named = folder / "a_file" / "run", "is not a folder"
    try:
        _one_line_error(capsys, main(_pretrain(f"output_dir={out}")), f"output_dir {out}", named)
        assert sorted(p.name for p in folder.iterdir()) == ([] if case != "through-a-file" else ["a_file"])
        assert not os.path.exists(out)
    finally:
        folder.chmod(0o755)


def _checkpoint_of(model, path: Path) -> Path:
    """``model``'s weights and run config, as a Lightning checkpoint of ``pretrain`` holds them."""
    checkpoint = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


def test_resume_with_a_foreign_or_other_method_checkpoint_is_one_line_before_lightning_reads_it(tmp_path, capsys):
    foreign = tmp_path / "foreign.ckpt"  # a Lightning checkpoint of something else: its keys, not ours
    torch.save({"epoch": 0, "global_step": 3, "pytorch-lightning_version": "2.6.6",
                "state_dict": {"layer.weight": torch.zeros(2, 2)}, "optimizer_states": [], "lr_schedulers": []},
               foreign)
    model, _ = tiny_model("byol")
    byol = _checkpoint_of(model, tmp_path / "byol.ckpt")
    del model
    code = main(_pretrain("--resume", str(foreign), f"output_dir={tmp_path / 'o'}"))
    _one_line_error(capsys, code, f"--resume {foreign}: a Lightning checkpoint, but not of a solo-qscore run")
    code = main(_pretrain("--resume", str(byol), f"output_dir={tmp_path / 'o'}"))
    _one_line_error(capsys, code, f"--resume {byol}: a checkpoint of a byol run (resnet18), but the config is "
                                  "simclr (resnet18)")
    assert not (tmp_path / "o").exists()



# ------------------------------------------------------------------ 5. your own image folders (data.dataset=custom)
def _own_images(folder: Path, *overrides: str) -> list[str]:
    """``pretrain`` with solo-learn's documented custom-data keys (its train_path: the folder itself)."""
    return _pretrain("data.dataset=custom", f"data.train_path={folder}", "data.val_path=null",
                     "optimizer.batch_size=4", *overrides)


def _notes(caught, capsys) -> str:
    """Our one-line notes, whether they reached Python's warnings or stderr."""
    return "\n".join([str(w.message) for w in caught] + capsys.readouterr().err.splitlines())


def test_pretrain_on_a_labelled_image_folder_writes_the_probe_and_skips_a_truncated_jpeg(tmp_path, capsys):
    """Issue 22 (3): ``pretrain data.dataset=custom data.train_path=<folder>`` failed for every folder ("unknown
    dataset 'custom'"). The class sub-folders are the labels; with no ``val_path`` the probe holds out 20% of
    each class. ``data.bad_images=skip`` trains on past a truncated JPEG, names it and lists it in the run."""
    import json
    import warnings

    from helpers.image_folders import labelled_folder, truncate

    folder = labelled_folder(tmp_path / "images", classes=("ant", "bee", "cat"), per_class=4)
    bad = truncate(folder / "cat" / "02.jpg")
    out = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(_own_images(folder, "data.bad_images=skip", f"output_dir={out}")) == 0
    report = json.loads((out / "probe" / "probe.json").read_text())
    assert report["num_features"] == 512 and 0.0 <= report["accuracy"] <= 1.0
    assert [json.loads(line)["path"] for line in (out / "logs" / "skipped_images.jsonl").read_text().splitlines()] \
        == [str(bad)]
    notes = _notes(caught, capsys)
    assert f"solo-qscore: skipped 1 unreadable image (data.bad_images=skip): {bad}" in notes
    assert "probe is skipped" not in notes


def test_pretrain_on_unlabelled_images_skips_the_probe_with_one_note(tmp_path, capsys):
    """A flat folder of images (no class sub-folders) trains as unlabelled images: D is computed and saved, the
    probe is skipped with one line, and no report folder is written."""
    import warnings

    from helpers.image_folders import flat_folder

    out = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(_own_images(flat_folder(tmp_path / "images", n=8), f"output_dir={out}")) == 0
    assert _notes(caught, capsys).count("solo-qscore: the probe is skipped: ") == 1
    assert not (out / "probe").exists()
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert int(state["qscore_discriminative"].sum()) > 0


def test_a_truncated_jpeg_is_one_line_naming_it_and_the_key_to_skip(tmp_path, capsys):
    """The default ``data.bad_images=error``: a truncated JPEG was an ``OSError`` traceback naming no file."""
    from helpers.image_folders import labelled_folder, truncate

    folder = labelled_folder(tmp_path / "images", classes=("ant", "bee"), per_class=4)  # 2 batches of 4: all read
    bad = truncate(folder / "bee" / "00.jpg")
    code = main(_own_images(folder, "probe.enabled=false", f"output_dir={tmp_path / 'run'}"))
    assert code == 2
    # Lightning's INFO lines (model summary) come first, once training started (and, after another test's run in
    # this process, its logging errors about that test's closed capture stream)
    err = capsys.readouterr().err
    assert "PIL" not in err  # no traceback of the image decoder
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith(f"solo-qscore: error: cannot read image {bad} (OSError"), err
    assert last.endswith("skip unreadable images with data.bad_images=skip")


IMAGE_FOLDER_ERRORS = [
    ("missing", ["data.train_path={tmp}/nowhere"], "config key 'data.train_path': {tmp}/nowhere is not a folder"),
    ("val-path", ["data.val_path={tmp}/nowhere"], "config key 'data.val_path': {tmp}/nowhere is not a folder"),
    ("no-labels", ["+data.no_labels=true"], "config key 'data.no_labels': true reads the images directly in"),
    ("policy", ["data.bad_images=ignore"], "config key 'data.bad_images' must be error or skip"),
    ("h5", ["data.format=h5"], "config key 'data.format': h5 files are read by solo-learn's own loaders only"),
    ("flat-imagenet", ["data.dataset=imagenet100", "data.train_path={tmp}/images/ant"],
     "has no class sub-folders, which data.dataset=imagenet100 needs"),
]


@pytest.mark.parametrize("overrides, named", [e[1:] for e in IMAGE_FOLDER_ERRORS],
                         ids=[e[0] for e in IMAGE_FOLDER_ERRORS])
def test_image_folder_mistakes_are_one_line_before_anything_is_written(tmp_path, capsys, overrides, named):
    from helpers.image_folders import labelled_folder

    folder = labelled_folder(tmp_path / "images", classes=("ant", "bee"), per_class=4)
    overrides = [o.format(tmp=tmp_path) for o in overrides]
    code = main(_own_images(folder, *overrides, f"output_dir={tmp_path / 'run'}"))
    _one_line_error(capsys, code, named.format(tmp=tmp_path))
    assert not (tmp_path / "run").exists()
