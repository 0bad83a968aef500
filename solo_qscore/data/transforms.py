"""solo-learn-style augmentation pipelines built from the ``augmentations:`` config list.

Each entry of the list describes one crop pipeline and is repeated ``num_crops`` times
(symmetric methods: one entry with ``num_crops: 2``; asymmetric ones such as BYOL: two
entries with ``num_crops: 1``). The order of the operations is solo-learn 1.0.2's:
RandomResizedCrop (bicubic) -> ColorJitter (p) -> Grayscale (p) -> GaussianBlur (p) ->
Solarize (p) -> HorizontalFlip (p) -> ToTensor -> Normalize. All randomness uses torch's RNG,
so DataLoader worker seeding makes the crops reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from PIL import Image, ImageFilter
from torchvision import transforms as T

__all__ = [
    "AUGMENTATION_DEFAULTS",
    "NCropAugmentation",
    "RandomGaussianBlur",
    "build_crop_pipelines",
    "dataset_stats",
    "eval_transform",
    "validate_augmentation",
]

#: Allowed keys of one ``augmentations:`` entry and their defaults (the CIFAR values of solo-learn).
AUGMENTATION_DEFAULTS: dict[str, float | int] = {
    "num_crops": 2,
    "crop_size": 32,
    "min_scale": 0.08,
    "max_scale": 1.0,
    "brightness": 0.4,
    "contrast": 0.4,
    "saturation": 0.2,
    "hue": 0.1,
    "color_jitter_prob": 0.8,
    "gray_scale_prob": 0.2,
    "gaussian_prob": 0.0,
    "solarization_prob": 0.0,
    "horizontal_flip_prob": 0.5,
}
_PROBS = (
    "color_jitter_prob", "gray_scale_prob", "gaussian_prob", "solarization_prob", "horizontal_flip_prob",
)

CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))  # solo-learn's values (CIFAR-10 and -100)
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_STATS = {
    # measured on the raw 28x28 train images (grey, so the 3 channels are equal)
    "fashion_mnist": ((0.2860,) * 3, (0.3530,) * 3),
    "mnist": ((0.1307,) * 3, (0.3081,) * 3),
    # measured on the default 10,000 train images (32 px, seed 0); mostly black background
    "trifeature": ((0.0888, 0.0820, 0.0734), (0.2222, 0.2054, 0.2016)),
}


def dataset_stats(name: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel ``(mean, std)`` for normalising ``name``.

    CIFAR statistics (solo-learn's) for ``cifar*``; measured constants for ``fashion_mnist``,
    ``mnist`` and ``trifeature``; ImageNet statistics for everything else (``stl10``, ``imagefolder``).
    """
    key = name.lower()
    if key.startswith("cifar"):
        return CIFAR_STATS
    return _STATS.get(key, IMAGENET_STATS)


class RandomGaussianBlur:
    """PIL Gaussian blur with radius drawn uniformly from ``sigma`` (torch RNG), as in solo-learn/SimCLR."""

    def __init__(self, sigma: Sequence[float] = (0.1, 2.0)) -> None:
        self.sigma = (float(sigma[0]), float(sigma[1]))

    def __call__(self, img: Image.Image) -> Image.Image:
        lo, hi = self.sigma
        radius = lo + (hi - lo) * float(torch.rand(()))
        return img.filter(ImageFilter.GaussianBlur(radius=radius))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma})"


def validate_augmentation(cfg: Mapping[str, object]) -> dict[str, float | int]:
    """``cfg`` completed with :data:`AUGMENTATION_DEFAULTS`; ``ValueError`` on unknown keys or bad values."""
    if not isinstance(cfg, Mapping):
        raise ValueError(f"an augmentation entry must be a mapping, got {type(cfg).__name__}")
    unknown = sorted(set(cfg) - set(AUGMENTATION_DEFAULTS))
    if unknown:
        raise ValueError(
            f"unknown augmentation key(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(AUGMENTATION_DEFAULTS)}"
        )
    out = {**AUGMENTATION_DEFAULTS, **cfg}
    for key in ("num_crops", "crop_size"):
        if isinstance(out[key], bool) or not isinstance(out[key], int) or out[key] < 1:
            raise ValueError(f"augmentation {key} must be a positive integer, got {out[key]!r}")
    for key in _PROBS:
        if not 0.0 <= float(out[key]) <= 1.0:
            raise ValueError(f"augmentation {key} must be a probability in [0, 1], got {out[key]!r}")
    if not 0.0 < float(out["min_scale"]) <= float(out["max_scale"]) <= 1.0:
        raise ValueError(
            "augmentation scales need 0 < min_scale <= max_scale <= 1, "
            f"got {out['min_scale']}, {out['max_scale']}"
        )
    for key in ("brightness", "contrast", "saturation"):
        if float(out[key]) < 0:
            raise ValueError(f"augmentation {key} must be >= 0, got {out[key]!r}")
    if not 0.0 <= float(out["hue"]) <= 0.5:
        raise ValueError(f"augmentation hue must be in [0, 0.5], got {out['hue']!r}")
    return out


def _pipeline(cfg: Mapping[str, float | int], mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    size = int(cfg["crop_size"])
    return T.Compose([
        T.RandomResizedCrop((size, size), scale=(float(cfg["min_scale"]), float(cfg["max_scale"])),
                            interpolation=T.InterpolationMode.BICUBIC),
        T.RandomApply([T.ColorJitter(cfg["brightness"], cfg["contrast"], cfg["saturation"], cfg["hue"])],
                      p=float(cfg["color_jitter_prob"])),
        T.RandomGrayscale(p=float(cfg["gray_scale_prob"])),
        T.RandomApply([RandomGaussianBlur()], p=float(cfg["gaussian_prob"])),
        T.RandomSolarize(threshold=128, p=float(cfg["solarization_prob"])),
        T.RandomHorizontalFlip(p=float(cfg["horizontal_flip_prob"])),
        T.ToTensor(),
        T.Normalize(tuple(mean), tuple(std)),
    ])


def build_crop_pipelines(
    aug_cfgs: Sequence[Mapping[str, object]], mean: Sequence[float], std: Sequence[float],
) -> list[Callable[[Image.Image], torch.Tensor]]:
    """One transform per crop: each ``augmentations:`` entry built once and repeated ``num_crops`` times."""
    if isinstance(aug_cfgs, Mapping) or not aug_cfgs:
        raise ValueError("augmentations must be a non-empty list of crop-pipeline entries")
    pipelines: list[Callable[[Image.Image], torch.Tensor]] = []
    for i, raw in enumerate(aug_cfgs):
        try:
            cfg = validate_augmentation(raw)
        except ValueError as e:
            raise ValueError(f"augmentations[{i}]: {e}") from None
        pipelines.extend([_pipeline(cfg, mean, std)] * int(cfg["num_crops"]))
    return pipelines


class NCropAugmentation:
    """Apply each pipeline to the same image: one tensor per crop (solo-learn's FullTransformPipeline)."""

    def __init__(self, pipelines: Sequence[Callable[[Image.Image], torch.Tensor]]) -> None:
        if not pipelines:
            raise ValueError("NCropAugmentation needs at least one pipeline")
        self.pipelines = list(pipelines)

    @property
    def num_crops(self) -> int:
        return len(self.pipelines)

    def __call__(self, img: Image.Image) -> list[torch.Tensor]:
        return [p(img) for p in self.pipelines]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.num_crops} crops)\n" + "\n".join(map(repr, self.pipelines))


def eval_transform(
    image_size: int, mean: Sequence[float], std: Sequence[float],
) -> Callable[[Image.Image], torch.Tensor]:
    """Deterministic evaluation transform: Resize to ``image_size`` square, ToTensor, Normalize."""
    return T.Compose([
        T.Resize((int(image_size), int(image_size)), interpolation=T.InterpolationMode.BICUBIC),
        T.ToTensor(),
        T.Normalize(tuple(mean), tuple(std)),
    ])
