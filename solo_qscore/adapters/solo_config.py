"""A solo-learn main run config, made ready to run: on this machine, through solo-learn's ``parse_cfg``,
its data checked, and read back as plain settings.

* :func:`adapt_to_machine` runs a GPU config (solo-learn's own) on a CPU-only machine.
* :func:`prepare_config` is solo-learn's ``parse_cfg`` for a composed config, with our datasets and
  solo-learn's image folders checked first (one ``ConfigError`` line, not a failure deep inside).
* :func:`eval_data_config` and :func:`run_view` are what :mod:`solo_qscore.data`'s loaders, the probe and
  the analysis commands read of a run: plain dicts, no solo-learn types.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from solo_qscore.adapters.solo_backbone import uses_cifar_stem
from solo_qscore.config import (
    OFFLINE_DATASETS,
    ConfigError,
    check_method_options,
    to_container,
    with_plugin_defaults,
)

SOLO_DATASETS = ("cifar10", "cifar100", "stl10", "imagenet", "imagenet100", "custom")
FOLDER_DATASETS = ("custom", "imagenet", "imagenet100")  # solo_qscore.data.FOLDER_DATASETS: read from folders
_SOLO_DATA_MARKERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python", "stl10": "stl10_binary"}


def solo_version() -> str:
    import solo

    return getattr(solo, "__version__", "unknown")

def _cpu_supports_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def adapt_to_machine(cfg: DictConfig) -> list[str]:
    """Run a GPU config on a machine without one: CPU, one device, bf16 where the CPU has it.

    solo-learn's configs ask for ``accelerator: gpu``, ``devices: [0]``, ``strategy: ddp`` and
    ``precision: 16-mixed``; on a CPU-only machine these become ``cpu``, ``1``, ``auto`` and
    ``bf16-mixed`` (AMX/AVX512-BF16 CPUs; float32 otherwise). Returns what was changed.
    """
    changes: list[str] = []
    accelerator = str(cfg.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        cfg.accelerator = "cpu"
        changes.append(f"accelerator {accelerator} -> cpu (no GPU here)")
    if str(cfg.get("accelerator")) == "cpu":
        devices = cfg.get("devices", 1)
        if not isinstance(devices, int) or isinstance(devices, bool):
            cfg.devices = 1
            shown = OmegaConf.to_container(devices) if OmegaConf.is_config(devices) else devices
            changes.append(f"devices {shown} -> 1")
        if cfg.get("strategy") == "ddp" and cfg.devices == 1 and int(cfg.get("num_nodes", 1) or 1) == 1:
            cfg.strategy = "auto"
            changes.append("strategy ddp -> auto (one process)")
        if cfg.get("sync_batchnorm") and cfg.devices == 1:
            cfg.sync_batchnorm = False
        precision = str(cfg.get("precision", "32-true"))
        if precision in ("16", "16-mixed"):
            cfg.precision = "bf16-mixed" if _cpu_supports_bf16() else "32-true"
            changes.append(f"precision {precision} -> {cfg.precision} (CPU)")
    return changes


def eval_data_config(cfg: DictConfig, batch_size: Optional[int] = None) -> dict[str, Any]:
    """The settings of :mod:`solo_qscore.data`'s loaders for this run (no augmentation).

    solo-learn's image folders (``custom``, ``imagenet``, ``imagenet100``) add their validation folder
    (``val_root``: ``data.val_path``; none: a held-out part of the training folder), ``no_labels`` and
    ``format`` (``dali`` data is an image folder too, read here as solo-learn's own validation loader
    reads it).
    """
    data = cfg.data
    settings = {
        "dataset": str(data.dataset), "root": str(data.get("train_path") or "datasets"),
        "fallback": data.get("fallback"), "image_size": int(cfg.augmentations[0].crop_size),
        "batch_size": int(batch_size or cfg.probe.get("batch_size", 256)),
        "num_workers": int(data.get("num_workers", 0) or 0),
        "train_subset": data.get("train_subset"), "val_subset": data.get("val_subset"),
        "bad_images": str(data.get("bad_images") or "error"),
    }
    if str(data.dataset) in FOLDER_DATASETS:
        settings.update(val_root=None if data.get("val_path") is None else str(data.val_path),
                        no_labels=bool(data.get("no_labels", False)), format=data_format(cfg))
    return settings


def data_format(cfg: DictConfig) -> str:
    return str(cfg.data.get("format") or "image_folder")


def _check_image_folders(cfg: DictConfig) -> None:
    """solo-learn's image-folder datasets, checked before solo-learn reads them (it fails deep inside,
    or not at all: a flat folder trains as one class). A flat ``custom`` folder is unlabelled
    (``data.no_labels`` set, as solo-learn needs for it)."""
    from solo_qscore.data.datasets import class_folders

    data, dataset = cfg.data, str(cfg.data.dataset)
    if dataset not in FOLDER_DATASETS:
        return
    if data_format(cfg) == "h5":
        if cfg.probe.enabled or cfg.qscore.statistics == "dataloader":
            check_eval_format(cfg)  # refused now, not after the model is built
        return
    root = Path(str(data.get("train_path") or ""))
    shape = "one sub-folder of images per class, or images directly in it with data.no_labels=true"
    if not data.get("train_path") or not root.is_dir():
        raise ConfigError(f"config key 'data.train_path': {root} is not a folder (data.dataset={dataset} reads "
                          f"an image folder: {shape})")
    if data.get("val_path") is not None and not Path(str(data.val_path)).is_dir():
        raise ConfigError(f"config key 'data.val_path': {data.val_path} is not a folder (one sub-folder of images "
                          "per class, as data.train_path); data.val_path=null holds out a part of data.train_path "
                          "for the probe")
    classes = class_folders(root)
    if dataset != "custom" and not classes:
        raise ConfigError(f"config key 'data.train_path': {root} has no class sub-folders, which "
                          f"data.dataset={dataset} needs; for unlabelled images use data.dataset=custom")
    if not classes:
        data.no_labels = True  # solo-learn reads a flat folder only as unlabelled images
    elif data.get("no_labels") and not _has_image_files(root):
        raise ConfigError(f"config key 'data.no_labels': true reads the images directly in {root}, but it holds "
                          f"only sub-folders ({', '.join(classes[:5])}); drop data.no_labels to use them as classes")


def _has_image_files(folder: Path) -> bool:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    with os.scandir(folder) as entries:
        return any(e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS) for e in entries)


def solo_data_present(cfg: DictConfig) -> bool:
    dataset, root = str(cfg.data.dataset), Path(str(cfg.data.train_path or "datasets"))
    if dataset in _SOLO_DATA_MARKERS:
        return (root / _SOLO_DATA_MARKERS[dataset]).is_dir()
    return dataset in SOLO_DATASETS and root.is_dir()


def prepare_config(cfg: DictConfig) -> DictConfig:
    """solo-learn's ``parse_cfg`` (defaults, crops, lr scaling) for a composed run config.

    Datasets solo-learn does not know (our offline ones, or CIFAR's offline stand-in) get their
    class count from :mod:`solo_qscore.data`. Call once per run: it scales the learning rate.
    """
    from solo.args.pretrain import parse_cfg

    cfg = with_plugin_defaults(cfg)
    check_method_options(cfg)
    dataset = str(cfg.data.dataset)
    if dataset not in SOLO_DATASETS and dataset not in OFFLINE_DATASETS:
        raise ConfigError(f"config key 'data.dataset': unknown dataset {dataset!r}; choose one of "
                          f"{', '.join(SOLO_DATASETS + OFFLINE_DATASETS)}")
    _check_image_folders(cfg)
    devices = cfg.get("devices", 1)
    if isinstance(devices, int):  # solo scales the lr by len(devices)
        cfg.devices = [0] * devices
    if dataset in OFFLINE_DATASETS:
        cfg.data.dataset = "cifar10"  # solo's own checks know only its datasets; restored below
    try:
        cfg = parse_cfg(cfg)
    except AssertionError as err:
        reason = err or "an assertion in solo.args.pretrain failed"
        raise ConfigError(f"solo-learn rejected the config: {reason}") from err
    finally:
        cfg.data.dataset = dataset
    if isinstance(devices, int):
        cfg.devices = devices
    if dataset in OFFLINE_DATASETS or not solo_data_present(cfg):
        from solo_qscore.data import num_classes_of

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfg.data.num_classes = num_classes_of(eval_data_config(cfg))
    return cfg


def bad_images_policy(cfg: DictConfig) -> str:
    from solo_qscore.data import BAD_IMAGE_POLICIES

    policy = str(cfg.data.get("bad_images") or "error")
    if policy not in BAD_IMAGE_POLICIES:
        raise ConfigError(f"config key 'data.bad_images' must be one of {', '.join(BAD_IMAGE_POLICIES)}, "
                          f"got {policy!r}")
    return policy


def check_eval_format(cfg: DictConfig) -> None:
    """Our evaluation loaders read image folders (``dali`` data is one); solo-learn's h5 files they do not."""
    if str(cfg.data.dataset) in FOLDER_DATASETS and data_format(cfg) == "h5":
        raise ConfigError("config key 'data.format': h5 files are read by solo-learn's own loaders only, not by "
                          "the probe's or qscore.statistics=dataloader's; use the image folders "
                          "(data.format=image_folder), or set probe.enabled=false to train with the statistics "
                          "of the training steps")


def _flat_augmentation(aug: DictConfig) -> dict[str, Any]:
    """solo-learn main's nested augmentation entry in :mod:`solo_qscore.data.transforms`' flat form."""
    get = lambda dotted, default: OmegaConf.select(aug, dotted, default=default)  # noqa: E731
    return {
        "num_crops": int(aug.num_crops), "crop_size": int(aug.crop_size),
        "min_scale": float(get("rrc.crop_min_scale", 0.08)), "max_scale": float(get("rrc.crop_max_scale", 1.0)),
        "brightness": float(get("color_jitter.brightness", 0.4)), "contrast": float(get("color_jitter.contrast", 0.4)),
        "saturation": float(get("color_jitter.saturation", 0.2)), "hue": float(get("color_jitter.hue", 0.1)),
        "color_jitter_prob": float(get("color_jitter.prob", 0.8)), "gray_scale_prob": float(get("grayscale.prob", 0.2)),
        "gaussian_prob": float(get("gaussian_blur.prob", 0.0)),
        "solarization_prob": float(get("solarization.prob", 0.0)),
        "horizontal_flip_prob": float(get("horizontal_flip.prob", 0.5)),
    }


def run_view(cfg: DictConfig) -> dict[str, Any]:
    """What the probe and the analysis commands need of a run, as plain dicts (no solo-learn types).

    ``data`` holds :mod:`solo_qscore.data`'s loader settings, ``augmentations`` the flat crop
    pipelines, and the plugin sections are copied as they are.
    """
    cfg = with_plugin_defaults(cfg)
    plain = to_container(cfg)
    dataset = str(cfg.data.dataset)
    cifar_stem = uses_cifar_stem(dataset, str(cfg.backbone.name), cfg.augmentations[0].crop_size)
    view = {k: plain.get(k) for k in ("method", "name", "seed", "output_dir", "method_kwargs", "qscore", "ifm",
                                       "lasso", "hard_negatives", "probe")}
    view["data"] = {**eval_data_config(cfg), "num_large_crops": plain["data"].get("num_large_crops"),
                    "num_small_crops": plain["data"].get("num_small_crops"),
                    "dataset_used": plain["data"].get("dataset_used")}
    view["augmentations"] = [_flat_augmentation(a) for a in cfg.augmentations]
    view["backbone"] = {"name": str(cfg.backbone.name), "cifar": cifar_stem}
    return view


def run_environment() -> dict[str, str]:
    """Versions recorded with a run."""
    import lightning

    return {"solo_learn": solo_version(), "lightning": lightning.__version__, "torch": torch.__version__,
            "pid": str(os.getpid())}
