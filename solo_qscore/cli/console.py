"""What the ``solo-qscore`` program prints: other packages' noise hidden, our own notes one line each,
and the main job's closing summary.

:func:`quiet_console` is applied by :func:`solo_qscore.cli.app.main` around a command (``--debug``
shows everything), never at import: the library leaves the warning filters and the logging of a
program that imports it alone. Hidden, because a user can do nothing about them: deprecation
warnings raised inside other packages (timm's renamed modules, solo-learn's ``torch.cuda.amp``
decorators, Lightning's pytree check), solo-learn's backbones re-registering timm's model names,
torch's ``pin_memory`` note on a machine without an accelerator, Lightning's "💡 Tip" advertisements
and its note that it loads the train loader, and solo-learn's caveat on resuming step-wise schedules
(``--resume`` of such runs is tested here). Our own warnings (a GPU config adapted to this machine,
a dataset fallback) print as one ``solo-qscore: ...`` line each, not Python's two (the message, then
the source line that raised it), and log lines lose the ``INFO:logger.name:`` prefix of Python's
default format.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Optional

#: (category, message pattern) of other packages' warnings hidden on the console
HIDDEN_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (UserWarning, r"Overwriting \S+ in registry"),  # solo-learn's backbones re-register timm's names
    (UserWarning, r"'pin_memory' argument is set as true but no accelerator"),  # torch, on a CPU
)
#: the beginnings of other packages' log lines hidden on the console
HIDDEN_LOG_LINES: tuple[str, ...] = (
    "💡 Tip:",  # Lightning: litlogger / litmodels advertisements
    "Loading `train_dataloader` to estimate",  # Lightning: how it counts the steps of a schedule
    "Using scheduler_interval=step might generate issues",  # solo-learn's caveat on resuming (tested here)
    "Seed set to ",  # Lightning's seed_everything: the seed is in the run's config and its wandb record
)
#: where those log lines are logged: solo-learn logs on the root logger, Lightning's rank-zero messages
#: on the logger of whichever of its two packages (``lightning.pytorch``, ``pytorch_lightning``) came last
_NOISY_LOGGERS = ("", "lightning.pytorch.utilities.rank_zero", "pytorch_lightning.utilities.rank_zero",
                  "lightning.fabric.utilities.seed", "lightning_fabric.utilities.seed")  # "Seed set to"


class _HideLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(HIDDEN_LOG_LINES)


class _NotShownYet(logging.Filter):
    """For a handler on the root logger: only the records no handler on the way up has printed
    (Lightning's loggers have their own handlers and still propagate)."""

    def filter(self, record: logging.LogRecord) -> bool:
        logger: Optional[logging.Logger] = logging.getLogger(record.name)
        while logger is not None and logger is not logging.getLogger():
            if logger.handlers:
                return False
            logger = logger.parent if logger.propagate else None
        return True


def _our_folders() -> tuple[Path, ...]:
    """The folders of our source files: the package and ``solo_qscore.callbacks`` (a folder of its own
    in a source checkout)."""
    spec = importlib.util.find_spec("solo_qscore.callbacks")
    folders = [Path(__file__).resolve().parents[1]]
    folders += [Path(p).resolve() for p in (spec.submodule_search_locations or [])] if spec else []
    return tuple(folders)


def _is_ours(filename: str, folders: tuple[Path, ...]) -> bool:
    path = Path(filename).resolve()
    return any(path.is_relative_to(folder) for folder in folders)


@contextlib.contextmanager
def quiet_console() -> Iterator[None]:
    """Within: other packages' noise hidden, our warnings one line each (module docstring); the warning
    filters, ``warnings.formatwarning`` and the logging set-up are restored on the way out."""
    folders = _our_folders()
    hide = _HideLines()
    root = logging.getLogger()
    handler = None
    if not root.handlers:  # else solo-learn's first ``logging.warning`` installs Python's "LEVEL:name:" format
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.addFilter(_NotShownYet())
        root.addHandler(handler)
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).addFilter(hide)
    previous_format = warnings.formatwarning

    def one_line(message: Any, category: type[Warning], filename: str, lineno: int,
                 line: Optional[str] = None) -> str:
        if _is_ours(filename, folders):
            text = str(message).replace("\n", " ")
            return (text if text.startswith("solo-qscore: ") else f"solo-qscore: {text}") + "\n"
        return previous_format(message, category, filename, lineno, line)

    try:
        with warnings.catch_warnings():
            for category in (DeprecationWarning, FutureWarning):  # raised inside another package
                warnings.filterwarnings("ignore", category=category, module=r"(?!solo_qscore\b)")
            for category, pattern in HIDDEN_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern, category=category)
            # Lightning wraps the formatter it finds when it is first imported: set ours before that
            warnings.formatwarning = one_line
            try:
                yield
            finally:
                warnings.formatwarning = previous_format
    finally:
        for name in _NOISY_LOGGERS:
            logging.getLogger(name).removeFilter(hide)
        if handler is not None:
            root.removeHandler(handler)


def process_age() -> Optional[float]:
    """Seconds since this process started, Python's start-up and imports included (Linux ``/proc``);
    ``None`` where that cannot be read."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of proc(5): start, in ticks after boot
        return float(Path("/proc/uptime").read_text().split()[0]) - started
    except (OSError, ValueError, IndexError):
        return None


def duration(seconds: float) -> str:
    """``236.4`` -> ``"3 min 56 s"``; under a minute ``"42 s"``."""
    whole = int(round(seconds))
    return f"{whole // 60} min {whole % 60:02d} s" if whole >= 60 else f"{whole} s"


def main_summary(summary: Mapping[str, Any], seconds: float, what: str, max_time: Optional[str]) -> str:
    """The main job's closing lines: what ran and how long, where its files are, its headline numbers.

    Args:
        summary: :func:`solo_qscore.train.pretrain`'s summary.
        seconds: the whole job's wall time.
        what: the method and its additions, e.g. ``"simclr + Q-Score + IFM"``.
        max_time: the training budget (Lightning's ``max_time``), if any.
    """
    steps = int(summary["global_step"])
    trained = f"{steps} steps"
    if summary.get("train_seconds") is not None:
        trained += f" in {duration(float(summary['train_seconds']))}"
    if summary.get("stopped_by_time"):
        trained += f", stopped by the training budget (max_time={max_time})"
    elif max_time is not None:
        trained += f", all of them within the training budget (max_time={max_time})"
    lines = [f"solo-qscore main: done in {duration(seconds)}",
             f"  trained     {what} on {summary.get('dataset')}, {summary.get('precision')}: {trained}",
             f"  checkpoint  {summary['checkpoint']}"]
    probe = summary.get("probe")
    if probe is not None:
        lines.append(f"  report      {summary['probe_dir']}/probe.json (+ samples.csv and PNG figures)")
    if summary.get("wandb_dir"):
        run_dir = Path(summary["wandb_dir"]).parent
        lines.append(f"  wandb run   {run_dir} (offline: upload it with `wandb sync {run_dir}`)")
    if probe is not None:
        def num(key: str) -> str:
            value = probe.get(key)
            return "n/a" if value is None else f"{float(value):.3f}"

        lines.append(f"  result      linear-probe accuracy {num('accuracy')}; Q for \"correct\": AUROC {num('auroc')}, "
                     f"AUPRC {num('auprc')} (chance {num('accuracy')}); discriminative features "
                     f"{probe.get('num_discriminative')} of {probe.get('num_features')}")
        if probe.get("note"):
            lines.append(f"  note        {probe['note']}")
    return "\n".join(lines)
