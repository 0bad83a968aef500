"""``solo-qscore pretrain``: a solo-learn main pre-training run with Q-Score and/or IFM, end to end.

What solo-learn's ``main_pretrain.py`` does (its config, its methods, its augmentations, a
``lightning.pytorch`` Trainer), plus: the module wrapped by
:func:`~solo_qscore.adapters.solo_main.with_qscore`, the statistics and probe callbacks, a
validation loader (solo's ``val_acc1``/``val_loss``), checkpoints in ``output_dir/checkpoints``,
and a logger (wandb offline, or CSV). An existing ``output_dir`` is never overwritten unless asked.
"""

from __future__ import annotations

import math
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig

from solo_qscore.config import ConfigError, to_container


class LossHistory(pl.Callback):
    """Records the training loss of every step (only used by smoke runs: ``.item()`` syncs)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss.detach()))


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
        from lightning.pytorch.loggers import WandbLogger

        offline = bool(cfg.wandb.get("offline", True))
        if offline:
            os.environ.setdefault("WANDB_MODE", "offline")
        entity = cfg.wandb.get("entity")
        logger = WandbLogger(name=cfg.name, project=cfg.wandb.get("project", "solo-qscore"),
                             entity=None if entity in (None, "None") else entity, save_dir=str(output_dir),
                             offline=offline, id=resume_id, resume="allow" if resume_id else None)
        logger.log_hyperparams(to_container(cfg))
        return logger
    from lightning.pytorch.loggers import CSVLogger

    return CSVLogger(save_dir=str(output_dir), name="logs")


def _wandb_id(checkpoint_path: Optional[str]) -> Optional[str]:
    """The wandb run id a checkpoint's run logged to (so --resume continues that run)."""
    if checkpoint_path is None:
        return None
    from solo_qscore.adapters.solo_main import read_checkpoint

    meta = read_checkpoint(checkpoint_path).get("solo_qscore_run", {})
    return meta.get("wandb_id") if isinstance(meta, dict) else None


class _RunRecord(pl.Callback):
    """Stores the wandb run id in checkpoints, so ``--resume`` continues the same wandb run, and
    finishes that run when the fit ends (everything is flushed to its record, and a later
    :func:`pretrain` in the same process starts its own run instead of logging into this one)."""

    def __init__(self, logger) -> None:
        self.logger = logger

    def _is_wandb(self) -> bool:
        from solo_qscore.adapters.lightning import is_wandb_logger

        return is_wandb_logger(self.logger)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        run_id = getattr(self.logger, "version", None) if self._is_wandb() else None  # CSVLogger: an int
        checkpoint["solo_qscore_run"] = {"wandb_id": str(run_id) if run_id else None}

    def teardown(self, trainer, pl_module, stage: str) -> None:
        # after every other callback's hooks (the probe logs its report in on_train_end);
        # ``_experiment``, not ``experiment``: never start a run only to finish it
        run = getattr(self.logger, "_experiment", None) if self._is_wandb() else None
        if run is not None and trainer.is_global_zero and hasattr(run, "finish"):
            run.finish()


def prepare_output_dir(output_dir: Path, overwrite: bool, resume: Optional[str]) -> None:
    """A run never writes into another run's folder: refuse, unless ``overwrite`` (which clears it)
    or ``resume`` (which continues the run that lives there)."""
    if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("RANK", "0") != "0":
        return  # a DDP worker process: the launching process (global rank 0) checked the folder
    if output_dir.exists() and any(output_dir.iterdir()) and resume is None:
        if not overwrite:
            raise ConfigError(f"output_dir {output_dir} already holds a run; choose another output_dir=..., "
                              "or pass --overwrite to replace it")
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    probe = output_dir / ".write_test"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"output_dir {output_dir} is not writable: {err}") from err


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
        overwrite: replace what is in ``output_dir`` (otherwise an existing run there is an error).
        trust_checkpoint: load ``init_from`` with ``weights_only=False`` (it can run code).
    Returns:
        a summary: output and probe folders, checkpoint, steps, the probe's headline numbers.
    """
    from solo_qscore.adapters.solo_main import (
        adapt_to_machine,
        build_model,
        eval_data_config,
        load_weights_into,
        make_pretrain_loader,
        prepare_config,
        qscore_callbacks,
    )
    from solo_qscore.data import make_eval_loaders

    if cfg.get("max_epochs") is not None and int(cfg.max_epochs) < 1:
        raise ConfigError("config key 'max_epochs' must be >= 1 (0 would save an untrained model)")
    from solo_qscore.adapters.solo_main import read_checkpoint

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
    prepare_output_dir(output_dir, overwrite, resume)
    pl.seed_everything(int(cfg.seed), workers=True)
    train_loader = make_pretrain_loader(cfg)
    cfg.data.dataset_used = train_loader.dataset_name
    model = build_model(cfg)
    model.source_config = source
    if init_from is not None:
        load_weights_into(model, init_from, checkpoint=init_checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, val_loader = make_eval_loaders(eval_data_config(cfg, batch_size=int(cfg.optimizer.batch_size)))
    callbacks: list = qscore_callbacks(cfg, output_dir=output_dir, seed_from_train_set=init_from is not None)
    callbacks += [pl.callbacks.ModelCheckpoint(dirpath=str(output_dir / "checkpoints"), save_last=True),
                  pl.callbacks.LearningRateMonitor(logging_interval="epoch")]
    history = LossHistory()
    if record_loss:
        callbacks.append(history)
    callbacks.extend(extra_callbacks)
    logger = _logger(cfg, output_dir, wandb_id)
    callbacks.append(_RunRecord(logger))
    trainer = pl.Trainer(**_trainer_kwargs(cfg), callbacks=callbacks, logger=logger,
                         default_root_dir=str(output_dir))
    trainer.fit(model, train_dataloaders=train_loader, val_dataloaders=val_loader, ckpt_path=resume)
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
        from lightning.pytorch.strategies import DDPStrategy

        kwargs["strategy"] = DDPStrategy(find_unused_parameters=False)
    kwargs.setdefault("log_every_n_steps", 10)
    if os.environ.get("CI"):  # no progress bars in CI logs
        kwargs.setdefault("enable_progress_bar", False)
    kwargs["num_sanity_val_steps"] = kwargs.get("num_sanity_val_steps", 0)
    if torch.cuda.is_available() is False and kwargs.get("accelerator") in ("gpu", "cuda"):
        raise ConfigError("accelerator gpu asked for, but no GPU is available")
    return kwargs
