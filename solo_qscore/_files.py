"""Writing files so that a reader never sees half of one: one file, a JSON file, a whole folder.

* :func:`atomic_file`: a temporary file beside the target, renamed over it once complete;
* :func:`write_json_atomic`: strict JSON through :func:`atomic_file`;
* :func:`write_folder`: a folder of files written whole or not at all (the report folders);
* :func:`current_umask`: the process umask, read without setting it (``os.umask`` can only be read
  by changing it, and a file another thread creates in between gets the wrong mode).

Every command and the report write through these (no other module renames files into place).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_file", "current_umask", "write_folder", "write_json_atomic"]


def current_umask() -> int:
    """The process umask, without changing it even for a moment.

    Linux reports it in ``/proc/self/status``; elsewhere it is read from the mode a fresh file gets
    in a private temporary folder (``0o777`` requested, the umask removes its bits).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with tempfile.TemporaryDirectory() as folder:
        probe = os.path.join(folder, "mode")
        os.close(os.open(probe, os.O_CREAT | os.O_WRONLY, 0o777))
        return 0o777 & ~os.stat(probe).st_mode


@contextmanager
def atomic_file(path: str | os.PathLike, binary: bool = True) -> Iterator[IO]:
    """Open a temp file next to ``path`` for writing; on success it replaces ``path`` (``os.replace``).

    On any exception the temp file is removed and ``path`` is left as it was. The file gets the
    usual permissions (``0o666`` minus the umask at the time of writing), not the private mode of
    ``mkstemp``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json_atomic(payload: Any, path: str | os.PathLike) -> Path:
    """Write ``payload`` as strict JSON (indent 2, a final newline) to ``path`` through :func:`atomic_file`.

    If serialisation fails midway, the temp file is removed and a previous ``path`` is left intact.
    """
    with atomic_file(path, binary=False) as handle:
        json.dump(payload, handle, indent=2, allow_nan=False)
        handle.write("\n")
    return Path(path)


def write_folder(out_dir: str | os.PathLike, fill: Callable[[Path], Any], owned: Collection[str]) -> Path:
    """Make ``out_dir`` hold what ``fill(folder)`` writes into an empty folder, whole or not at all.

    ``fill`` writes into a hidden temporary sibling folder (``.NAME.*.tmp``), which is renamed to
    ``out_dir`` once complete; a previous folder there is replaced only then, and its entries that
    are not in ``owned`` (the names a complete folder may hold) are kept. A failure or an
    interruption part-way leaves the previous folder as it was and removes the temporary one.
    Where ``out_dir`` itself cannot be renamed (a mount point, or its parent is not writable) the
    files are replaced one by one, each atomically (``probe.json``-like last: see
    :func:`_replace_files`). A symbolic link ``out_dir`` stays; the folder it points to is replaced.

    Returns:
        ``out_dir`` as an absolute path.
    """
    out_dir = Path(os.path.abspath(out_dir))
    if out_dir.is_symlink():  # replace the folder it points to; the link stays
        out_dir = out_dir.resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir}: exists and is not a folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    except PermissionError:  # the parent is read-only: stage inside out_dir, then move file by file
        out_dir.mkdir(exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".report.", suffix=".tmp"))
    try:
        os.chmod(staging, out_dir.stat().st_mode & 0o7777 if out_dir.is_dir() else 0o777 & ~current_umask())
        fill(staging)
        _put_in_place(staging, out_dir, set(owned))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _put_in_place(staging: Path, out_dir: Path, owned: set[str]) -> None:
    """Make the complete folder ``staging`` the folder ``out_dir`` (see :func:`write_folder`)."""
    if staging.parent == out_dir:  # staged inside: replace the files one by one (each atomic)
        _replace_files(staging, out_dir, owned)
        staging.rmdir()
        return
    if not out_dir.exists():
        try:
            os.rename(staging, out_dir)
            return
        except OSError:  # created meanwhile: replace it as below
            if not out_dir.is_dir():
                raise
    old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".old"))
    try:
        os.rename(out_dir, old / "report")  # the previous folder, kept until the new one is in place
    except OSError:  # out_dir cannot move (a mount point, busy): replace the files one by one
        old.rmdir()
        _replace_files(staging, out_dir, owned)
        shutil.rmtree(staging, ignore_errors=True)
        return
    try:
        os.rename(staging, out_dir)
    except BaseException:
        os.rename(old / "report", out_dir)
        old.rmdir()
        raise
    for entry in (old / "report").iterdir():  # keep what was there besides the owned files
        if entry.name not in owned and not (out_dir / entry.name).exists():
            os.rename(entry, out_dir / entry.name)
    shutil.rmtree(old, ignore_errors=True)


def _replace_files(staging: Path, out_dir: Path, owned: set[str]) -> None:
    """Fallback of :func:`_put_in_place`: each file replaced atomically, the ``.json`` files last (a
    reader that finds the new JSON finds the new files it names); owned files of the previous folder
    that the new one lacks are removed (no stale figure stays)."""
    new = {p.name for p in staging.iterdir()}
    for name in sorted(new, key=lambda n: n.endswith(".json")):
        os.replace(staging / name, out_dir / name)
    for name in owned:
        if name not in new and (out_dir / name).is_file():
            (out_dir / name).unlink()
