"""``solo-qscore pretrain``: a solo-learn main pre-training run with Q-Score and/or IFM, end to end.

What solo-learn's ``main_pretrain.py`` does (its config, its methods, its augmentations, a
``lightning.pytorch`` Trainer), plus: the module wrapped by
:func:`~solo_qscore.adapters.solo_main.with_qscore`, the statistics and probe callbacks, a
validation loader (solo's ``val_acc1``/``val_loss``), checkpoints in ``output_dir/checkpoints``,
and a logger (wandb offline, or CSV). An existing ``output_dir`` is never overwritten unless asked, and
then only a run's own files, once every input is checked (:mod:`solo_qscore.output_folder`).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from solo_qscore.adapters.lightning import solo_lightning
from solo_qscore.callbacks.run_bookkeeping import CommitRunFolder, LossHistory, RunRecord, TrainClock
from solo_qscore.config import ConfigError, to_container
from solo_qscore.output_folder import RunFolder, folder_lock, prepare_output_dir

pl = solo_lightning()  # lightning.pytorch, the namespace of solo-learn main's methods (through the util layer)


def check_loss_decreases(losses: list[float]) -> str:
    """Raise ``AssertionError`` unless all losses are finite and the last third averages below the first."""
    if len(losses) < 6:
        raise AssertionError(f"need at least 6 steps to judge the loss, got {len(losses)}")
    if not all(math.isfinite(x) for x in losses):
        raise AssertionError(f"non-finite training loss: {losses}")
    third = len(losses) // 3
    first, last = sum(losses[:third]) / third, sum(losses[-third:]) / third
    if not last < first:
        raise AssertionError(f"loss did not decrease on average: first third {first:.4f}, last third {last:.4f}")
    return f"loss finite over {len(losses)} steps; mean of first third {first:.4f} -> last third {last:.4f}"


def _logger(cfg: DictConfig, output_dir: Path, resume_id: Optional[str]):
    if cfg.wandb.get("enabled", False):
        offline = bool(cfg.wandb.get("offline", True))
        if offline:
            os.environ.setdefault("WANDB_MODE", "offline")
        entity = cfg.wandb.get("entity")
        logger = pl.loggers.WandbLogger(name=cfg.name, project=cfg.wandb.get("project", "solo-qscore"),
                             entity=None if entity in (None, "None") else entity, save_dir=str(output_dir),
                             offline=offline, id=resume_id, resume="allow" if resume_id else None)
        # Lightning passes wandb.init(anonymous=None), which recent wandb (0.31 here) answers with a warning
        # that the setting has no effect, on the console even with WANDB_SILENT: leave it unset
        getattr(logger, "_wandb_init", {}).pop("anonymous", None)
        logger.log_hyperparams(to_container(cfg))
        return logger
    return pl.loggers.CSVLogger(save_dir=str(output_dir), name="logs")


def _wandb_id(checkpoint_path: Optional[str]) -> Optional[str]:
    """The wandb run id a checkpoint's run logged to (so --resume continues that run)."""
    if checkpoint_path is None:
        return None
    from solo_qscore.adapters.solo_checkpoint import read_checkpoint

    meta = read_checkpoint(checkpoint_path).get("solo_qscore_run", {})
    return meta.get("wandb_id") if isinstance(meta, dict) else None


def pretrain(cfg: DictConfig, init_from: Optional[str] = None, resume: Optional[str] = None,
             record_loss: bool = False, extra_callbacks: Sequence[pl.Callback] = (),
             overwrite: bool = False, trust_checkpoint: bool = False) -> dict[str, Any]:
    """Run a pre-training described by a composed config (:func:`solo_qscore.config.compose`).

    Args:
        init_from: a checkpoint to further-train (weights and discriminative set; fresh optimiser),
            as the Q-Score paper does for its regularisation; D is seeded before the first step.
        resume: a checkpoint to resume exactly (optimiser, step, callback state, wandb run).
        record_loss: keep the loss of every step in the summary (``losses``).
        extra_callbacks: further Lightning callbacks.
        overwrite: replace the run in ``output_dir`` (otherwise an existing run there is an error); only
            a run folder (:mod:`solo_qscore.output_folder`), only what a run writes, and only once
            every input is checked.
        trust_checkpoint: load ``init_from`` with ``weights_only=False`` (it can run code).
    Returns:
        a summary: output and probe folders, checkpoint, steps, the probe's headline numbers.
    """
    from solo_qscore.adapters.solo_checkpoint import read_checkpoint
    from solo_qscore.adapters.solo_config import adapt_to_machine, prepare_config

    if cfg.get("max_epochs") is not None and int(cfg.max_epochs) < 1:
        raise ConfigError("config key 'max_epochs' must be >= 1 (0 would save an untrained model)")
    if init_from is not None and resume is not None:
        raise ConfigError("--from and --resume cannot be used together: --from further-trains a checkpoint's "
                          "weights in a new run (fresh optimiser), --resume continues a run exactly; pass one")

    for path, flag in ((init_from, "--from"), (resume, "--resume")):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{flag} {path}: no such checkpoint file")
    init_checkpoint = None
    if init_from is not None:  # refuse a bad or unsafe file before anything is written (read once)
        init_checkpoint = read_checkpoint(init_from, trusted=trust_checkpoint)
    wandb_id = _wandb_id(resume)  # reads --resume: a bad or unsafe file is refused here too
    source = to_container(cfg)  # before parse_cfg scales the lr: what a further-training run starts from
    for change in adapt_to_machine(cfg):
        warnings.warn(f"solo-qscore: {change}", UserWarning, stacklevel=2)
    cfg = prepare_config(cfg)
    output_dir = Path(cfg.output_dir)
    with folder_lock(output_dir, "output_dir"):  # one process at a time writes into a folder
        folder = prepare_output_dir(output_dir, overwrite, resume, init_from)  # checks only: nothing written
        return _train(cfg, folder, source, init_from, init_checkpoint, resume, wandb_id, record_loss,
                      extra_callbacks)


def _train(cfg: DictConfig, folder: RunFolder, source: dict, init_from: Optional[str],
           init_checkpoint: Optional[dict], resume: Optional[str], wandb_id: Optional[str], record_loss: bool,
           extra_callbacks: Sequence[pl.Callback]) -> dict[str, Any]:
    """:func:`pretrain` in its checked and locked ``folder``: the data, the model, the ``--from`` weights
    and the callbacks are built (and so checked) before the run claims the folder, so a refused input
    leaves an old run (``--overwrite``) untouched; it is deleted once the new run has trained a step,
    and put back if the new run fails before that."""
    from solo_qscore.adapters.solo_callbacks import qscore_callbacks
    from solo_qscore.adapters.solo_checkpoint import load_weights_into
    from solo_qscore.adapters.solo_data import make_pretrain_loader, validation_loader
    from solo_qscore.adapters.solo_method import build_model

    output_dir = folder.path
    pl.seed_everything(int(cfg.seed), workers=True)
    train_loader = make_pretrain_loader(cfg)
    cfg.data.dataset_used = train_loader.dataset_name
    model = build_model(cfg)
    model.source_config = source
    if init_from is not None:
        load_weights_into(model, init_from, checkpoint=init_checkpoint)
    # solo's online classifier validates on the probe's validation split (none: unlabelled images)
    val_loader = validation_loader(cfg, batch_size=int(cfg.optimizer.batch_size))
    callbacks: list = qscore_callbacks(cfg, output_dir=output_dir, seed_from_train_set=init_from is not None)
    # no "last-v1.ckpt": a run resumed after its folder was moved or copied (Lightning then does not recognise
    # the folder as the checkpoint's own) goes on writing checkpoints/last.ckpt, the file --resume reads
    callbacks += [pl.callbacks.ModelCheckpoint(dirpath=str(output_dir / "checkpoints"), save_last=True,
                                               enable_version_counter=False),
                  pl.callbacks.LearningRateMonitor(logging_interval="epoch")]
    history = LossHistory()
    if record_loss:
        callbacks.append(history)
    callbacks.extend(extra_callbacks)
    clock = TrainClock()
    callbacks.insert(0, clock)  # first: its on_train_end runs before the probe report's
    folder.claim()  # every input checked: now an old run (--overwrite) moves aside
    try:
        logger = _logger(cfg, output_dir, wandb_id)
        callbacks += [RunRecord(logger), CommitRunFolder(folder)]
        trainer = pl.Trainer(**_trainer_kwargs(cfg), callbacks=callbacks, logger=logger,
                             default_root_dir=str(output_dir))
        trainer.fit(model, train_dataloaders=train_loader, val_dataloaders=val_loader, ckpt_path=resume)
    except BaseException:
        folder.restore()  # a no-op once the new run has trained a step
        raise
    folder.commit()  # also when no step was left to train (a resumed finished run)
    probe_cb = next((c for c in callbacks if hasattr(c, "last_report")), None)
    probe = probe_cb.last_report if probe_cb is not None else None
    summary = {
        "output_dir": str(output_dir),
        "checkpoint": str(output_dir / "checkpoints" / "last.ckpt"),
        "probe_dir": str(output_dir / "probe"),
        "global_step": trainer.global_step,
        "num_discriminative": int(model.qscore_discriminative.sum()),
        "probe": probe.summary() if probe is not None else None,
        "dataset": cfg.data.dataset_used,
        "method": str(cfg.method),
        "precision": str(cfg.get("precision", "32-true")),
        "train_seconds": None if clock.seconds is None else round(clock.seconds, 1),
        "stopped_by_time": clock.stopped_by_time,
    }
    if cfg.wandb.get("enabled", False):
        summary["wandb_dir"] = str(getattr(logger.experiment, "dir", output_dir / "wandb"))
    if record_loss:
        summary["losses"] = history.losses
    return summary


def _trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """The config's ``Trainer`` arguments, as solo's ``main_pretrain.py`` picks them."""
    import inspect

    valid = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self", "callbacks", "logger",
                                                                        "default_root_dir"}
    kwargs = {k: v for k, v in to_container(cfg).items() if k in valid}
    kwargs["enable_checkpointing"] = True
    if kwargs.get("strategy") in (None, "None"):
        kwargs.pop("strategy", None)
    if kwargs.get("strategy") == "ddp":
        kwargs["strategy"] = pl.strategies.DDPStrategy(find_unused_parameters=False)
    kwargs.setdefault("log_every_n_steps", 10)
    if os.environ.get("CI"):  # no progress bars in CI logs
        kwargs.setdefault("enable_progress_bar", False)
    kwargs["num_sanity_val_steps"] = kwargs.get("num_sanity_val_steps", 0)
    return kwargs
