r"""STL-digits-style data (IFM paper §2.2 and App. C.2.1): an MNIST digit repeated on a 3x3 grid over a background.

The paper's construction ("STL10-digits"): split the STL-10 image (96x96) into a 3x3 grid and
place a copy of the *same* MNIST digit in the centre of each of the 9 sectors, by masking all
MNIST pixels with intensity lower than 100 and replacing the non-masked background pixels by the
MNIST pixel value. So, with background :math:`B`, digit :math:`M` and cell offsets :math:`o_k`,

.. math::

    X[o_k + p] = \begin{cases} M[p] & M[p] \ge 100 \\ B[o_k + p] & \text{otherwise} \end{cases}
    \quad (\text{grey value on all 3 channels}),

and the sample has two labels: the digit class and the background class.

Choices made here (the paper gives no more detail):

* Size: the composite is always built at (at least) the paper's 96x96: backgrounds resized
  (bilinear, antialiased) to 96, 32x32 cells, the 28x28 digit unresized at offset 2 inside each
  cell, so ``image_size=96`` is the paper's construction exactly. A smaller ``image_size`` (e.g.
  32, this project's default) shrinks the finished composite (bilinear, antialiased), as a
  network fed STL-digits at 32 px would see it; ``digit_masks`` then marks the pixels at least
  half covered by pasted digit pixels. (A larger size builds the composite at that size with the
  digit scaled to ``round(28/32 · S/3)`` px: :func:`compose_digits_grid` handles any size.)
* Backgrounds: STL-10's labelled split (the paper's), else CIFAR-10, when their files are under
  ``root`` or torchvision can download them (:mod:`solo_qscore.data.datasets` loads them);
  otherwise Fashion-MNIST (grey, the offline default). Any source other than STL-10 is announced
  with a ``UserWarning``; the source is the attribute ``background_source``.
* Pairing: sample ``i`` takes digit ``digit_indices[i]`` of MNIST and background
  ``background_indices[i]`` of the background set, each a seeded random permutation (repeated
  when more samples are asked for than the source has), drawn independently, so the two labels
  are independent. Train uses the train splits, test the test splits.
* Default sizes 10,000 train / 2,000 test; the label served is ``target`` (default ``digit``).
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .datasets import ArrayImageDataset, DatasetUnavailableError, load_fashion_mnist, load_mnist, torchvision_arrays

__all__ = [
    "BACKGROUND_SOURCES",
    "DIGITS_GRID_ATTRIBUTES",
    "DigitsGridDataset",
    "compose_digits_grid",
    "digit_cell_boxes",
    "resize_images",
]

DIGITS_GRID_ATTRIBUTES = ("digit", "background")
#: Background sources in the order ``background="auto"`` tries them (STL-10 is the paper's).
BACKGROUND_SOURCES = ("stl10", "cifar10", "fashion_mnist")
DIGIT_THRESHOLD = 100  # MNIST pixels below this intensity are masked (paper App. C.2.1)
DEFAULT_SIZES = {True: 10_000, False: 2_000}
PAPER_SIZE = 96  # STL-10's side: 3 cells of 32 px, each holding a 28 px digit
_CHUNK = 1024  # images resized per step (bounds the float32 working memory)


def digit_cell_boxes(image_size: int, grid: int = 3) -> tuple[int, list[tuple[int, int]]]:
    """Digit side ``d`` and the top-left ``(row, col)`` of the digit in each of the ``grid x grid`` cells.

    ``d = round(28/32 · S/grid)`` (28 at ``S = 96``, the paper's case) and the digit is centred in
    its sector: ``offset_k = round((k + 1/2)·S/grid − d/2)``. Cells are listed row by row.
    """
    size, grid = int(image_size), int(grid)
    if grid < 1:
        raise ValueError(f"grid must be a positive integer, got {grid}")
    if size < 3 * grid:
        raise ValueError(f"image_size must be at least 3 pixels per cell ({3 * grid}), got {size}")
    d = max(1, round(28 / 32 * size / grid))
    offsets = [round((k + 0.5) * size / grid - d / 2) for k in range(grid)]
    return d, [(r, c) for r in offsets for c in offsets]


def resize_images(images: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[N, H, W]`` or ``[N, H, W, 3]`` -> uint8 RGB ``[N, size, size, 3]`` (bilinear, antialiased)."""
    x = torch.as_tensor(np.asarray(images))
    if x.dtype != torch.uint8 or x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] != 3):
        raise ValueError(f"images must be uint8 [N,H,W] or [N,H,W,3], got {x.dtype} {tuple(x.shape)}")
    if x.ndim == 3:
        x = x.unsqueeze(-1).expand(-1, -1, -1, 3)  # grey -> RGB (equal channels)
    size = int(size)
    if tuple(x.shape[1:3]) == (size, size):
        return x.contiguous()
    out = torch.empty(x.shape[0], size, size, 3, dtype=torch.uint8)
    for start in range(0, x.shape[0], _CHUNK):
        part = x[start:start + _CHUNK].permute(0, 3, 1, 2).float()
        part = F.interpolate(part, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start:start + _CHUNK] = part.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return out


def compose_digits_grid(
    backgrounds: torch.Tensor, digits: torch.Tensor, grid: int = 3, threshold: int = DIGIT_THRESHOLD,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Paste digit ``i`` on every cell of background ``i``: ``X = M`` where ``M >= threshold``, else ``B``.

    Args:
        backgrounds: uint8 ``[N, S, S, 3]``.
        digits: uint8 ``[N, 28, 28]`` (MNIST); resized to the cell's digit side when ``S != 96``.
        grid: cells per side (the paper's 3).
        threshold: MNIST intensities below it are transparent (the paper's 100).

    Returns:
        ``(images uint8 [N, S, S, 3], digit_mask bool [N, S, S])``; the mask marks pasted pixels.
    """
    if backgrounds.dtype != torch.uint8 or backgrounds.ndim != 4 or backgrounds.shape[-1] != 3:
        raise ValueError(f"backgrounds must be uint8 [N,S,S,3], got {backgrounds.dtype} {tuple(backgrounds.shape)}")
    n, size = backgrounds.shape[0], backgrounds.shape[1]
    if backgrounds.shape[2] != size:
        raise ValueError(f"backgrounds must be square, got {tuple(backgrounds.shape)}")
    if digits.dtype != torch.uint8 or digits.ndim != 3 or digits.shape[0] != n:
        raise ValueError(f"digits must be uint8 [{n},H,W] (one per background), got {digits.dtype} "
                         f"{tuple(digits.shape)}")
    if not 0 <= int(threshold) <= 256:
        raise ValueError(f"threshold must be an intensity in [0, 256], got {threshold}")
    d, boxes = digit_cell_boxes(size, grid)
    if tuple(digits.shape[1:]) != (d, d):
        digits = resize_images(digits, d)[..., 0]  # grey: all channels equal
    layer = torch.zeros(n, size, size, dtype=torch.uint8)
    for r, c in boxes:  # 9 cells (not a loop over samples)
        layer[:, r:r + d, c:c + d] = digits
    covered = torch.zeros(n, size, size, dtype=torch.bool)
    for r, c in boxes:
        covered[:, r:r + d, c:c + d] = True
    mask = covered & (layer >= int(threshold))
    images = torch.where(mask.unsqueeze(-1), layer.unsqueeze(-1).expand(-1, -1, -1, 3), backgrounds)
    return images, mask


def _background_arrays(source: str, root: str, train: bool) -> tuple[np.ndarray, np.ndarray]:
    if source == "fashion_mnist":
        ds = load_fashion_mnist(train, 28)
        return ds.images, ds.targets.numpy()
    return torchvision_arrays(source, root, train)


def _resolve_background(background: str, root: str, train: bool) -> tuple[str, list[str], np.ndarray, np.ndarray]:
    """The first available source (``auto``: STL-10, CIFAR-10, Fashion-MNIST), why the ones before
    it were skipped, and its arrays."""
    if background != "auto":
        return background, [], *_background_arrays(background, root, train)
    reasons: list[str] = []
    errors: list[str] = []
    for source in BACKGROUND_SOURCES:
        try:
            images, labels = _background_arrays(source, root, train)
        except DatasetUnavailableError as e:
            reasons.append(f"{source} not found in {Path(root).resolve()}")
            errors.append(str(e))
            continue
        return source, reasons, images, labels
    raise DatasetUnavailableError("digits_grid: no background images available:\n" + "\n".join(errors))


def _permutation_indices(rng: np.random.Generator, n: int, population: int) -> np.ndarray:
    reps = -(-n // population)
    return np.concatenate([rng.permutation(population) for _ in range(reps)])[:n]


@functools.lru_cache(maxsize=4)
def _digits_grid_arrays(root: str, train: bool, n: int, size: int, seed: int, background: str, grid: int,
                        threshold: int):
    mnist = load_mnist(train, 28)
    source, reasons, bg_images, bg_labels = _resolve_background(background, root, train)
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(0 if train else 1,)))
    digit_idx = _permutation_indices(rng, n, len(mnist.images))
    bg_idx = _permutation_indices(rng, n, len(bg_images))
    # compose at the paper's 96 px (native 28 px digits), then shrink the composite: shrinking the
    # digit before thresholding would erase thin strokes at 32 px
    work = max(size, PAPER_SIZE * grid // 3)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    masks = np.empty((n, size, size), dtype=bool)
    bg_all, mnist_all = np.asarray(bg_images), np.asarray(mnist.images)
    for start in range(0, n, _CHUNK):
        part = slice(start, start + _CHUNK)
        backgrounds = resize_images(bg_all[bg_idx[part]], work)
        composite, mask = compose_digits_grid(backgrounds, torch.from_numpy(mnist_all[digit_idx[part]]), grid,
                                              threshold)
        images[part] = resize_images(composite, size).numpy()
        masks[part] = (mask if work == size else _shrink_mask(mask, size)).numpy()
    labels = np.stack([mnist.targets.numpy()[digit_idx], np.asarray(bg_labels, dtype=np.int64)[bg_idx]], axis=1)
    for arr in (images, masks, labels, digit_idx, bg_idx):
        arr.setflags(write=False)
    return source, tuple(reasons), images, masks, labels, digit_idx, bg_idx


def _shrink_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Pixels of the shrunk image that are at least half covered by pasted digit pixels."""
    area = F.interpolate(mask.unsqueeze(1).float(), size=(size, size), mode="area")
    return area.squeeze(1) >= 0.5


class DigitsGridDataset(ArrayImageDataset):
    """STL-digits-style images ``(PIL RGB, label)``; the label is attribute ``target`` (default digit).

    Attributes: ``attributes`` (dict ``{"digit": LongTensor[N], "background": LongTensor[N]}``),
    ``background_source`` (``"stl10"``, ``"cifar10"`` or ``"fashion_mnist"``), ``digit_masks``
    (bool ``[N, S, S]``, pasted digit pixels), ``digit_indices`` / ``background_indices`` (source
    indices of each sample), ``images`` (uint8 ``[N, S, S, 3]``), ``targets``, ``num_classes`` (10),
    ``name`` (``"digits_grid"``).

    Args:
        root: folder searched for STL-10/CIFAR-10 (torchvision layout).
        train: train or test splits of the sources.
        num_samples: default 10,000 (train) / 2,000 (test).
        image_size: side ``S``; 96 is the paper's exact construction.
        seed: pairing seed (the result is a deterministic function of all arguments).
        target: ``"digit"`` or ``"background"``.
        background: ``"auto"`` (STL-10, else CIFAR-10, else Fashion-MNIST with a warning) or one of
            :data:`BACKGROUND_SOURCES`.
        grid: cells per side (3); threshold: MNIST intensity threshold (100).
    """

    def __init__(
        self, root: str | Path = "datasets", train: bool = True, num_samples: int | None = None,
        image_size: int = 32, seed: int = 0, target: str = "digit", background: str = "auto",
        grid: int = 3, threshold: int = DIGIT_THRESHOLD,
    ) -> None:
        if target not in DIGITS_GRID_ATTRIBUTES:
            raise ValueError(f"target must be one of {DIGITS_GRID_ATTRIBUTES}, got {target!r}")
        if background != "auto" and background not in BACKGROUND_SOURCES:
            raise ValueError(f"background must be 'auto' or one of {BACKGROUND_SOURCES}, got {background!r}")
        n = DEFAULT_SIZES[bool(train)] if num_samples is None else int(num_samples)
        if n < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        digit_cell_boxes(int(image_size), int(grid))  # validates size and grid
        source, skipped, images, masks, labels, digit_idx, bg_idx = _digits_grid_arrays(
            str(Path(root)), bool(train), n, int(image_size), int(seed), background, int(grid), int(threshold))
        if background == "auto" and source != "stl10":  # warned on every construction (the arrays are cached)
            warnings.warn(
                f"digits_grid: backgrounds are {source} images, not STL-10 as in the IFM paper "
                f"({'; '.join(skipped)}); the 'background' label is the {source} class.",
                UserWarning, stacklevel=2,
            )
        self.attributes = {name: torch.tensor(labels[:, k], dtype=torch.long)
                           for k, name in enumerate(DIGITS_GRID_ATTRIBUTES)}
        self.background_source = source
        self.digit_masks = masks
        self.digit_indices = torch.tensor(digit_idx, dtype=torch.long)
        self.background_indices = torch.tensor(bg_idx, dtype=torch.long)
        self.target = target
        self.seed = int(seed)
        super().__init__(images, labels[:, DIGITS_GRID_ATTRIBUTES.index(target)], "digits_grid", 10,
                         int(image_size))
