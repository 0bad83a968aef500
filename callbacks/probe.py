"""Lightning callback: the Q-Score probe every k epochs and at the end of training.

Hooks:
    ``on_train_epoch_end`` (every ``every_n_epochs``, 0 = never) and ``on_train_end``: extract
    frozen backbone features of ``train_loader`` and ``val_loader`` (no augmentation), fit a linear
    probe (full-batch L-BFGS on cached features), compute :math:`A`/:math:`D` on train and
    :math:`Q` on validation, and log ``probe/auroc``, ``probe/auprc``, ``probe/accuracy`` (the
    AUPRC base rate), the mirrored misclassification view, RankMe and the std of normalised
    embeddings; with a wandb logger also the PR/ROC curves and report figures. With ``out_dir``
    the report (``probe.json``, ``samples.csv`` with Q, the probe's prediction and confidence of
    every validation sample, and PNGs, among them ``q_extremes.png`` with the images of the lowest-
    and highest-Q validation samples) is written there, atomically, at the end of training.

Only global rank 0 logs and writes the report. Under DDP every rank computes it (same full
loaders, so the same result) so the ranks stay in step instead of waiting at the next collective;
the probe is cheap next to training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from solo_qscore.adapters.lightning import CALLBACK_BASES, wandb_loggers
from solo_qscore.callbacks.activation_statistics import extract_features, find_backbone
from solo_qscore.core.collapse import normalized_embedding_std, rankme
from solo_qscore.report.result import RUN_KEYS, SCALAR_KEYS, QScoreReport


def autocast_dtype(trainer: Any, device: Any) -> Optional[Any]:
    """The autocast dtype of the run's precision (``bf16-mixed`` -> bfloat16, ``16-mixed`` on a GPU ->
    float16), for feature extraction; ``None`` (float32) otherwise."""
    import torch

    precision = str(getattr(trainer, "precision", "32-true"))
    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16") and getattr(device, "type", "cpu") == "cuda":
        return torch.float16
    return None


class QScoreProbeCallback(*CALLBACK_BASES):
    """Runs the Q-Score probe report during and after training (docs/CONVENTIONS.md §7).

    Args:
        train_loader, val_loader: loaders of ``(X, Y)`` without augmentation.
        every_n_epochs: run after every k-th epoch too (0: only at the end of training).
        eps, band: Q-Score settings (the paper's defaults 4 and (50, 95)).
        out_dir: write ``probe.json``, ``samples.csv`` and the figures there at the end of training.
        report_kwargs: passed to :func:`solo_qscore.report.qscore_report`.
    """

    def __init__(self, train_loader, val_loader, every_n_epochs: int = 0, eps: float = 4.0,
                 band: tuple[float, float] = (50.0, 95.0), out_dir: Optional[str] = None,
                 report_kwargs: Optional[dict[str, Any]] = None) -> None:
        super().__init__()
        if every_n_epochs < 0:
            raise ValueError(f"every_n_epochs must be >= 0, got {every_n_epochs}")
        self.train_loader, self.val_loader = train_loader, val_loader
        self.every_n_epochs, self.eps, self.band = every_n_epochs, eps, tuple(band)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.report_kwargs = dict(report_kwargs or {})
        self.last_report: Optional[QScoreReport] = None
        self.history: list[dict[str, Any]] = []

    def run_probe(self, trainer: Any, pl_module: Any,
                  final: bool = True) -> Optional[QScoreReport]:
        from solo_qscore.report.qscore_report import qscore_report

        backbone = find_backbone(pl_module)
        dtype = autocast_dtype(trainer, pl_module.device)
        train_h, train_y = extract_features(backbone, self.train_loader, pl_module.device, autocast_dtype=dtype)
        val_h, val_y = extract_features(backbone, self.val_loader, pl_module.device, autocast_dtype=dtype)
        kwargs = dict(self.report_kwargs)
        if not final:  # the compression study (~90 probe fits) only at the end of training
            kwargs["compression_fractions"] = None
        report = qscore_report(train_h, train_y, val_h, val_y, eps=self.eps, band=self.band, **kwargs)
        report.rankme = rankme(val_h)
        report.embedding_std = normalized_embedding_std(val_h)
        report.epoch = trainer.current_epoch
        report.global_step = trainer.global_step
        if trainer.global_rank != 0:
            return None
        self.last_report = report
        self.history.append({k: getattr(report, k) for k in SCALAR_KEYS + RUN_KEYS})
        return report

    def _log(self, trainer: Any, report: QScoreReport, final: bool) -> None:
        scalars = {f"probe/{k}": float(v) for k, v in report.scalars().items()}
        # at the end of training a wandb logger gets the scalars in the same ``log`` call as the
        # curves and figures: one history row, each key once per step
        full = wandb_loggers(trainer) if final else []
        for logger in trainer.loggers:
            if not any(logger is w for w in full):
                logger.log_metrics(scalars, step=trainer.global_step)
        for logger in full:
            from solo_qscore.report.qscore_report import log_report_to_wandb

            log_report_to_wandb(report, logger, step=trainer.global_step, metrics=scalars)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        k = self.every_n_epochs
        if k and (trainer.current_epoch + 1) % k == 0:
            report = self.run_probe(trainer, pl_module, final=False)
            if report is not None:
                self._log(trainer, report, final=False)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        report = self.run_probe(trainer, pl_module)
        if report is None:
            return
        self._log(trainer, report, final=True)
        if self.out_dir is None:
            return
        from solo_qscore.report.qscore_report import write_report

        write_report(report, self.out_dir, images=_dataset_in_order(self.val_loader))
        for logger in wandb_loggers(trainer):  # the folder as written (probe.json, samples.csv, PNGs)
            import wandb

            run = logger.experiment
            metadata = {**report.scalars(), "eps": report.eps, "epoch": report.epoch,
                        "global_step": report.global_step}
            artifact = wandb.Artifact(f"qscore-report-{run.id}", type="qscore-report",
                                      description="solo-qscore probe report", metadata=metadata)
            artifact.add_dir(str(self.out_dir))
            run.log_artifact(artifact, aliases=["latest", f"step-{trainer.global_step}"])

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))


def _dataset_in_order(loader) -> Optional[Any]:
    """The loader's dataset when the loader reads it in order (so feature row i is dataset item i), else None."""
    from torch.utils.data import SequentialSampler

    dataset = getattr(loader, "dataset", None)
    if dataset is None or not hasattr(dataset, "__getitem__"):
        return None
    sampler = getattr(loader, "sampler", None)
    return dataset if sampler is None or isinstance(sampler, SequentialSampler) else None
