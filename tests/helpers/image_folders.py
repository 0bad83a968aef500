"""Tiny image folders on disk, as users have them: torchvision's ImageFolder layout (one sub-folder per
class), a flat folder of unlabelled images, and broken files (a truncated JPEG, bytes that are no image)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, seed: int, size: int = 32) -> Path:
    """A random RGB ``size`` x ``size`` image, PNG or JPEG by ``path``'s suffix."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def labelled_folder(root: Path, classes: tuple[str, ...] = ("ant", "bee", "cat"), per_class: int = 12) -> Path:
    """``root/<class>/<i>.png|jpg``: ``per_class`` images of each class (PNG and JPEG alternate)."""
    for c, name in enumerate(classes):
        for i in range(per_class):
            write_image(root / name / f"{i:02d}.{'png' if i % 2 else 'jpg'}", seed=100 * c + i)
    return root


def flat_folder(root: Path, n: int = 24) -> Path:
    """``root/<i>.png``: ``n`` images and no class sub-folders (unlabelled)."""
    for i in range(n):
        write_image(root / f"{i:02d}.png", seed=1000 + i)
    return root


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut an image file to ``keep`` of its bytes (a download or copy that stopped part-way)."""
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path
