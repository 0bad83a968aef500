"""Run configuration: solo-learn's own Hydra config files, plus typed sections for solo-qscore.

A run is one of solo-learn's pre-training configs (``--config-path DIR --config-name NAME``, its
``defaults`` list and ``augmentations/`` groups composed by Hydra) and command-line overrides
(``key.sub=value``, Hydra's grammar). solo-qscore adds the sections below, typed as OmegaConf
structured configs so that a user's file need not mention them and a wrong value fails early:

* ``qscore``: the Q-Score statistics and regulariser (Kalibhat et al., AAAI 2024, eq. 3).
* ``ifm``: implicit feature modification (Robinson et al., NeurIPS 2021, eq. 2).
* ``lasso``, ``hard_negatives``: the baselines of the two papers.
* ``probe``: the linear probe and Q-Score report run during and after training.
* ``data.train_subset`` / ``data.val_subset`` / ``data.fallback`` / ``data.bad_images`` and ``output_dir``.

Unknown keys are errors naming the key (:class:`ConfigError`); keys solo-learn reads (in each of its
sections too, :data:`SOLO_SECTION_KEYS`, also when Hydra adds them with ``+``) and the Lightning
``Trainer`` arguments are known, ``method_kwargs``, ``backbone.kwargs`` and ``optimizer.kwargs`` are
passed on unchecked, as solo-learn does (a method's temperatures are checked: ``> 0``).
"""

from __future__ import annotations

import difflib
import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names the key."""


# Methods whose contrastive term is InfoNCE: the ones IFM applies to.
IFM_METHODS = ("simclr", "mocov2plus", "nnclr", "mocov3")
IFM_VARIANTS = ("default", "norm", "pre_norm")
OFFLINE_DATASETS = ("fashion_mnist", "mnist", "trifeature", "digits_grid")


@dataclass
class QScoreConfig:
    enabled: bool = False  # add the regulariser (paper eq. 3) to the method's loss
    eps: float = 4.0  # threshold of the highly activating sets L_i
    band: list[float] = field(default_factory=lambda: [50.0, 95.0])  # percentile band of D
    lambda1: float = 1e-4
    lambda2: float = 1e-4
    statistics: str = "train_step"  # train_step (the training crops) | dataloader (a clean pass)


@dataclass
class IFMConfig:
    enabled: bool = False
    epsilon: float = 0.1
    alpha: float = 1.0
    variant: str = "default"  # default | norm (+norm) | pre_norm (+pre-norm), IFM App. B.1
    pre_norm_steps: int = 5


@dataclass
class LassoConfig:
    enabled: bool = False
    weight: float = 1e-4


@dataclass
class HardNegativesConfig:
    enabled: bool = False
    beta: float = 1.0
    tau_plus: float = 0.1


@dataclass
class ProbeConfig:
    enabled: bool = True  # the report at the end of training
    every_n_epochs: int = 0  # also every k-th epoch (0: only at the end)
    max_iter: int = 100
    weight_decay: float = 1e-4
    batch_size: int = 256
    compression: bool = True  # the compression study at the end of training (~90 probe fits; false: skipped)


@dataclass
class DataExtras:
    train_subset: Optional[int] = None  # a fixed random subset of the training set
    val_subset: Optional[int] = None
    fallback: Optional[str] = "fashion_mnist"  # offline stand-in when the dataset is not on disk
    bad_images: str = "error"  # an unreadable image file: error (stop, naming it) | skip (and list it)


@dataclass
class PluginSections:
    qscore: QScoreConfig = field(default_factory=QScoreConfig)
    ifm: IFMConfig = field(default_factory=IFMConfig)
    lasso: LassoConfig = field(default_factory=LassoConfig)
    hard_negatives: HardNegativesConfig = field(default_factory=HardNegativesConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)


PLUGIN_SECTIONS = ("qscore", "ifm", "lasso", "hard_negatives", "probe")
DATA_EXTRAS = ("train_subset", "val_subset", "fallback", "bad_images")

# Keys solo-learn main reads (solo.args.pretrain, solo.methods.base and its methods, main_pretrain.py).
SOLO_KEYS = {
    "name", "method", "backbone", "method_kwargs", "momentum", "data", "optimizer", "scheduler",
    "checkpoint", "auto_resume", "auto_umap", "knn_eval", "performance", "augmentations", "wandb",
    "dali", "seed", "resume_from_checkpoint", "debug_augmentations", "num_nodes", "hydra",
}
OUR_TOP_KEYS = {*PLUGIN_SECTIONS, "output_dir"}
SOLO_DATA_KEYS = {"dataset", "train_path", "val_path", "format", "num_workers", "no_labels", "fraction",
                  "num_classes", "num_large_crops", "num_small_crops", "dataset_used"}
# The keys solo-learn main reads in each of its sections (so that `+optimizer.lrr=0.1`, which Hydra adds
# without a word, is an error): solo.args.pretrain.parse_cfg, BaseMethod/BaseMomentumMethod
# .add_and_assert_specific_cfg, Checkpointer, AutoResumer, AutoUMAP, the DALI data module and
# main_pretrain.py. ``method_kwargs`` (each method reads its own), ``backbone.kwargs``,
# ``optimizer.kwargs`` and ``hydra`` are passed on unchecked, as solo-learn does.
SOLO_SECTION_KEYS = {
    "backbone": {"name", "kwargs"},
    "optimizer": {"name", "batch_size", "lr", "classifier_lr", "weight_decay", "kwargs", "exclude_bias_n_norm_wd"},
    "scheduler": {"name", "lr_decay_steps", "min_lr", "warmup_start_lr", "warmup_epochs", "interval"},
    "checkpoint": {"enabled", "dir", "frequency", "keep_prev"},
    "auto_resume": {"enabled", "max_hours"},
    "auto_umap": {"enabled", "dir", "frequency"},
    "knn_eval": {"enabled", "k", "distance_func"},
    "performance": {"disable_channel_last"},
    "wandb": {"enabled", "entity", "project", "offline"},
    "dali": {"device", "encode_indexes_into_labels"},
    "momentum": {"base_tau", "final_tau", "classifier"},
}


def trainer_keys() -> set[str]:
    """Arguments of the Lightning ``Trainer`` (top-level keys of solo-learn's configs)."""
    try:
        from lightning.pytorch import Trainer
    except ImportError:  # pragma: no cover - solo-learn main needs lightning
        from pytorch_lightning import Trainer
    return set(inspect.signature(Trainer.__init__).parameters) - {"self"}


def _suggest(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _is_ours(override: str) -> bool:
    key = override.lstrip("+~").split("=", 1)[0]
    top = key.split(".", 1)[0]
    return top in OUR_TOP_KEYS or (top == "data" and key.split(".")[1:2] and key.split(".")[1] in DATA_EXTRAS)


def with_plugin_defaults(cfg: DictConfig) -> DictConfig:
    """``cfg`` with solo-qscore's typed sections (defaults where the file has none), validated.

    Safe to call more than once; used both by the command line and by :func:`with_qscore` for a
    config that comes straight from solo-learn's own ``main_pretrain.py``.
    """
    OmegaConf.set_struct(cfg, False)
    try:
        typed = OmegaConf.structured(PluginSections)
        present = {k: cfg[k] for k in PLUGIN_SECTIONS if k in cfg and cfg[k] is not None}
        merged = OmegaConf.merge(typed, present)
        extras = OmegaConf.merge(OmegaConf.structured(DataExtras),
                                 {k: cfg.data[k] for k in DATA_EXTRAS if "data" in cfg and k in cfg.data})
    except OmegaConfBaseException as err:
        raise ConfigError(_omegaconf_message(err)) from err
    for key in PLUGIN_SECTIONS:
        cfg[key] = merged[key]
    if "data" not in cfg or cfg.data is None:
        raise ConfigError("config key 'data' is missing (solo-learn needs data.dataset and data.train_path)")
    for key in DATA_EXTRAS:
        cfg.data[key] = extras[key]
    cfg.output_dir = cfg.get("output_dir") or str(Path("runs") / str(cfg.get("name") or cfg.get("method")))
    return cfg


def _omegaconf_message(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None)
    msg = str(err).split("\n")[0]
    return f"config key '{key}': {msg}" if key else msg


def apply_overrides(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """Apply ``key.sub=value`` overrides of solo-qscore's own keys (typed: a wrong value fails here)."""
    for text in overrides:
        key, sep, raw = text.lstrip("+").partition("=")
        if not sep:
            raise ConfigError(f"override '{text}' must look like key.sub=value")
        try:
            value = OmegaConf.create(f"v: {raw}").v if raw != "" else None
            OmegaConf.update(cfg, key, value, merge=True)
        except OmegaConfBaseException as err:
            raise ConfigError(f"override '{text}': {_omegaconf_message(err)}") from err
    return cfg


def compose(config_path: str | Path, config_name: str, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose a solo-learn config file as its ``main_pretrain.py`` does, then add our sections.

    Overrides of solo-learn's keys go through Hydra (``max_epochs=3``, ``optimizer.batch_size=64``,
    ``+knn_eval.enabled=true``); overrides of our keys (``qscore.*``, ``ifm.*``, ``lasso.*``,
    ``hard_negatives.*``, ``probe.*``, ``data.train_subset``…, ``output_dir``) are typed.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    config_dir = Path(config_path).expanduser().resolve()
    if not config_dir.is_dir():
        raise ConfigError(f"--config-path {config_path}: no such directory")
    name = config_name if config_name.endswith(".yaml") else f"{config_name}.yaml"
    if not (config_dir / name).is_file():
        found = ", ".join(sorted(p.stem for p in config_dir.glob("*.yaml"))) or "none"
        raise ConfigError(f"--config-name {config_name}: not in {config_dir} (configs there: {found})")
    ours = [o for o in overrides if _is_ours(o)]
    theirs = [o for o in overrides if not _is_ours(o)]
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.2"):
            cfg = hydra_compose(config_name=name, overrides=theirs)
    except (HydraException, OmegaConfBaseException) as err:
        text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        raise ConfigError(f"{config_dir / name}: {text}") from err
    except Exception as err:  # YAML syntax errors surface as yaml/scanner errors
        mark = getattr(err, "problem_mark", None)
        if mark is not None:  # the file that is wrong: this one or one its defaults list includes
            where = mark.name if mark.name and not mark.name.startswith("<") else str(config_dir / name)
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"{where}, line {mark.line + 1}, column {mark.column + 1}: YAML syntax error: "
                              f"{problem}") from err
        raise ConfigError(f"{config_dir / name}: cannot read the config: {str(err).splitlines()[0]}") from err
    OmegaConf.set_struct(cfg, False)
    cfg.pop("hydra", None)
    cfg = with_plugin_defaults(cfg)
    apply_overrides(cfg, ours)
    cfg = with_plugin_defaults(cfg)  # re-type what the overrides changed
    validate(cfg)
    return cfg


def _number(cfg: DictConfig, dotted: str, *, minimum: float = 0.0, strict: bool = False,
            integer: bool = False) -> None:
    value = OmegaConf.select(cfg, dotted)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > minimum if strict else value >= minimum)
    if integer and ok:
        ok = float(value).is_integer()
    if not ok:
        need = f"{'> ' if strict else '>= '}{minimum:g}"
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"config key '{dotted}' must be {kind} {need}, got {value!r}")


def validate(cfg: DictConfig) -> None:
    """Check keys and values whose errors would otherwise surface deep inside training."""
    known = SOLO_KEYS | OUR_TOP_KEYS | trainer_keys()
    for key in cfg:
        if key not in known:
            raise ConfigError(f"unknown config key '{key}'{_suggest(str(key), known)}")
    for key in ("method", "backbone", "data", "optimizer", "augmentations"):
        if key not in cfg or cfg[key] is None:
            raise ConfigError(f"config key '{key}' is missing")
    for key in cfg.data:
        if key not in SOLO_DATA_KEYS | set(DATA_EXTRAS):
            raise ConfigError(f"unknown config key 'data.{key}'{_suggest(str(key), SOLO_DATA_KEYS | set(DATA_EXTRAS))}")
    from solo.methods import METHODS

    if cfg.method not in METHODS or cfg.method in ("base", "linear"):
        names = ", ".join(k for k in METHODS if k not in ("base", "linear"))
        raise ConfigError(f"config key 'method': unknown method {cfg.method!r}; solo-learn has {names}")
    from solo.methods.base import BaseMethod

    backbone = cfg.backbone.get("name") if isinstance(cfg.backbone, DictConfig) else None
    if backbone not in BaseMethod._BACKBONES:
        known_backbones = set(BaseMethod._BACKBONES)
        raise ConfigError(f"config key 'backbone.name': unknown backbone {backbone!r}"
                          f"{_suggest(str(backbone), known_backbones)}; solo-learn has "
                          f"{', '.join(sorted(known_backbones))}")
    _number(cfg, "optimizer.batch_size", minimum=0, strict=True, integer=True)
    _number(cfg, "optimizer.lr", minimum=0, strict=True)
    _number(cfg, "optimizer.weight_decay")
    if "classifier_lr" in cfg.optimizer:
        _number(cfg, "optimizer.classifier_lr")
    if "max_epochs" in cfg and cfg.max_epochs is not None:
        _number(cfg, "max_epochs", minimum=0, strict=True, integer=True)
    if "seed" in cfg:
        _number(cfg, "seed", integer=True)
    for key in ("num_workers",):
        if key in cfg.data:
            _number(cfg, f"data.{key}", integer=True)
    for key in DATA_EXTRAS[:2]:
        if cfg.data[key] is not None:
            _number(cfg, f"data.{key}", minimum=0, strict=True, integer=True)
    if cfg.data.bad_images not in ("error", "skip"):
        raise ConfigError(f"config key 'data.bad_images' must be error or skip, got {cfg.data.bad_images!r}")
    check_fallback(cfg.data.fallback)
    if not isinstance(cfg.augmentations, ListConfig) or not len(cfg.augmentations):
        raise ConfigError("config key 'augmentations' must be a non-empty list of crop pipelines")
    check_section_keys(cfg)
    check_solo_values(cfg)
    check_trainer_values(cfg)
    check_plugin_values(cfg)
    check_method_options(cfg)


def check_section_keys(cfg: DictConfig) -> None:
    """Keys in solo-learn's sections that solo-learn does not read (:data:`SOLO_SECTION_KEYS`): Hydra adds
    ``+optimizer.lrr=0.1`` without a word, and solo-learn would ignore it."""
    for section, allowed in SOLO_SECTION_KEYS.items():
        node = cfg.get(section)
        for key in node if isinstance(node, DictConfig) else ():
            if key not in allowed:
                close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
                hint = f" (did you mean '{section}.{close[0]}'?)" if close else ""
                raise ConfigError(f"unknown config key '{section}.{key}'{hint}; solo-learn reads {section}."
                                  f"{{{', '.join(sorted(allowed))}}}")


def check_fallback(fallback: Optional[str]) -> None:
    """``data.fallback``: null, or a dataset :mod:`solo_qscore.data` can load."""
    from solo_qscore.data import DATASET_NAMES

    if fallback is not None and str(fallback).lower() not in DATASET_NAMES:
        raise ConfigError(f"config key 'data.fallback' must be null or one of {', '.join(DATASET_NAMES)}, "
                          f"got {fallback!r}")


def _choice(cfg: DictConfig, dotted: str, allowed, optional: bool = True) -> None:
    value = OmegaConf.select(cfg, dotted)
    if (value is not None or not optional) and str(value) not in allowed:
        raise ConfigError(f"config key '{dotted}' must be one of {', '.join(allowed)}, got {value!r}")


def check_solo_values(cfg: DictConfig) -> None:
    """Values solo-learn would fail on (or train on silently) only once training starts: the optimiser
    and scheduler names (solo's ``BaseMethod``), every temperature of a method (``> 0``: at 0 the logits
    are infinite, below 0 the loss pushes positives apart)."""
    from solo.methods.base import BaseMethod

    _choice(cfg, "optimizer.name", sorted(BaseMethod._OPTIMIZERS))
    # solo lists "reduce" and "exponential" too, but its configure_optimizers raises on them
    schedulers = [s for s in BaseMethod._SCHEDULERS if s not in ("reduce", "exponential")]
    name = OmegaConf.select(cfg, "scheduler.name")
    if name is not None and str(name).lower() not in schedulers:
        raise ConfigError(f"config key 'scheduler.name' must be one of {', '.join(schedulers)}, got {name!r}")
    kwargs = cfg.get("method_kwargs")
    for key in kwargs if isinstance(kwargs, DictConfig) else ():
        # temperature, temperature_q/_k (ReSSL), student_/teacher_temperature (DINO); not DINO's warm-up epochs
        if "temperature" in str(key) and not str(key).endswith("_epochs"):
            _number(cfg, f"method_kwargs.{key}", minimum=0, strict=True)


def _accelerators() -> list[str]:
    """Accelerators a run may ask for here: Lightning's that are available, plus auto, and gpu/cuda
    (:func:`~solo_qscore.adapters.solo_main.adapt_to_machine` runs those on the CPU without a GPU)."""
    from lightning.pytorch.accelerators import AcceleratorRegistry

    usable = {name for name in AcceleratorRegistry.available_accelerators()
              if AcceleratorRegistry[name]["accelerator"].is_available()}
    return sorted(usable | {"auto", "cpu", "gpu", "cuda"})


def check_trainer_values(cfg: DictConfig) -> None:
    """The ``Trainer`` arguments a wrong value of fails late (after the data is loaded): ``precision``
    (Lightning's precision strings), ``accelerator`` (those usable on this machine) and ``devices``."""
    import typing

    from lightning.fabric.connector import _PRECISION_INPUT_INT, _PRECISION_INPUT_STR, _PRECISION_INPUT_STR_ALIAS

    precisions = [*typing.get_args(_PRECISION_INPUT_STR), *typing.get_args(_PRECISION_INPUT_STR_ALIAS)]
    precisions += [str(p) for p in typing.get_args(_PRECISION_INPUT_INT) if str(p) not in precisions]
    _choice(cfg, "precision", precisions)
    accelerators = _accelerators()
    if cfg.get("accelerator") is not None and str(cfg.accelerator) not in accelerators:
        raise ConfigError(f"config key 'accelerator': {cfg.accelerator!r} is not available on this machine; use one "
                          f"of {', '.join(accelerators)} (gpu and cuda run on the CPU when there is no GPU)")
    devices = cfg.get("devices")
    if devices is None:
        return
    shown = OmegaConf.to_container(devices) if isinstance(devices, ListConfig) else devices
    count = isinstance(devices, int) and not isinstance(devices, bool) and devices >= 1
    indices = isinstance(devices, ListConfig) and len(devices) > 0 and all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices)
    if not (count or indices):
        raise ConfigError(f"config key 'devices' must be a number of devices >= 1 or a non-empty list of device "
                          f"indices (e.g. [0]), got {shown!r}")


def check_plugin_values(cfg: DictConfig) -> None:
    """Values of solo-qscore's own sections (``qscore``, ``ifm``, ``lasso``, ``hard_negatives``, ``probe``).

    Also checks the run view of a checkpoint after a command's overrides
    (:func:`solo_qscore.cli.open_run.with_overrides`), so plain values are handled, not only typed ones.
    """
    for dotted in ("qscore.eps", "qscore.lambda1", "qscore.lambda2", "ifm.epsilon", "ifm.alpha",
                   "lasso.weight", "hard_negatives.beta", "probe.weight_decay"):
        _number(cfg, dotted)
    _number(cfg, "probe.max_iter", minimum=1, integer=True)
    _number(cfg, "probe.every_n_epochs", integer=True)
    _number(cfg, "probe.batch_size", minimum=1, integer=True)
    _number(cfg, "ifm.pre_norm_steps", minimum=1, integer=True)
    _number(cfg, "hard_negatives.tau_plus")
    if not cfg.hard_negatives.tau_plus < 1:
        raise ConfigError(f"config key 'hard_negatives.tau_plus' must be in [0, 1), got {cfg.hard_negatives.tau_plus}")
    given = cfg.qscore.band
    band = list(given) if isinstance(given, ListConfig) else [given]
    numbers = all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in band)
    if not (len(band) == 2 and numbers and 0 <= band[0] < band[1] <= 100):
        shown = band if isinstance(given, ListConfig) else given
        raise ConfigError(f"config key 'qscore.band' must be [low, high] with 0 <= low < high <= 100, got {shown!r}")
    _choice(cfg, "qscore.statistics", ("train_step", "dataloader"), optional=False)
    _choice(cfg, "ifm.variant", IFM_VARIANTS, optional=False)


def check_run_view(view: dict[str, Any]) -> None:
    """The values a command reads from a run view (:func:`~solo_qscore.adapters.solo_main.run_view` of a
    checkpoint, after the command's ``key=value`` overrides): ``ConfigError`` naming the key, before any
    data is read. The plugin sections as in a run's config; ``data``: the eval loaders' settings."""
    cfg = OmegaConf.create(view)
    check_plugin_values(cfg)
    data = view.get("data") or {}
    for key, minimum in (("batch_size", 1), ("image_size", 1), ("num_workers", 0)):
        if key in data:
            _number(cfg, f"data.{key}", minimum=minimum, integer=True)
    for key in ("train_subset", "val_subset"):
        if data.get(key) is not None:
            _number(cfg, f"data.{key}", minimum=1, integer=True)
    check_fallback(data.get("fallback"))


def check_method_options(cfg: DictConfig) -> None:
    """IFM and hard negatives replace an InfoNCE term: only for the methods that have one."""
    method = cfg.method
    if cfg.ifm.enabled and method not in IFM_METHODS:
        raise ConfigError(
            f"IFM applies to InfoNCE methods only ({', '.join(IFM_METHODS)}); method '{method}' is not one "
            "of them (config key 'ifm.enabled')"
        )
    if cfg.hard_negatives.enabled:
        if method != "simclr":
            raise ConfigError(f"hard negative sampling is a SimCLR loss; method '{method}' is not simclr "
                              "(config key 'hard_negatives.enabled')")
        if cfg.ifm.enabled:
            raise ConfigError("config keys 'hard_negatives.enabled' and 'ifm.enabled' cannot both be true: each "
                              "replaces SimCLR's loss with its own (compare them as separate runs)")


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """Plain, resolved dict of a run config (for checkpoints, wandb and JSON)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
