"""Checkpoints of ``solo-qscore pretrain`` runs: read safely, rebuilt, resumed, further-trained.

:func:`read_checkpoint` loads with ``weights_only=True`` (no code runs); every way a file can be wrong
(not a checkpoint, not of a solo-qscore run, hand-edited, of another method or backbone than the config it
is loaded into) is a :class:`CheckpointError` whose message says what the file is, which the command line
prints as one line.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from solo_qscore.adapters.solo_method import CHECKPOINT_FORMAT, CHECKPOINT_KEY, build_model
from solo_qscore.config import ConfigError, with_plugin_defaults


def _checkpoint_globals() -> list:
    """Classes a solo-qscore checkpoint may hold besides tensors and plain containers."""
    import collections

    return [collections.OrderedDict, collections.defaultdict, dict, list, tuple, set]


class CheckpointError(ValueError):
    """A file is not a checkpoint this version can load, or not one of the model it is loaded into; the
    message says what it is (the command line prints it as one line, exit code 2)."""


def _first_line(err: BaseException) -> str:
    """``Type: first line`` of an exception, without the terminal colour codes torch puts in its messages;
    torch's weights-only boilerplate gives way to the line that says what went wrong."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
    lines = [line.strip() for line in plain.splitlines() if line.strip()]
    cause = next((line for line in lines if line.startswith(("Unsupported operand", "Unsupported global"))), None)
    text = cause or (lines[0] if lines else "")
    return f"{type(err).__name__}: {text[:200]}" if text else type(err).__name__


# what torch.save writes: a zip archive (torch >= 1.6), or a pickle of protocol 2 (the legacy format)
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOLS = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def _check_checkpoint_header(path: Path) -> None:
    """Random bytes, text or a truncated download are "not a checkpoint", said before torch reads a byte
    (torch's weights-only loader would call them unsafe pickles)."""
    with path.open("rb") as f:
        head = f.read(4)
    if not (head.startswith(_ZIP_MAGIC) or head[:2] in _PICKLE_PROTOCOLS):
        raise CheckpointError(f"{path}: not a checkpoint: it is neither a torch zip archive nor a pickle (it starts "
                              f"with {head!r}); expected a Lightning .ckpt written by solo-qscore pretrain")


def read_checkpoint(path: str | Path, trusted: bool = False, lightning: bool = True) -> dict:
    """``torch.load`` a checkpoint safely: ``weights_only=True`` (tensors and plain containers, no
    code runs). ``trusted=True`` allows arbitrary pickles, for files you made yourself; it warns."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file; expected a Lightning checkpoint (.ckpt) of a solo-qscore run")
    _check_checkpoint_header(path)
    if trusted:
        warnings.warn(f"loading {path} with weights_only=False (--trust-checkpoint): it can run code", stacklevel=2)
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:
            raise CheckpointError(f"{path}: cannot be read as a torch checkpoint ({_first_line(err)})") from err
    try:
        with torch.serialization.safe_globals(_checkpoint_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError, RuntimeError (zip), EOFError, ...
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if unsafe:  # a real pickle that names a function or class outside tensors and plain containers
            raise CheckpointError(
                f"{path}: refused to load: it holds Python objects that could run code (the global "
                f"{unsafe.group(1)}); load it only if you trust the file, with --trust-checkpoint.") from err
        raise CheckpointError(f"{path}: not a readable checkpoint ({_first_line(err)}); "
                              "expected a Lightning .ckpt written by solo-qscore pretrain") from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: a torch file holding a {type(checkpoint).__name__}, not a checkpoint")
    if lightning and "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: a torch file but not a Lightning checkpoint (no 'state_dict')")
    return checkpoint


def load_run(path: str | Path, trusted: bool = False, map_location: str = "cpu"
             ) -> tuple[torch.nn.Module, DictConfig, dict]:
    """Rebuild the module of a ``solo-qscore pretrain`` checkpoint: ``(model, config, checkpoint)``."""
    checkpoint = read_checkpoint(path, trusted=trusted)
    meta = checkpoint.get(CHECKPOINT_KEY)
    if not isinstance(meta, dict) or not meta.get("config"):
        raise CheckpointError(f"{path}: a Lightning checkpoint, but not of a solo-qscore run "
                              f"(no '{CHECKPOINT_KEY}' entry)")
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: written by a solo-qscore for solo-learn 1.0.2 (retired); "
                              "re-train with solo-learn main")
    cfg = _saved_config(meta["config"], path, "run config")
    try:
        model = build_model(cfg)
    except (AssertionError, KeyError, AttributeError, TypeError, ValueError, OmegaConfBaseException) as err:
        raise CheckpointError(f"{path}: its saved run config does not build a {cfg.method} model ({_first_line(err)}); "
                              "was the file edited?") from err
    _check_weights_fit(model, checkpoint["state_dict"], path, f"{cfg.method} {cfg.backbone.name}")
    model.load_state_dict(checkpoint["state_dict"])
    model.to(map_location)
    return model, cfg, checkpoint


def _saved_config(config: Any, path: str | Path, what: str) -> DictConfig:
    """A config saved in a checkpoint, with the plugin sections (defaults for those added since), its
    method and backbone checked: a hand-edited or foreign file is a ``CheckpointError`` naming it."""
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: its saved {what} is a {type(config).__name__}, not a config; "
                              "was the file edited?")
    try:
        cfg = OmegaConf.create(config)
        OmegaConf.set_struct(cfg, False)
        cfg = with_plugin_defaults(cfg)
    except ConfigError as err:
        raise CheckpointError(f"{path}: its saved {what}: {err}") from err
    except OmegaConfBaseException as err:
        raise CheckpointError(f"{path}: its saved {what}: {_first_line(err)}") from err
    from solo.methods import METHODS
    from solo.methods.base import BaseMethod

    methods = [m for m in METHODS if m not in ("base", "linear")]
    if cfg.get("method") not in methods:
        raise CheckpointError(f"{path}: its saved {what} names method {cfg.get('method')!r}, which solo-learn "
                              f"does not have (it has {', '.join(methods)}); was the file edited?")
    backbone = OmegaConf.select(cfg, "backbone.name")
    if backbone not in BaseMethod._BACKBONES:
        raise CheckpointError(f"{path}: its saved {what} names backbone {backbone!r}, which solo-learn "
                              "does not have; was the file edited?")
    return cfg


def _check_weights_fit(model: torch.nn.Module, state: Any, path: str | Path, what: str) -> None:
    """``CheckpointError`` naming what is missing, extra or of another shape when ``state`` (a checkpoint's
    ``state_dict``) is not exactly the weights of ``model`` (built from the checkpoint's own config)."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: its 'state_dict' is a {type(state).__name__}, not a dict of weights")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in state if k in own and getattr(state[k], "shape", None) != own[k].shape]
    problems = []
    for label, keys in (("no weights for", missing), ("weights the model does not have:", unexpected),
                        ("weights of another shape:", mismatched)):
        if keys:
            modules = ", ".join(sorted({k.split(".")[0] for k in keys}))
            problems.append(f"{label} {modules} ({len(keys)} tensors, e.g. {keys[0]})")
    if problems:
        raise CheckpointError(f"{path}: its weights do not fit its own {what} config: {'; '.join(problems)}; "
                              "was the file edited?")


def check_resume_checkpoint(path: str | Path, cfg: DictConfig, trusted: bool = False) -> None:
    """``--resume``: refuse, in one line and before Lightning reads it, a checkpoint that is not of a
    solo-qscore run, or of a run of another method or backbone than ``cfg`` (Lightning would fail
    part-way with a traceback of mismatched weights)."""
    checkpoint = read_checkpoint(path, trusted=trusted)
    meta = checkpoint.get(CHECKPOINT_KEY)
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"--resume {path}: a Lightning checkpoint, but not of a solo-qscore run (no "
                              f"'{CHECKPOINT_KEY}' entry); --resume continues a run of solo-qscore pretrain")
    saved = meta["config"]
    theirs = (saved.get("method"), (saved.get("backbone") or {}).get("name"))
    ours = (cfg.get("method"), OmegaConf.select(cfg, "backbone.name"))
    if theirs != ours:
        raise CheckpointError(f"--resume {path}: a checkpoint of a {theirs[0]} run ({theirs[1]}), but the config is "
                              f"{ours[0]} ({ours[1]}); resume with the config that run was trained with")


def source_config(checkpoint: dict, path: str | Path = "checkpoint") -> DictConfig:
    """The composed config a run started from (before solo's ``parse_cfg``), for further training."""
    meta = checkpoint.get(CHECKPOINT_KEY)
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: a Lightning checkpoint, but not of a solo-qscore run "
                              f"(no '{CHECKPOINT_KEY}' entry)")
    source = meta.get("source_config")
    if not source:
        raise CheckpointError(f"{path}: holds no source config (only checkpoints written by `solo-qscore pretrain` "
                              "have one); to further-train it, use `solo-qscore pretrain --config-name NAME --from "
                              f"{path} --qscore`")
    return _saved_config(source, path, "source config")


def load_weights_into(model: torch.nn.Module, path: str | Path, trusted: bool = False,
                      checkpoint: Optional[dict] = None) -> None:
    """Load a checkpoint's weights (and discriminative set) into ``model`` for further training
    (``checkpoint``: the file already read by :func:`read_checkpoint`, so it is not read twice); a
    :class:`CheckpointError` when they are not the weights of ``model`` (another method or backbone)."""
    state = (checkpoint if checkpoint is not None else read_checkpoint(path, trusted=trusted))["state_dict"]
    model_state = model.state_dict()
    mismatched = [k for k, v in state.items() if k in model_state and model_state[k].shape != v.shape]
    missing = [k for k in model_state if k not in state and k != "qscore_discriminative"]
    unexpected = [k for k in state if k not in model_state]
    if mismatched or missing or unexpected:
        raise CheckpointError(f"--from {path}: checkpoint does not match the config's method/backbone "
                          f"(mismatched {mismatched[:3]}, missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.load_state_dict(state, strict=False)

