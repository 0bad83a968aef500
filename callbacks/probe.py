"""Lightning callback: the Q-Score probe report every k epochs and at the end of training.

Features -> report -> logs and files: frozen features of both loaders, the report (its compression study
only at the end), RankMe and the embedding std; scalars to every logger, the full report to wandb
(:mod:`solo_qscore.report.wandb`); with ``out_dir`` the report folder at the end (and its artifact).
Only global rank 0 logs and writes; under DDP every rank computes the report (the same full loaders,
so the same result) so the ranks stay in step instead of waiting at the next collective.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from solo_qscore.adapters.lightning import CALLBACK_BASES, autocast_dtype, wandb_loggers
from solo_qscore.core.label_free import normalized_embedding_std, rankme
from solo_qscore.probe.backbone import find_backbone
from solo_qscore.probe.features import dataset_in_order, extract_features
from solo_qscore.report.build import qscore_report
from solo_qscore.report.config import ReportConfig
from solo_qscore.report.result import RUN_KEYS, SCALAR_KEYS, QScoreReport


class QScoreProbeCallback(*CALLBACK_BASES):
    """Runs the Q-Score probe report during and after training (docs/CONVENTIONS.md §7).

    Args:
        train_loader, val_loader: loaders of ``(X, Y)`` without augmentation.
        every_n_epochs: run after every k-th epoch too (0: only at the end of training).
        config: the report's settings (:class:`~solo_qscore.report.config.ReportConfig`; its defaults
            when ``None``); during training the compression study is skipped.
        out_dir: write the report folder there at the end of training.
        class_names: names of the classes (index = label) for the figures and the associations.
    """

    def __init__(self, train_loader, val_loader, every_n_epochs: int = 0, config: Optional[ReportConfig] = None,
                 out_dir: Optional[str] = None, class_names: Optional[list[str]] = None) -> None:
        super().__init__()
        if every_n_epochs < 0:
            raise ValueError(f"every_n_epochs must be >= 0, got {every_n_epochs}")
        self.train_loader, self.val_loader, self.every_n_epochs = train_loader, val_loader, every_n_epochs
        self.config = config if config is not None else ReportConfig()
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.class_names = class_names
        self.last_report: Optional[QScoreReport] = None
        self.history: list[dict[str, Any]] = []

    @property
    def state_key(self) -> str:
        """One checkpoint entry per probe (two probes with other folders or periods in one run keep theirs)."""
        return self._generate_state_key(out_dir=None if self.out_dir is None else str(self.out_dir),
                                        every_n_epochs=self.every_n_epochs)

    def run_probe(self, trainer: Any, pl_module: Any, final: bool = True) -> Optional[QScoreReport]:
        """The report of the module's backbone now (``None`` on ranks other than 0)."""
        backbone, dtype = find_backbone(pl_module), autocast_dtype(trainer, pl_module.device)
        train_h, train_y = extract_features(backbone, self.train_loader, pl_module.device, autocast_dtype=dtype)
        val_h, val_y = extract_features(backbone, self.val_loader, pl_module.device, autocast_dtype=dtype)
        config = self.config if final else self.config.replace(compression=None)  # ~90 probe fits: at the end
        report = qscore_report(train_h, train_y, val_h, val_y, config, class_names=self.class_names)
        report.rankme, report.embedding_std = rankme(val_h), normalized_embedding_std(val_h)
        report.epoch, report.global_step = trainer.current_epoch, trainer.global_step
        if trainer.global_rank != 0:
            return None
        self.last_report = report
        self.history.append({k: getattr(report, k) for k in SCALAR_KEYS + RUN_KEYS})
        return report

    def _log(self, trainer: Any, report: QScoreReport, final: bool) -> None:
        from solo_qscore.report.wandb import log_report_to_wandb

        scalars = {f"probe/{k}": float(v) for k, v in report.scalars().items()}
        # at the end of training a wandb logger gets the scalars in the same ``log`` call as the
        # curves and figures: one history row, each key once per step
        full = wandb_loggers(trainer) if final else []
        for logger in trainer.loggers:
            if not any(logger is w for w in full):
                logger.log_metrics(scalars, step=trainer.global_step)
        for logger in full:
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
        if self.out_dir is not None:
            from solo_qscore.report.wandb import log_report_artifact
            from solo_qscore.report.writer import write_report

            write_report(report, self.out_dir, images=dataset_in_order(self.val_loader))
            for logger in wandb_loggers(trainer):  # the folder as written
                log_report_artifact(logger.experiment, self.out_dir, report)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))

