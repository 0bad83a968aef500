"""Progress bars for the slow steps (feature extraction, probe fits): shown only when worth it.

A bar appears after :data:`DELAY` seconds (short steps stay silent), only when stderr is a
terminal (tqdm's ``disable=None``) and never when the environment variable ``CI`` is set.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, Optional

DELAY = 3.0  # seconds before a bar is drawn


def progress_disabled() -> Optional[bool]:
    """tqdm's ``disable``: ``True`` under CI, else ``None`` (off unless stderr is a TTY)."""
    ci = os.environ.get("CI", "")
    return True if ci.strip().lower() not in ("", "0", "false", "no") else None


def progress(iterable: Optional[Iterable] = None, total: Optional[int] = None, desc: Optional[str] = None,
             unit: str = "it", **kwargs: Any):
    """A ``tqdm`` bar (or a no-op one) over ``iterable`` / of ``total`` steps; use ``.update(n)``."""
    from tqdm import tqdm

    if total is None and iterable is not None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    options = {"delay": DELAY, "leave": False, "dynamic_ncols": True, "disable": progress_disabled()}
    options.update(kwargs)
    return tqdm(iterable, total=total, desc=desc, unit=unit, **options)
