"""Writing files whole (solo_qscore._files): one file, JSON, a folder swapped into place; the umask read, not set."""

from __future__ import annotations

import builtins
import json
import os

import pytest

from solo_qscore._files import atomic_file, current_umask, write_folder, write_json_atomic


@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def test_current_umask_reads_without_setting_it(umask_027, monkeypatch):
    monkeypatch.setattr(os, "umask", lambda mask: pytest.fail("os.umask was called"))
    assert current_umask() == 0o027


def test_current_umask_without_proc(umask_027, monkeypatch):
    real_open = builtins.open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc"):
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_proc)
    assert current_umask() == 0o027


def test_atomic_file_gets_the_umask_of_the_time_of_writing(tmp_path):
    """The mode was computed once at import: a umask set later (a service, a shared group folder) was ignored."""
    previous = os.umask(0o077)
    try:
        with atomic_file(tmp_path / "a.txt", binary=False) as handle:
            handle.write("x")
    finally:
        os.umask(previous)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o600


def test_json_is_strict_and_a_failed_write_keeps_the_previous_file(tmp_path):
    path = write_json_atomic({"a": [1, 2]}, tmp_path / "x.json")
    assert path.read_text() == '{\n  "a": [\n    1,\n    2\n  ]\n}\n'
    with pytest.raises(ValueError, match="JSON compliant"):
        write_json_atomic({"a": float("nan")}, path)
    assert json.loads(path.read_text()) == {"a": [1, 2]} and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def _fill(names: dict[str, str]):
    def fill(folder):
        for name, text in names.items():
            (folder / name).write_text(text)
    return fill


def test_write_folder_replaces_owned_files_and_keeps_the_rest(tmp_path):
    out = tmp_path / "report"
    owned = ("r.json", "a.png", "b.png")
    assert write_folder(out, _fill({"r.json": "1", "a.png": "A", "b.png": "B"}), owned) == out
    (out / "mine.txt").write_text("kept")
    write_folder(out, _fill({"r.json": "2", "a.png": "A2"}), owned)
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "mine.txt", "r.json"]  # no stale b.png
    assert (out / "r.json").read_text() == "2" and (out / "mine.txt").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no temporary folder left


def test_write_folder_failing_part_way_changes_nothing(tmp_path):
    out = tmp_path / "report"
    write_folder(out, _fill({"r.json": "1"}), ("r.json",))

    def broken(folder):
        (folder / "r.json").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_folder(out, broken, ("r.json",))
    assert (out / "r.json").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["report"]
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        write_folder(tmp_path / "file", _fill({}), ())
