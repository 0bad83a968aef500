"""Analysis tools of the two papers, each with a ``solo-qscore`` subcommand.

Every module here that defines ``register(subparsers)`` adds its subcommand to the command line
(``solo_qscore.cli`` discovers them); heavy imports stay inside the functions so that
``solo-qscore --help`` stays fast.
"""

from __future__ import annotations


def load_checkpoint(path: str, trusted: bool = False):
    """Open a ``solo-qscore pretrain`` checkpoint for a command: ``(model, run view, checkpoint)``.

    The run view is :func:`~solo_qscore.adapters.solo_main.run_view` of the saved config. A missing,
    unreadable or foreign file raises ``CheckpointError`` (one line and exit code 2 on the command line).
    """
    from solo_qscore.adapters.solo_main import load_run, run_view

    model, cfg, checkpoint = load_run(path, trusted=trusted)
    return model, run_view(cfg), checkpoint


def with_overrides(view: dict, overrides) -> dict:
    """A copy of a run view with ``key.sub=value`` overrides (values parsed as YAML); unknown keys are
    a ``ConfigError`` naming the key."""
    import copy

    import yaml

    from solo_qscore.config import ConfigError

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
    return out
