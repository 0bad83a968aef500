"""Where a run writes (solo_qscore.output_folder): protected folders, the run marker, replacing only a run's own
entries (and putting them back), the one-process lock. Plain folders and files: no training here (the runs are in
tests/test_train.py, tests/cli/test_app.py and tests/test_reliability.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from solo_qscore.config import ConfigError
from solo_qscore.output_folder import (
    ASIDE_PREFIX,
    MARKER,
    folder_lock,
    lock_path,
    prepare_output_dir,
    protected_reason,
    run_folder_of,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _own_lock_folder(tmp_path, monkeypatch):
    """Lock files in this test's folder, not in the user's cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _old_run(folder: Path) -> Path:
    """A run folder as pretrain leaves it, plus a user's notes and data."""
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"old weights")
    (folder / "logs" / "version_0").mkdir(parents=True)
    (folder / "logs" / "version_0" / "metrics.csv").write_text("step\n1\n")
    (folder / "probe").mkdir()
    (folder / "probe" / "probe.json").write_text("{}")
    (folder / MARKER).write_text("{}")
    (folder / "notes.txt").write_text("mine")
    (folder / "mydata").mkdir()
    (folder / "mydata" / "a.bin").write_bytes(b"\x00\x01")
    return folder


def test_protected_folders(tmp_path, monkeypatch):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    named = {".": "the current folder", "..": "a parent of the current folder", str(tmp_path): "a parent",
             "/": "the root", str(tmp_path / "home"): "your home folder", str(REPO): "holds solo-qscore itself",
             str(REPO / "solo_qscore"): "holds solo-qscore itself"}
    for folder, reason in named.items():
        assert reason in (protected_reason(folder) or ""), folder
    assert protected_reason("run") is None and protected_reason(tmp_path / "elsewhere") is None
    with pytest.raises(ConfigError, match="is the current folder; a run needs a folder of its own"):
        prepare_output_dir(".", overwrite=True)


def test_overwrite_replaces_only_a_runs_own_entries(tmp_path):
    out = _old_run(tmp_path / "run")
    folder = prepare_output_dir(out, overwrite=True)
    assert _snapshot(out)["checkpoints/last.ckpt"] == b"old weights"  # checking changed nothing
    with pytest.warns(UserWarning, match="keeps what is not part of a run: mydata, notes.txt"):
        folder.claim()
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(ASIDE_PREFIX)) == [MARKER, "mydata",
                                                                                           "notes.txt"]
    marker = json.loads((out / MARKER).read_text())
    assert set(marker) == {"solo_qscore", "created", "command", "cwd"}
    folder.commit()
    assert not [p for p in out.iterdir() if p.name.startswith(ASIDE_PREFIX)]
    assert (out / "notes.txt").read_text() == "mine" and (out / "mydata" / "a.bin").read_bytes() == b"\x00\x01"


def test_restore_puts_the_old_run_back_byte_identical(tmp_path):
    out = _old_run(tmp_path / "run")
    before = _snapshot(out)
    folder = prepare_output_dir(out, overwrite=True)
    with pytest.warns(UserWarning):
        folder.claim()
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "last.ckpt").write_bytes(b"new weights")
    (out / "wandb").mkdir()
    folder.restore()
    assert _snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, "checkpoints", "logs", "probe", "notes.txt",
                                                            "mydata"])
    folder.commit()  # nothing left to delete
    assert _snapshot(out) == before


def test_a_claim_that_fails_part_way_leaves_the_old_run(tmp_path, monkeypatch):
    """Disk full while the old run's entries are moved aside: those moved come back, the others are never touched."""
    out = _old_run(tmp_path / "run")
    before = _snapshot(out)
    real, calls = os.replace, []

    def full_at_the_second_move(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(src, dst)

    folder = prepare_output_dir(out, overwrite=True)
    monkeypatch.setattr(os, "replace", full_at_the_second_move)
    with pytest.raises(OSError, match="No space left"):
        folder.claim()
    assert _snapshot(out) == before
    assert not [p for p in out.iterdir() if p.name.startswith(ASIDE_PREFIX)]


def test_a_new_folder_is_removed_again_when_the_run_fails_before_training(tmp_path):
    folder = prepare_output_dir(tmp_path / "x" / "run", overwrite=False)
    folder.claim()
    assert (tmp_path / "x" / "run" / MARKER).is_file()
    folder.restore()
    assert list(tmp_path.iterdir()) == []


def test_a_folder_without_the_marker_is_never_replaced(tmp_path):
    out = _old_run(tmp_path / "legacy")
    (out / MARKER).unlink()  # a run of an older solo-qscore, or a user's folder with a checkpoints/
    before = _snapshot(out)
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match=f"holds files but no solo-qscore run .*touch {out / MARKER}"):
            prepare_output_dir(out, overwrite=overwrite)
    assert _snapshot(out) == before


def test_resume_continues_in_its_own_folder_and_refuses_another_run(tmp_path, monkeypatch):
    own, other = _old_run(tmp_path / "own"), _old_run(tmp_path / "other")
    ckpt = own / "checkpoints" / "last.ckpt"
    assert run_folder_of(ckpt) == own and run_folder_of(tmp_path / "loose.ckpt") is None
    monkeypatch.chdir(own)  # also when the run folder is the current folder: nothing is replaced
    assert not prepare_output_dir(".", overwrite=True, resume=str(ckpt)).replace
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=f"holds another run \\(--resume {ckpt} continues the run in {own}\\)"):
        prepare_output_dir(other, overwrite=False, resume=str(ckpt))
    assert prepare_output_dir(other, overwrite=True, resume=str(ckpt)).replace
    with pytest.raises(ConfigError, match="lies in the run that --overwrite would replace"):
        prepare_output_dir(own, overwrite=True, init_from=str(ckpt))


def test_a_held_folder_refuses_a_second_writer(tmp_path):
    out = tmp_path / "report"
    with folder_lock(out, "--out"):
        assert lock_path(out).read_text().split()[0] == str(os.getpid())
        with pytest.raises(ConfigError, match=f"--out {out} is in use by another solo-qscore process \\(pid "
                                              f"{os.getpid()}\\)"):
            with folder_lock(out, "--out"):
                pass
    assert not lock_path(out).exists() and not out.exists()  # released, and nothing created beside the folder
    with folder_lock(out, "--out"):
        pass


def test_the_lock_is_released_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with folder_lock(tmp_path / "run", "output_dir"):
            raise RuntimeError("a crash")
    with folder_lock(tmp_path / "run", "output_dir"):
        pass


def test_a_killed_holder_does_not_block_the_folder(tmp_path):
    """SIGKILL leaves the lock file (with the dead pid) behind; the system has dropped its lock."""
    out = tmp_path / "run"
    code = ("import os, signal, sys\nfrom solo_qscore.output_folder import folder_lock\n"
            "held = folder_lock(sys.argv[1], 'output_dir')\nheld.__enter__()\nos.kill(os.getpid(), signal.SIGKILL)\n")
    child = subprocess.run([sys.executable, "-c", code, str(out)], env=os.environ.copy())
    assert child.returncode == -signal.SIGKILL
    assert lock_path(out).is_file()  # stale
    with folder_lock(out, "output_dir"):
        assert lock_path(out).read_text().split()[0] == str(os.getpid())
