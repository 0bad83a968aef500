"""Trifeature (Hermann & Lampinen 2020, used by the IFM paper): one of 10 shapes x 10 colours x 10 textures.

Generated procedurally with numpy: a shape (binary mask, randomly scaled, rotated by at most
15 degrees and shifted a little) is filled with a texture (a pattern of values in [0.35, 1]) and
coloured by one of 10 colours of distinct hue, on a black background. So every pixel inside the
shape is ``colour_rgb * texture_value`` (times the anti-aliased coverage at the border).

Sample ``i``'s (colour, shape, texture) comes from a seeded shuffle of all 1000 combinations
(repeated as needed), so attributes are balanced; train and test draw from different random
streams of the same ``seed``. Results are cached as ``.npz`` under ``root/trifeature/``.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from .datasets import ArrayImageDataset

__all__ = [
    "ATTRIBUTES",
    "COLORS",
    "COLOR_NAMES",
    "SHAPE_NAMES",
    "TEXTURE_NAMES",
    "TrifeatureDataset",
    "generate_trifeature",
    "trifeature_masks",
]

ATTRIBUTES = ("color", "shape", "texture")
COLOR_NAMES = ("red", "orange", "yellow", "lime", "green", "cyan", "blue", "purple", "magenta", "white")
#: RGB (uint8) of each colour label; distinct hues, so a colour is recognisable at any brightness.
COLORS = np.array(
    [[230, 30, 30], [245, 140, 20], [235, 225, 30], [140, 230, 30], [30, 190, 60],
     [30, 210, 220], [40, 80, 235], [140, 50, 220], [225, 40, 200], [240, 240, 240]],
    dtype=np.uint8,
)
SHAPE_NAMES = (
    "circle", "square", "triangle", "plus", "star", "diamond", "hexagon", "ring", "cross", "half_disc",
)
TEXTURE_NAMES = ("solid", "h_stripes", "v_stripes", "diagonal", "checkerboard", "dots", "grid", "waves",
                 "noise", "rings")
DEFAULT_SIZES = {True: 10_000, False: 2_000}
TEXTURE_LOW = 0.35  # darkest texture value (the brightest is 1)
_VERSION = 1  # bump when the generator changes, so stale caches are not reused
_CHUNK = 256


# ----------------------------------------------------------------------------- shapes (unit disk)

def _regular_polygon(n: int, radius: float, start_deg: float) -> np.ndarray:
    ang = np.deg2rad(start_deg) + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(ang), radius * np.sin(ang)], axis=1)


def _star(points: int, outer: float, inner: float) -> np.ndarray:
    ang = np.pi / 2 + np.pi * np.arange(2 * points) / points
    rad = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return np.stack([rad * np.cos(ang), rad * np.sin(ang)], axis=1)


def _in_polygon(u: np.ndarray, v: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Even-odd rule point-in-polygon test, vectorised over points."""
    inside = np.zeros(u.shape, dtype=bool)
    for (x0, y0), (x1, y1) in zip(verts, np.roll(verts, -1, axis=0)):
        if y0 == y1:
            continue
        crosses = (y0 > v) != (y1 > v)
        x_at = x0 + (v - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (u < x_at)
    return inside


_TRIANGLE = _regular_polygon(3, 1.0, 90) + np.array([0.0, -0.2])
_HEXAGON = _regular_polygon(6, 0.85, 0)
_STAR = _star(5, 1.0, 0.42)


def _plus(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    au, av = np.abs(u), np.abs(v)
    return ((au <= 0.25) & (av <= 0.9)) | ((av <= 0.25) & (au <= 0.9))


_SHAPES = (
    lambda u, v: u * u + v * v <= 0.8 ** 2,                                  # circle
    lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.68,                    # square
    lambda u, v: _in_polygon(u, v, _TRIANGLE),                                # triangle
    _plus,                                                                    # plus
    lambda u, v: _in_polygon(u, v, _STAR),                                    # star
    lambda u, v: np.abs(u) + np.abs(v) <= 0.92,                               # diamond
    lambda u, v: _in_polygon(u, v, _HEXAGON),                                 # hexagon
    lambda u, v: (u * u + v * v <= 0.92 ** 2) & (u * u + v * v >= 0.5 ** 2),  # ring
    lambda u, v: _plus((u - v) / np.sqrt(2), (u + v) / np.sqrt(2)),           # cross (X)
    lambda u, v: (u * u + (v + 0.4) ** 2 <= 0.95 ** 2) & (v >= -0.4),         # half disc
)


# ----------------------------------------------------------------------------- textures (pixel grid)

@functools.lru_cache(maxsize=4)
def _noise_pattern(size: int) -> np.ndarray:
    """Fixed binary noise (2x2-pixel blocks at 32 px), the same for every sample up to a shift."""
    blocks = np.random.default_rng(12345).random((size, size)) < 0.5
    return np.kron(blocks, np.ones((2, 2), dtype=bool))[:size, :size]


def _texture(tex: int, px: np.ndarray, py: np.ndarray, ox: np.ndarray, oy: np.ndarray,
             cx: np.ndarray, cy: np.ndarray, q: float) -> np.ndarray:
    """Texture values in [TEXTURE_LOW, 1], shape [B, S, S]; ``px, py`` pattern-pixel coordinates."""
    x, y = px + ox, py + oy  # [B, S, S] (integers, shifted by the per-sample phase)
    if tex == 0:
        on = np.ones(np.broadcast_shapes(x.shape, y.shape), dtype=bool)
    elif tex == 1:
        on = (y // 2) % 2 == 0
    elif tex == 2:
        on = (x // 2) % 2 == 0
    elif tex == 3:
        on = ((x + y) // 3) % 2 == 0
    elif tex == 4:
        on = (x // 3 + y // 3) % 2 == 0
    elif tex == 5:
        on = (x % 4 >= 2) & (y % 4 >= 2)
    elif tex == 6:
        on = (x % 5 != 0) & (y % 5 != 0)
    elif tex == 7:
        val = 0.5 + 0.5 * np.sin(2 * np.pi * (y + 1.5 * np.sin(2 * np.pi * x / 8)) / 5)
        return TEXTURE_LOW + (1 - TEXTURE_LOW) * val
    elif tex == 8:
        pat = _noise_pattern(int(px.max()) + 8)
        on = pat[(y % pat.shape[0]), (x % pat.shape[1])]
    else:
        r = np.hypot(px + 0.5 - cx / q, py + 0.5 - cy / q)
        on = (r // 2) % 2 == 0
    return np.where(on, 1.0, TEXTURE_LOW)


# ----------------------------------------------------------------------------- generator

def _rng(seed: int, train: bool) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(0 if train else 1,)))


def generate_trifeature(
    num_samples: int, image_size: int = 32, seed: int = 0, train: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate ``(images uint8 [N,S,S,3], attributes int64 [N,3], masks bool [N,S,S])``.

    Attribute columns are :data:`ATTRIBUTES` (color, shape, texture); masks mark the shape's pixels.
    """
    n, size = int(num_samples), int(image_size)
    if n < 1 or size < 8:
        raise ValueError(f"need num_samples >= 1 and image_size >= 8, got {num_samples}, {image_size}")
    rng = _rng(seed, train)
    combos = np.concatenate([rng.permutation(1000) for _ in range(-(-n // 1000))])[:n]
    attrs = np.stack([combos // 100, (combos // 10) % 10, combos % 10], axis=1).astype(np.int64)
    # per-sample geometry and texture phase, drawn up-front so the result does not depend on chunking
    scale = rng.uniform(0.62, 0.8, n)
    angle = np.deg2rad(rng.uniform(-15.0, 15.0, n))
    shift = rng.uniform(-0.12, 0.12, (n, 2))
    phase = rng.integers(0, 16, (n, 2))

    ss = 4 if size <= 64 else 2  # supersampling for anti-aliased borders
    g = (np.arange(size * ss) + 0.5) / (size * ss) * 2 - 1
    gx, gy = g[None, None, :], -g[None, :, None]  # y points up
    q = size / 32.0  # texture patterns are defined at 32 px and scaled with the image
    pix = np.floor((np.arange(size) + 0.5) / q).astype(np.int64)
    px, py = pix[None, None, :], pix[None, :, None]
    cx_all = (shift[:, 0] + 1) / 2 * size
    cy_all = (1 - shift[:, 1]) / 2 * size

    coverage = np.empty((n, size, size), dtype=np.float32)
    texture = np.empty((n, size, size), dtype=np.float32)
    for k in range(10):
        members = np.flatnonzero(attrs[:, 1] == k)
        for idx in np.array_split(members, max(1, -(-members.size // _CHUNK))):
            if idx.size == 0:
                continue
            c, s = np.cos(angle[idx])[:, None, None], np.sin(angle[idx])[:, None, None]
            dx, dy = gx - shift[idx, 0, None, None], gy - shift[idx, 1, None, None]
            sc = scale[idx, None, None]
            u, v = (c * dx + s * dy) / sc, (-s * dx + c * dy) / sc
            m = _SHAPES[k](u, v)
            coverage[idx] = m.reshape(idx.size, size, ss, size, ss).mean(axis=(2, 4))
    for t in range(10):
        idx = np.flatnonzero(attrs[:, 2] == t)
        for part in np.array_split(idx, max(1, -(-idx.size // _CHUNK))):
            if part.size == 0:
                continue
            ox, oy = phase[part, 0, None, None], phase[part, 1, None, None]
            cx, cy = cx_all[part, None, None], cy_all[part, None, None]
            texture[part] = _texture(t, px, py, ox, oy, cx, cy, q)
    colour = COLORS[attrs[:, 0]].astype(np.float32)[:, None, None, :]
    images = np.rint(colour * (coverage * texture)[..., None]).clip(0, 255).astype(np.uint8)
    return images, attrs, coverage >= 0.5


def _cache_path(root: Path, train: bool, n: int, size: int, seed: int) -> Path:
    split = "train" if train else "test"
    return root / "trifeature" / f"trifeature-v{_VERSION}-{split}-n{n}-s{size}-seed{seed}.npz"


@functools.lru_cache(maxsize=8)
def _trifeature_arrays(root: str, train: bool, n: int, size: int, seed: int):
    path = _cache_path(Path(root), train, n, size, seed)
    if path.is_file():
        try:
            with np.load(path) as z:
                return z["images"], z["attributes"], z["masks"]
        except (OSError, ValueError, KeyError) as e:
            warnings.warn(f"ignoring unreadable Trifeature cache {path}: {e}", UserWarning, stacklevel=2)
    images, attrs, masks = generate_trifeature(n, size, seed, train)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez_compressed(f, images=images, attributes=attrs, masks=masks)
        os.replace(tmp, path)  # atomic: concurrent processes never see a partial file
    except OSError as e:
        warnings.warn(f"could not cache Trifeature to {path}: {e}", UserWarning, stacklevel=2)
    return images, attrs, masks


class TrifeatureDataset(ArrayImageDataset):
    """Trifeature images ``(PIL RGB, label)``; the label is attribute ``target`` (default shape).

    Attributes: ``attributes`` (LongTensor ``[N, 3]``, columns :data:`ATTRIBUTES` = color, shape,
    texture), ``shape_masks`` (bool ``[N, S, S]``, pixels covered by the shape), ``images``
    (uint8 ``[N, S, S, 3]``), ``targets``, ``num_classes`` (10), ``name`` ("trifeature").
    Default sizes: 10,000 train / 2,000 test.
    """

    def __init__(
        self, root: str | Path = "datasets", train: bool = True, num_samples: int | None = None,
        image_size: int = 32, seed: int = 0, target: str = "shape",
    ) -> None:
        if target not in ATTRIBUTES:
            raise ValueError(f"target must be one of {ATTRIBUTES}, got {target!r}")
        n = DEFAULT_SIZES[bool(train)] if num_samples is None else int(num_samples)
        images, attrs, masks = _trifeature_arrays(str(Path(root)), bool(train), n, int(image_size), int(seed))
        self.attributes = torch.as_tensor(attrs, dtype=torch.long)
        self.shape_masks = masks
        self.target = target
        self.seed = int(seed)
        super().__init__(images, attrs[:, ATTRIBUTES.index(target)], "trifeature", 10, int(image_size))


def trifeature_masks(
    root: str | Path = "datasets", train: bool = True, num_samples: int | None = None,
    image_size: int = 32, seed: int = 0,
) -> np.ndarray:
    """Bool ``[N, S, S]`` masks of the pixels covered by each Trifeature image's shape."""
    return TrifeatureDataset(root, train, num_samples, image_size, seed).shape_masks
