"""Run configuration: YAML files in ``method_configs/``, dotted overrides, validation.

The schema is ``DEFAULTS`` below (documented in ``docs/CONFIG_SCHEMA.md``). Unknown keys and bad
values raise :class:`ConfigError` naming the key. ``trainer`` and ``method_kwargs`` are open
dicts: their keys are checked by Lightning's ``Trainer`` and the solo-learn method themselves.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

METHODS = ("simclr", "mocov2plus", "byol", "dino", "simsiam", "vicreg", "barlow_twins", "swav", "nnclr")
OPEN_SECTIONS = ("trainer", "method_kwargs")

DEFAULTS: dict[str, Any] = {
    "method": "simclr",
    "name": None,
    "seed": 5,
    "output_dir": "runs/default",
    "backbone": {"name": "resnet18", "cifar": True, "zero_init_residual": False},
    "method_kwargs": {},
    "optimizer": {
        "name": "sgd", "lars": False, "lr": 0.3, "classifier_lr": 0.1, "weight_decay": 1e-4,
        "eta_lars": 1e-3, "grad_clip_lars": False, "exclude_bias_n_norm": False, "extra_args": {},
    },
    "scheduler": {"name": "warmup_cosine", "warmup_epochs": 10, "warmup_start_lr": 0.003, "min_lr": 0.0,
                  "lr_decay_steps": None},
    "data": {
        "dataset": "cifar10", "root": "datasets", "fallback": "fashion_mnist", "image_size": 32,
        "batch_size": 256, "num_workers": 4, "train_subset": None, "val_subset": None,
        "num_large_crops": 2, "num_small_crops": 0,
    },
    "augmentations": [],
    "trainer": {"max_epochs": 1000, "precision": 32, "accelerator": "auto", "devices": 1},
    "qscore": {"enabled": False, "eps": 4.0, "band": [50.0, 95.0], "lambda1": 1e-4, "lambda2": 1e-4,
               "statistics": "train_step"},
    "ifm": {"enabled": False, "epsilon": 0.1, "alpha": 1.0},
    "hard_negatives": {"enabled": False, "beta": 1.0, "tau_plus": 0.1},
    "lasso": {"enabled": False, "weight": 1e-4},
    "probe": {"every_n_epochs": 0, "max_iter": 100, "weight_decay": 1e-4},
    "wandb": {"enabled": True, "project": "solo-qscore", "entity": None, "offline": True},
}


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names the key."""


def _merge(base: dict, update: dict, prefix: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        path = f"{prefix}{key}"
        if key not in base:
            allowed = ", ".join(sorted(base))
            raise ConfigError(f"unknown config key '{path}' (allowed here: {allowed})")
        if isinstance(base[key], dict) and key not in OPEN_SECTIONS and not (
            prefix == "optimizer." and key == "extra_args"
        ):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{path}' must be a mapping, got {value!r}")
            out[key] = _merge(base[key], value, f"{path}.")
        elif key in OPEN_SECTIONS and not prefix:
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{path}' must be a mapping, got {value!r}")
            out[key] = {**base[key], **value} if key == "trainer" else dict(value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"ifm.epsilon=0.2"`` -> ``(["ifm", "epsilon"], 0.2)``; values are parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.sub=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{text}': cannot parse value: {err}") from err
    return key.split("."), value


def _nest(path: list[str], value: Any) -> dict:
    out: Any = value
    for part in reversed(path):
        out = {part: out}
    return out


def _deep_update(target: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value


def load_config(
    path: str | Path | dict | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> dict:
    """Load a YAML config (or take a config dict), apply ``key.sub=value`` overrides, validate."""
    raw: dict = {}
    if isinstance(path, dict):
        raw = copy.deepcopy(path)
    elif path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file '{path}' does not exist")
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"config file '{path}' must hold a mapping at the top level")
    for text in overrides:
        keys, value = parse_override(text)
        _deep_update(raw, _nest(keys, value))
    cfg = _merge(DEFAULTS, raw)
    validate(cfg)
    if cfg["name"] is None:
        cfg["name"] = f"{cfg['method']}-{cfg['data']['dataset']}"
    return cfg


def _positive(cfg: dict, dotted: str, kind: type = float, allow_zero: bool = False) -> None:
    section, key = dotted.split(".")
    value = cfg[section][key]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value > 0 or allow_zero and value == 0)
    if kind is int and ok:
        ok = float(value).is_integer()
    if not ok:
        need = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"config key '{dotted}' must be a number {need}, got {value!r}")


def validate(cfg: dict) -> None:
    """Check values whose errors would otherwise surface deep inside training."""
    if cfg["method"] not in METHODS:
        raise ConfigError(f"config key 'method': unknown method {cfg['method']!r}; choose one of {', '.join(METHODS)}")
    _positive(cfg, "data.batch_size", int)
    _positive(cfg, "data.num_workers", int, allow_zero=True)
    _positive(cfg, "data.image_size", int)
    _positive(cfg, "optimizer.lr")
    _positive(cfg, "qscore.lambda1", allow_zero=True)
    _positive(cfg, "qscore.lambda2", allow_zero=True)
    _positive(cfg, "qscore.eps", allow_zero=True)
    _positive(cfg, "ifm.epsilon", allow_zero=True)
    _positive(cfg, "ifm.alpha", allow_zero=True)
    _positive(cfg, "lasso.weight", allow_zero=True)
    _positive(cfg, "hard_negatives.beta", allow_zero=True)
    tau_plus = cfg["hard_negatives"]["tau_plus"]
    if not (isinstance(tau_plus, (int, float)) and not isinstance(tau_plus, bool) and 0 <= tau_plus < 1):
        raise ConfigError(f"config key 'hard_negatives.tau_plus' must be a number in [0, 1), got {tau_plus!r}")
    band = cfg["qscore"]["band"]
    if not (isinstance(band, (list, tuple)) and len(band) == 2 and 0 <= band[0] < band[1] <= 100):
        raise ConfigError(f"config key 'qscore.band' must be [low, high] with 0 <= low < high <= 100, got {band!r}")
    if cfg["qscore"]["statistics"] not in ("train_step", "dataloader"):
        raise ConfigError("config key 'qscore.statistics' must be 'train_step' or 'dataloader'")
    for section in ("qscore", "ifm", "hard_negatives", "lasso", "wandb"):
        if not isinstance(cfg[section]["enabled"], bool):
            raise ConfigError(f"config key '{section}.enabled' must be true or false")
    if cfg["ifm"]["enabled"]:
        from solo_qscore.ifm import IFM_METHODS

        if cfg["method"] not in IFM_METHODS:
            raise ConfigError(
                f"IFM applies to InfoNCE methods only ({', '.join(IFM_METHODS)}); "
                f"method '{cfg['method']}' is not one of them (config key 'ifm.enabled')"
            )
    if cfg["hard_negatives"]["enabled"]:
        _check_hard_negatives(cfg)
    crops = sum(int(a.get("num_crops", 1)) for a in cfg["augmentations"])
    want = cfg["data"]["num_large_crops"] + cfg["data"]["num_small_crops"]
    if cfg["augmentations"] and crops != want:
        raise ConfigError(
            f"config key 'augmentations' makes {crops} crops but data.num_large_crops + num_small_crops = {want}"
        )


def _check_hard_negatives(cfg: dict) -> None:
    """Hard negative sampling replaces SimCLR's InfoNCE: SimCLR only, unsupervised, and not with IFM."""
    if cfg["method"] != "simclr":
        raise ConfigError(
            f"hard negative sampling is a SimCLR loss; method '{cfg['method']}' is not simclr "
            "(config key 'hard_negatives.enabled')"
        )
    if cfg["ifm"]["enabled"]:
        raise ConfigError(
            "config keys 'hard_negatives.enabled' and 'ifm.enabled' cannot both be true: each replaces "
            "SimCLR's loss with its own (compare them as separate runs)"
        )
    if cfg["method_kwargs"].get("supervised"):
        raise ConfigError(
            "config key 'hard_negatives.enabled' is not defined for supervised SimCLR (method_kwargs.supervised=true)"
        )
