"""Unreadable image files (truncated, corrupt, not an image at all): refused naming the file, or skipped.

The user chooses with ``data.bad_images``:

* ``error`` (default): the first unreadable file stops the run with :class:`BadImageError`, one line
  naming the file, the reason and the key that skips such files;
* ``skip``: the item is replaced by the next readable one of the same dataset (so batches keep their
  size, solo-learn's indexes stay valid and each image keeps its own label), and the file is recorded in
  a :class:`SkippedImages` list; the first :data:`MAX_NAMED` skipped files are named in a warning when
  they are met, and whoever owns the list (``BadImagesCallback``) says at the end how many and which.

Files are checked lazily, when they are decoded for a batch anyway: a large folder is never decoded
twice, nor read up front. The check wraps datasets we did not write (solo-learn's ``ImageFolder`` and
``CustomDatasetWithoutLabels``, torchvision's ``DatasetFolder``) and our own folder datasets alike, by
giving the instance a subclass whose ``__getitem__`` catches the error (:func:`guard_images`).
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from PIL import Image

from .datasets import DatasetUnavailableError

__all__ = ["BAD_IMAGE_POLICIES", "BadImageError", "SkippedImages", "guard_images", "read_item"]

BAD_IMAGE_POLICIES = ("error", "skip")
#: What PIL raises for a file it cannot decode: OSError (truncated, "cannot identify image file", a
#: directory or a file that vanished), SyntaxError (broken PNG chunks), its decompression-bomb guard.
UNREADABLE = (OSError, SyntaxError, Image.DecompressionBombError)
#: Skipped files named one by one when met; the rest are only counted until the end-of-run summary.
MAX_NAMED = 10


class BadImageError(DatasetUnavailableError):
    """An image file cannot be read; the message names it and ``data.bad_images=skip``."""

    def __init__(self, message: str) -> None:
        # a DataLoader worker's exception is raised again in the main process as
        # ``BadImageError("Caught BadImageError in DataLoader worker process 0.\nOriginal Traceback ...")``:
        # keep our own one-line message, the part after the last "BadImageError: "
        marker = f"{BadImageError.__name__}: "
        if "Original Traceback" in message and marker in message:
            message = message.rsplit(marker, 1)[1].strip()
        super().__init__(message)


def check_policy(policy: str) -> str:
    if policy not in BAD_IMAGE_POLICIES:
        raise ValueError(f"data.bad_images must be one of {', '.join(BAD_IMAGE_POLICIES)}, got {policy!r}")
    return policy


class SkippedImages:
    """The files skipped in one run (``data.bad_images=skip``), each with the reason.

    Kept in an append-only JSON-lines file, so that DataLoader worker processes (forked or spawned:
    the object pickles as its path) and the main process share one list, and a file is named once
    per run however many workers and epochs meet it. ``path=None``: a temporary file, created only
    when a file is first skipped and removed by :meth:`discard`.
    """

    def __init__(self, path: Optional[str | Path] = None) -> None:
        self.temporary = path is None
        self.path = Path(path) if path is not None else (
            Path(tempfile.gettempdir()) / f"solo-qscore-skipped-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl")
        self._known: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        return {"temporary": self.temporary, "path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _known=set())

    def entries(self) -> dict[str, str]:
        """``{file: reason}`` of every file skipped so far, in the order they were met."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return {}
        found: dict[str, str] = {}
        for line in lines:
            try:
                item = json.loads(line)
                found.setdefault(str(item["path"]), str(item["error"]))
            except (ValueError, KeyError, TypeError):  # a line cut by a crash: ignore it
                continue
        return found

    def add(self, path: str, error: BaseException) -> None:
        """Record ``path`` (once per run) and name it in a warning while fewer than :data:`MAX_NAMED` are."""
        if path in self._known:
            return
        self._known.add(path)
        seen = self.entries()
        if path in seen:
            return
        reason = _reason(error)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:  # one short append: whole lines across processes
            f.write(json.dumps({"path": path, "error": reason}) + "\n")
        count = len(seen) + 1
        if count <= MAX_NAMED:
            more = "; further ones are counted at the end" if count == MAX_NAMED else ""
            warnings.warn(f"solo-qscore: skipped unreadable image {path} ({reason}) "
                          f"[data.bad_images=skip, {count} so far{more}]", UserWarning, stacklevel=3)

    def summary(self) -> Optional[str]:
        """One line: how many files were skipped and which (``None`` when none were)."""
        found = list(self.entries())
        if not found:
            return None
        shown = ", ".join(found[:MAX_NAMED])
        rest = f" and {len(found) - MAX_NAMED} more" if len(found) > MAX_NAMED else ""
        where = "" if self.temporary else f" (list: {self.path})"
        noun = "image" if len(found) == 1 else "images"
        return f"solo-qscore: skipped {len(found)} unreadable {noun} (data.bad_images=skip): {shown}{rest}{where}"

    def discard(self) -> None:
        """Remove a temporary list (a list in a run's folder stays, as the run's record)."""
        if self.temporary:
            self.path.unlink(missing_ok=True)


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split()) or "unreadable"
    return f"{type(error).__name__}: {text[:200]}"


def item_path(dataset: Any, index: int) -> str:
    """The file behind item ``index`` of an image-folder dataset (best effort, for messages)."""
    for holder in (dataset, getattr(dataset, "folder", None)):
        samples = getattr(holder, "samples", None)
        if isinstance(samples, (list, tuple)) and 0 <= index < len(samples):
            return str(samples[index][0])
    files = getattr(dataset, "files", None)
    if isinstance(files, (list, tuple)) and 0 <= index < len(files):
        return str(files[index])
    images, root = getattr(dataset, "images", None), getattr(dataset, "root", None)
    if isinstance(images, (list, tuple)) and root is not None and 0 <= index < len(images):
        return str(Path(root) / str(images[index]))  # solo-learn's CustomDatasetWithoutLabels
    return f"item {index} of {type(dataset).__name__}"


def read_item(dataset: Any, index: int, get: Callable[[int], Any], policy: str,
              skipped: Optional[SkippedImages]) -> Any:
    """``get(index)``; if its image cannot be read, raise :class:`BadImageError` naming the file
    (``policy='error'``) or record it in ``skipped`` and return the next readable item (``'skip'``)."""
    n, path = len(dataset), ""
    for step in range(n):
        j = (int(index) + step) % n
        try:
            return get(j)
        except UNREADABLE as err:
            path = item_path(dataset, j)
            if policy != "skip":
                raise BadImageError(f"cannot read image {path} ({_reason(err)}); fix or remove the file, or "
                                    "skip unreadable images with data.bad_images=skip") from err
            if skipped is not None:
                skipped.add(path, err)
            else:
                warnings.warn(f"solo-qscore: skipped unreadable image {path} ({_reason(err)}) [data.bad_images=skip]",
                              UserWarning, stacklevel=2)
    if n == 0:
        return get(index)  # the dataset's own IndexError
    raise BadImageError(f"none of the {n} images can be read (data.bad_images=skip skipped them all; the "
                        f"last: {path})")


_GUARDED_CLASSES: dict[type, type] = {}


def _guarded_class(cls: type) -> type:
    """A subclass of a foreign dataset class whose ``__getitem__`` goes through :func:`read_item`
    (only methods added, so an instance's ``__class__`` can be swapped for it)."""
    if cls not in _GUARDED_CLASSES:
        def __getitem__(self, index):
            return read_item(self, index, lambda j: cls.__getitem__(self, j), self._bad_images_policy,
                             self._skipped_images)

        def __reduce__(self):
            # made at run time: pickle (spawned DataLoader workers) as the original class
            return _restore_guarded, (cls, self.__dict__)

        _GUARDED_CLASSES[cls] = type(cls.__name__, (cls,), {
            "__getitem__": __getitem__, "__reduce__": __reduce__, "__module__": cls.__module__,
            "_bad_images_guarded": True, "_bad_images_policy": "error", "_skipped_images": None})
    return _GUARDED_CLASSES[cls]


def _restore_guarded(cls: type, state: dict[str, Any]) -> Any:
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    obj.__class__ = _guarded_class(cls)
    return obj


def reads_image_files(dataset: Any) -> bool:
    """Whether ``dataset`` decodes image files itself: a torchvision/solo-learn image-folder dataset, or one
    of ours (:class:`~solo_qscore.data.datasets.ImageFolderDataset`, ``ImageFilesDataset``)."""
    samples, images = getattr(dataset, "samples", None), getattr(dataset, "images", None)
    ours = isinstance(getattr(getattr(dataset, "folder", None), "samples", None), list) or (
        isinstance(getattr(dataset, "files", None), list))
    return ours or (isinstance(samples, list) and callable(getattr(dataset, "loader", None))) or (
        isinstance(images, list) and getattr(dataset, "root", None) is not None and hasattr(dataset, "transform"))


def guard_images(dataset: Any, policy: str = "error", skipped: Optional[SkippedImages] = None) -> bool:
    """Make every image-folder dataset under ``dataset`` (through ``.dataset`` wrappers: subsets, crops)
    refuse or skip unreadable files as ``policy`` says. In place, so a DataLoader that holds ``dataset``
    (and the workers it starts afterwards) sees it; calling again updates the policy and the list.
    Returns whether a dataset was found."""
    check_policy(policy)
    found, seen = False, 0
    while dataset is not None and seen < 16:
        if getattr(dataset, "_bad_images_guarded", False) or reads_image_files(dataset):
            if not getattr(dataset, "_bad_images_guarded", False):
                dataset.__class__ = _guarded_class(type(dataset))
            dataset._bad_images_policy, dataset._skipped_images = policy, skipped
            found = True
        dataset, seen = getattr(dataset, "dataset", None), seen + 1
    return found
