"""Where a run writes: its output folder, the marker that makes a folder a run, its replacement, a lock.

A run folder holds :data:`MARKER`, a small JSON file (solo-qscore version, time, command) that
``solo-qscore pretrain`` writes when it claims the folder. ``--overwrite`` replaces only a folder that
holds the marker, and in it only what a run writes (:data:`RUN_ENTRIES`); a user's other files there
stay. A folder without the marker (a user's folder, or a run of a solo-qscore from before the marker)
is never replaced. Nor is the root, the home folder, the current folder or a parent of it, or a
folder that holds solo-qscore itself, whatever the flags.

The checks (:func:`prepare_output_dir`) change nothing. The run claims the folder
(:meth:`RunFolder.claim`) only once its config and every input have been checked: an old run is then
moved into a hidden folder inside the run folder, deleted once the new run has trained a step
(:meth:`RunFolder.commit`) and put back if the new run fails before that (:meth:`RunFolder.restore`).

:func:`folder_lock` keeps two processes out of one output folder at a time (runs, probe reports).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Union

from solo_qscore.config import ConfigError

PathLike = Union[str, os.PathLike]

#: the marker file of a run folder (JSON: the solo-qscore version, when, the command)
MARKER = ".solo-qscore-run"
#: what a run writes into its folder, and all that ``--overwrite`` replaces there
RUN_ENTRIES = ("checkpoints", "probe", "wandb", "logs", MARKER)
#: the hidden folder, inside the run folder, that holds an old run while the new one starts
ASIDE_PREFIX = ".solo-qscore-replaced-"


def _is_worker() -> bool:
    """A DDP worker process: the launching process (global rank 0) checks, claims and locks the folder."""
    return os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("RANK", "0") != "0"


def protected_reason(folder: PathLike) -> Optional[str]:
    """Why ``folder`` can never be a run folder (``None`` if it can): the root of the file system, the
    home folder or a parent of it, the current folder or a parent of it, or a folder holding solo-qscore
    (its checkout or environment). Replacing one of these would delete far more than a run."""
    target = Path(folder).resolve()
    cwd = Path.cwd().resolve()
    package = Path(__file__).resolve().parent
    if target == Path(target.anchor):
        return "the root of the file system"
    with contextlib.suppress(RuntimeError):  # no home folder known
        home = Path.home().resolve()
        if target == home or target in home.parents:
            return "your home folder" if target == home else "a parent of your home folder"
    if target == cwd or target in cwd.parents:
        return "the current folder" if target == cwd else "a parent of the current folder"
    if target == package or target in package.parents:
        return "a folder that holds solo-qscore itself"
    return None


def check_writable(folder: PathLike, label: str) -> Path:
    """``ConfigError`` (one line, naming ``label``, e.g. ``--out``) unless ``folder`` is a folder that
    can be written, or can be created (the nearest existing folder above it can be written).
    Creates nothing (the write test is an anonymous file, deleted at once: it catches the read-only
    mounts and root-owned folders that ``os.access`` misses)."""
    folder = Path(folder)
    if "\0" in str(folder):
        raise ConfigError(f"{label} {str(folder)!r}: a path cannot hold a NUL character")
    try:
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"{label} {folder}: exists and is not a folder")
        parent = folder if folder.exists() else next((p for p in folder.absolute().parents if p.exists()), Path("."))
        if not parent.is_dir():
            raise ConfigError(f"{label} {folder}: {parent} is not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"{label} {folder}: {parent} is not writable")
        with tempfile.TemporaryFile(dir=parent):
            pass
    except ConfigError:
        raise
    except (OSError, ValueError) as err:  # read-only file system, name too long, ...
        reason = os.strerror(err.errno) if getattr(err, "errno", None) in errno.errorcode else str(err)
        raise ConfigError(f"{label} {folder}: cannot write there ({reason})") from err
    return folder


def run_folder_of(checkpoint: PathLike) -> Optional[Path]:
    """The run folder a checkpoint belongs to: the folder holding its ``checkpoints/`` folder (absolute;
    ``None`` for a checkpoint kept anywhere else)."""
    path = Path(checkpoint).absolute()
    return path.parent.parent if path.parent.name == "checkpoints" else None


def _same(a: PathLike, b: PathLike) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def _within_run_entries(path: PathLike, folder: Path) -> bool:
    target = Path(path).resolve()
    entries = [(folder / name).resolve() for name in RUN_ENTRIES]
    return any(target == e or e in target.parents for e in entries)


def write_marker(folder: Path) -> None:
    """Write :data:`MARKER` into ``folder``: this folder holds a run of solo-qscore."""
    from solo_qscore import __version__

    info = {"solo_qscore": __version__, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": list(sys.argv), "cwd": os.getcwd()}
    (folder / MARKER).write_text(json.dumps(info, indent=1) + "\n")


def prepare_output_dir(output_dir: PathLike, overwrite: bool, resume: Optional[str] = None,
                       init_from: Optional[str] = None) -> RunFolder:
    """Check where a run will write; changes nothing (the run claims the folder later, :meth:`RunFolder.claim`).

    A new or empty folder is used; the folder of the run ``resume`` continues is used as it is. Any
    other folder with files is refused (``ConfigError``, one line): without ``overwrite`` always; with
    it, unless the folder holds a run (:data:`MARKER`) and neither checkpoint (``resume``, ``init_from``)
    lies in what would be replaced. :func:`protected_reason` folders are refused whatever the flags.
    """
    output_dir = Path(output_dir)
    if _is_worker():
        return RunFolder(output_dir, active=False)
    home = run_folder_of(resume) if resume is not None else None
    if home is not None and _same(home, output_dir):  # --resume continues the run that lives here
        check_writable(output_dir, "output_dir")
        return RunFolder(output_dir)
    reason = protected_reason(output_dir)
    if reason:
        raise ConfigError(f"output_dir {output_dir} is {reason}; a run needs a folder of its own "
                          "(e.g. output_dir=runs/NAME), and --overwrite never replaces this one")
    check_writable(output_dir, "output_dir")
    if not (output_dir.is_dir() and any(output_dir.iterdir())):
        return RunFolder(output_dir)
    if not (output_dir / MARKER).is_file():
        raise ConfigError(f"output_dir {output_dir} holds files but no solo-qscore run (no {MARKER} in it); choose "
                          f"another output_dir=... (--overwrite replaces only a run; for a run of an older "
                          f"solo-qscore, create the marker first: touch {output_dir / MARKER})")
    if not overwrite and resume is not None:
        where = f"the run in {home}" if home is not None else "a checkpoint outside any run's checkpoints/ folder"
        raise ConfigError(f"output_dir {output_dir} holds another run (--resume {resume} continues {where}); "
                          f"leave out output_dir=... to continue there, or pass --overwrite to replace {output_dir}")
    if not overwrite:
        raise ConfigError(f"output_dir {output_dir} already holds a run; choose another output_dir=..., "
                          "or pass --overwrite to replace it")
    for flag, path in (("--from", init_from), ("--resume", resume)):
        if path is not None and _within_run_entries(path, output_dir):
            raise ConfigError(f"{flag} {path} lies in the run that --overwrite would replace ({output_dir}); "
                              "copy the checkpoint elsewhere first, or choose another output_dir=...")
    return RunFolder(output_dir, replace=True)


class RunFolder:
    """The output folder of one run, checked by :func:`prepare_output_dir`: nothing in it changes until
    :meth:`claim`. Inactive (every method a no-op) in DDP worker processes."""

    def __init__(self, path: PathLike, replace: bool = False, active: bool = True) -> None:
        self.path, self.replace, self.active = Path(path), replace, active
        #: entries of the folder that are not part of a run, kept when the old run was replaced
        self.kept: list[str] = []
        self._aside: Optional[Path] = None  # the old run, while the new one starts
        self._undo = False  # restore() may still undo the claim
        self._created: list[Path] = []  # folders the claim created, innermost first
        self._old: set[str] = set()  # the run entries the folder held before the claim

    def claim(self) -> None:
        """Make the folder this run's: move an old run's entries aside (``replace``; a user's other files
        stay, and a warning names them), create the folder, write the marker."""
        if not self.active:
            return
        fresh = not (self.path.is_dir() and any(self.path.iterdir()))
        where = self.path.absolute()
        self._created = [p for p in (where, *where.parents) if not p.exists()]
        self._old = {name for name in RUN_ENTRIES if os.path.lexists(self.path / name)}
        self._undo = fresh or self.replace
        try:
            if self.replace:
                self._aside = Path(tempfile.mkdtemp(prefix=ASIDE_PREFIX, dir=self.path))
                for name in RUN_ENTRIES:
                    if os.path.lexists(self.path / name):
                        os.replace(self.path / name, self._aside / name)
                self.kept = sorted(p.name for p in self.path.iterdir() if p != self._aside)
            self.path.mkdir(parents=True, exist_ok=True)
            if not (self.path / MARKER).is_file():
                write_marker(self.path)
        except BaseException:
            self.restore()
            raise
        if self.kept:
            warnings.warn(f"solo-qscore: --overwrite replaces the run in {self.path} and keeps what is not part of "
                          f"a run: {', '.join(self.kept)}", UserWarning, stacklevel=2)

    def restore(self) -> None:
        """Undo :meth:`claim` (the new run failed before it trained a step): remove what the new run
        wrote, put the old run back, remove folders the claim created. A no-op after :meth:`commit`."""
        if not self._undo:
            return
        self._undo = False
        moved = set(os.listdir(self._aside)) if self._aside is not None else set()
        for name in RUN_ENTRIES:
            entry = self.path / name
            if name in self._old and name not in moved:  # the old run's, still in place (the claim failed)
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            elif os.path.lexists(entry):
                entry.unlink()
        if self._aside is not None:
            for entry in self._aside.iterdir():
                os.replace(entry, self.path / entry.name)
            self._aside.rmdir()
            self._aside = None
        for folder in self._created:
            with contextlib.suppress(OSError):  # not empty (or gone): it stays
                folder.rmdir()

    def commit(self) -> None:
        """The new run has trained: delete the old one (if any); :meth:`restore` no longer undoes."""
        self._undo = False
        aside, self._aside = self._aside, None
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)


# -- one process per output folder -------------------------------------------------------------
def _lock_dir() -> Path:
    """Where the lock files live: the user's cache folder, else a per-user folder in the temp folder."""
    cache = os.environ.get("XDG_CACHE_HOME")
    candidates = [Path(cache) / "solo-qscore" / "locks"] if cache else []
    with contextlib.suppress(RuntimeError):
        candidates.append(Path.home() / ".cache" / "solo-qscore" / "locks")
    user = str(os.getuid()) if hasattr(os, "getuid") else re.sub(r"\W", "_", os.environ.get("USERNAME", "user"))
    candidates.append(Path(tempfile.gettempdir()) / f"solo-qscore-locks-{user}")
    for folder in candidates:
        with contextlib.suppress(OSError):
            folder.mkdir(parents=True, exist_ok=True)
            if os.access(folder, os.W_OK | os.X_OK):
                return folder
    raise ConfigError(f"no folder to keep lock files in (tried {', '.join(map(str, candidates))})")


def lock_path(folder: PathLike) -> Path:
    """The lock file of an output folder: one per absolute path (symbolic links resolved)."""
    target = Path(folder).resolve()
    digest = hashlib.sha256(str(target).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return _lock_dir() / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', target.name)[:40]}-{digest}.lock"


def _try_lock(fd: int) -> bool:
    """Take the OS lock on ``fd`` without waiting; ``False`` when another open file holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise
    return True


def _holder(path: Path) -> str:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return f" (pid {int(path.read_text().split()[0])})"
    return ""


@contextlib.contextmanager
def folder_lock(folder: PathLike, label: str) -> Iterator[None]:
    """Hold ``folder`` (an output folder, named ``label`` in messages) for this process: while held, a
    second process (or a second call) that asks for it gets ``ConfigError`` naming the holder's pid,
    instead of writing over the first. An OS lock (``flock``) on a file in the user's cache folder
    (nothing is created beside ``folder``): released on exit and on error, and by the system when the
    process dies, so a killed run does not block the folder. A no-op in DDP worker processes."""
    if _is_worker():
        yield
        return
    if "\0" in str(folder):
        raise ConfigError(f"{label} {str(folder)!r}: a path cannot hold a NUL character")
    path = lock_path(folder)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            os.close(fd)
            raise ConfigError(f"{label} {folder} is in use by another solo-qscore process{_holder(path)}; wait for it "
                              f"to finish, or choose another folder (lock: {path})")
        try:
            current = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)  # the holder released it (and removed the file) between our open and our lock: again
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n{Path(folder).resolve()}\n".encode("utf-8", "surrogateescape"))
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # before closing: whoever opened it meanwhile sees it is gone and tries again
        os.close(fd)
