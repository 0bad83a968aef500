"""Analysis tools of the two papers, each with a ``solo-qscore`` subcommand.

Every module here that defines ``register(subparsers)`` adds its subcommand to the command line
(``solo_qscore.cli`` discovers them); heavy imports stay inside the functions so that
``solo-qscore --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path


def load_checkpoint(path: str):
    """:func:`~solo_qscore.adapters.solo_v1.load_method` for a command: ``(model, config, checkpoint)``.

    A missing file or a checkpoint not written by ``solo-qscore pretrain`` is a ``ConfigError``, which the
    command line prints and exits 2 on.
    """
    from solo_qscore.adapters.solo_v1 import load_method
    from solo_qscore.config import ConfigError

    if not Path(path).is_file():
        raise ConfigError(f"checkpoint '{path}' does not exist")
    try:
        return load_method(path)
    except ValueError as err:
        raise ConfigError(f"cannot load {path}: {err}") from err
