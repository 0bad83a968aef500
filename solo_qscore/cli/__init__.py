"""Command line (``solo-qscore``, ``python -m solo_qscore``): one module per command, sharing
:mod:`solo_qscore.cli.open_run`. The program itself is :mod:`solo_qscore.cli.app`."""

from solo_qscore.cli.app import build_parser, expected_errors, main, packaged_configs

__all__ = ["build_parser", "expected_errors", "main", "packaged_configs"]
