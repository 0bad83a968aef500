"""Opening a run for a command: the checkpoint's module and run view, overrides, the output folder.

Every command that reads a ``solo-qscore pretrain`` checkpoint goes through :func:`load_checkpoint`
(safe loading, one-line errors) and checks where it will write with :func:`check_output_folder`
before any computation.
"""

from __future__ import annotations

from pathlib import Path


def check_output_folder(out, overwrite: bool, report_file: str = "probe.json") -> Path:
    """Check a command's output folder before any work: ``ConfigError`` (one line, exit code 2) if
    it already holds a report (``report_file``) and ``overwrite`` is not set, if it is not a folder,
    or if it (or, when it does not exist yet, the folder it would be created in) cannot be written.
    Nothing is created. Returns ``out`` as a ``Path``."""
    from solo_qscore.config import ConfigError
    from solo_qscore.output_folder import check_writable

    out = check_writable(out, "--out")
    if (out / report_file).exists() and not overwrite:
        raise ConfigError(f"{out} already holds a report ({report_file}); pass --overwrite to replace it, "
                          "or --out another folder")
    return out


def add_safety_arguments(parser) -> None:
    """``--overwrite`` and ``--trust-checkpoint``: options of every analysis command that writes."""
    parser.add_argument("--overwrite", action="store_true", help="replace a report already in the output folder")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="load checkpoints with weights_only=False (only for files you trust: it can run code)")


def load_checkpoint(path: str, trusted: bool = False):
    """Open a ``solo-qscore pretrain`` checkpoint for a command: ``(model, run view, checkpoint)``.

    The run view is :func:`~solo_qscore.adapters.solo_main.run_view` of the saved config. A missing,
    unreadable or foreign file raises ``CheckpointError`` (one line and exit code 2 on the command line).
    """
    from solo_qscore.adapters.solo_checkpoint import load_run
    from solo_qscore.adapters.solo_config import run_view

    model, cfg, checkpoint = load_run(path, trusted=trusted)
    return model, run_view(cfg), checkpoint


def load_checkpoint_with_overrides(path: str, overrides=(), trusted: bool = False):
    """``(model, run view with overrides)``: what an analysis command opens (``explain``, ``miou``,
    ``ifm-neighbours``, ``robust-features``): :func:`load_checkpoint`, then :func:`with_overrides` (a bad
    override is a ``ConfigError`` naming the key, before any computation)."""
    model, view, _ = load_checkpoint(path, trusted=trusted)
    return model, with_overrides(view, list(overrides or ()))


def with_overrides(view: dict, overrides) -> dict:
    """A copy of a run view with ``key.sub=value`` overrides (values parsed as YAML); unknown keys and
    wrong values (:func:`solo_qscore.config.check_run_view`) are a ``ConfigError`` naming the key."""
    import copy

    import yaml

    from solo_qscore.config import ConfigError, check_run_view

    out = copy.deepcopy(view)
    for text in overrides or ():
        key, sep, raw = str(text).partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{text}' must look like key.sub=value")
        parts = key.split(".")
        node = out
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                where = ".".join(parts[:i]) or "the top level"
                allowed = ", ".join(sorted(node)) if isinstance(node, dict) else "none"
                raise ConfigError(f"unknown config key '{key}' (keys at {where}: {allowed})")
            if i == len(parts) - 1:
                try:
                    node[part] = yaml.safe_load(raw) if raw != "" else None
                except yaml.YAMLError as err:
                    raise ConfigError(f"override '{text}': cannot parse value: {err}") from err
                if isinstance(node[part], str):
                    try:  # YAML 1.1 reads 5e-4 as a string
                        node[part] = float(node[part])
                    except ValueError:
                        pass
            else:
                node = node[part]
    if overrides:  # a wrong value fails here, not part-way through the features or the probe
        check_run_view(out)
    return out
