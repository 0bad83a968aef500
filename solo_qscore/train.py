"""``solo-qscore pretrain``: a solo-learn pre-training run with Q-Score and/or IFM, end to end.

Builds the data loaders (``solo_qscore.data``), the solo-learn module with the Q-Score/IFM mixin
(``solo_qscore.adapters.solo_v1``), a Lightning ``Trainer`` with a progress bar, checkpoints, the
activation-statistics and probe callbacks and a logger (wandb offline or CSV), then fits.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch

from solo_qscore.callbacks import ActivationStatisticsCallback, QScoreProbeCallback
from solo_qscore.config import ConfigError


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


def _logger(cfg: dict, output_dir: Path):
    if cfg["wandb"]["enabled"]:
        from pytorch_lightning.loggers import WandbLogger

        if cfg["wandb"]["offline"]:
            os.environ.setdefault("WANDB_MODE", "offline")
        return WandbLogger(name=cfg["name"], project=cfg["wandb"]["project"], entity=cfg["wandb"]["entity"],
                           save_dir=str(output_dir), offline=cfg["wandb"]["offline"])
    from pytorch_lightning.loggers import CSVLogger

    return CSVLogger(save_dir=str(output_dir), name="logs")


def pretrain(cfg: dict, init_from: Optional[str] = None, resume: Optional[str] = None,
             record_loss: bool = False, extra_callbacks: Sequence[pl.Callback] = ()) -> dict[str, Any]:
    """Run a pre-training described by ``cfg`` (see ``solo_qscore.config``); returns a summary dict.

    Args:
        init_from: a checkpoint to further-train (weights and discriminative set; fresh optimiser),
            as the paper does for Q-Score regularisation.
        resume: a checkpoint to resume exactly (optimiser, step, callback state).
        record_loss: keep the loss of every step in the summary (``losses``).
        extra_callbacks: further Lightning callbacks for the Trainer (e.g. a ``ModelCheckpoint`` that
            keeps every k-th epoch).
    """
    from solo_qscore.adapters.solo_v1 import build_method
    from solo_qscore.associations import dataset_class_names
    from solo_qscore.data import make_eval_loaders, make_pretrain_loader, num_classes_of

    pl.seed_everything(cfg["seed"], workers=True)
    output_dir = Path(cfg["output_dir"])
    output_dir.mkdir(parents=True, exist_ok=True)
    data = cfg["data"]
    train_loader = make_pretrain_loader(data, cfg["augmentations"], seed=cfg["seed"])
    probe_train, probe_val = make_eval_loaders(data)
    num_classes = num_classes_of(data)
    trainer_kwargs = dict(cfg["trainer"])
    devices = trainer_kwargs.get("devices", 1)
    num_devices = devices if isinstance(devices, int) and devices > 0 else 1
    model = build_method(cfg, num_classes, num_devices=num_devices)
    if init_from is not None:
        state = torch.load(init_from, map_location="cpu", weights_only=False)["state_dict"]
        missing, unexpected = model.load_state_dict(state, strict=False)
        if [k for k in missing if k != "qscore_discriminative"] or unexpected:
            raise ConfigError(f"--from {init_from}: checkpoint does not match the config's method/backbone "
                              f"(missing {missing[:5]}, unexpected {unexpected[:5]})")

    qcfg = cfg["qscore"]
    band = tuple(qcfg["band"])
    exact = qcfg["statistics"] == "dataloader"
    seed_loader = probe_train if (init_from is not None or exact) else None
    history = LossHistory()
    callbacks: list[pl.Callback] = [
        ActivationStatisticsCallback(eps=qcfg["eps"], band=band, dataloader=seed_loader, exact=exact),
        QScoreProbeCallback(probe_train, probe_val, every_n_epochs=cfg["probe"]["every_n_epochs"],
                            eps=qcfg["eps"], band=band, out_dir=str(output_dir / "probe"),
                            report_kwargs={"probe_kwargs": {"max_iter": cfg["probe"]["max_iter"],
                                                            "weight_decay": cfg["probe"]["weight_decay"]},
                                           "class_names": dataset_class_names(probe_train.dataset)}),
        pl.callbacks.ModelCheckpoint(dirpath=str(output_dir / "checkpoints"), save_last=True),
        pl.callbacks.LearningRateMonitor(logging_interval="epoch"),
    ]
    if record_loss:
        callbacks.append(history)
    callbacks.extend(extra_callbacks)
    logger = _logger(cfg, output_dir)
    trainer_kwargs.setdefault("log_every_n_steps", 10)
    trainer = pl.Trainer(callbacks=callbacks, logger=logger, default_root_dir=str(output_dir), **trainer_kwargs)
    trainer.fit(model, train_dataloaders=train_loader, ckpt_path=resume)
    checkpoint = output_dir / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(str(checkpoint))
    probe = callbacks[1].last_report
    summary = {
        "output_dir": str(output_dir),
        "checkpoint": str(checkpoint),
        "probe_dir": str(output_dir / "probe"),
        "global_step": trainer.global_step,
        "num_discriminative": int(model.qscore_discriminative.sum()),
        "probe": {k: probe.get(k) for k in ("auroc", "auprc", "accuracy", "num_discriminative")} if probe else None,
        "dataset": getattr(train_loader.dataset, "name", data["dataset"]),
    }
    if cfg["wandb"]["enabled"]:
        summary["wandb_dir"] = str(getattr(logger.experiment, "dir", output_dir / "wandb"))
    if record_loss:
        summary["losses"] = history.losses
    return summary
