"""Lightning callback: activation statistics each epoch, and the discriminative set they give.

Hooks:
    ``on_train_batch_end``: add the batch's backbone features to an
    :class:`~solo_qscore.ActivationStatistics` metric (the features the training step already
    computed: no extra forward pass), with the batch's Q under the current set.
    ``on_train_epoch_end``: compute :math:`A_j` (summed across DDP processes), the discriminative
    set :math:`D`, push :math:`D` into the module's ``qscore_discriminative`` buffer, and log
    ``qscore/num_discriminative``, ``qscore/mean_active``, ``qscore/q_mean`` and the Q quantiles of the
    report (``qscore/q_p05`` ... ``qscore/q_p95``, :data:`~solo_qscore.core.qscore.Q_QUANTILES`) (and,
    with a wandb logger, the sorted :math:`A_j` curve with the band and a Q histogram).
    ``on_train_start``: with a ``dataloader``, seed :math:`D` by one pass over it when the module
    has none yet (further-training a pre-trained encoder).

With ``dataloader`` given and ``exact=True``, the epoch statistics come from a pass over that
loader (no augmentation, as the paper does on the train set) instead of the training crops.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from solo_qscore.adapters.lightning import CALLBACK_BASES, rank_zero_warn, wandb_loggers
from solo_qscore.callbacks.batch_features import TrainingStepFeatures
from solo_qscore.core.discriminative import band_ranks, discriminative_mask
from solo_qscore.core.qscore import q_quantiles, quantile_log_name
from solo_qscore.core.statistics import ActivationStatistics
from solo_qscore.probe.backbone import find_backbone
from solo_qscore.probe.features import extract_features

BUFFER = "qscore_discriminative"


class ActivationStatisticsCallback(*CALLBACK_BASES):
    """Accumulates :math:`A_j` each epoch and refreshes the discriminative set (docs/CONVENTIONS.md §3-4).

    Args:
        eps: threshold of the highly activating sets (default 4, as in the Q-Score paper).
        band: percentile band ``(low, high)`` of the discriminative set (default ``(50, 95)``).
        dataloader: optional loader of ``(X, Y)`` without augmentation, for seeding and ``exact``.
        exact: compute the epoch statistics from ``dataloader`` instead of the training crops.
    """

    def __init__(self, eps: float = 4.0, band: tuple[float, float] = (50.0, 95.0),
                 dataloader: Optional[Any] = None, exact: bool = False) -> None:
        super().__init__()
        if exact and dataloader is None:
            raise ValueError("exact=True needs a dataloader of the train set without augmentation")
        discriminative_mask(torch.zeros(2), *band)  # validates the band now, not at epoch end
        self.eps, self.band = float(eps), (float(band[0]), float(band[1]))
        self.dataloader, self.exact = dataloader, exact
        self.metric: Optional[ActivationStatistics] = None
        self.discriminative: Optional[Tensor] = None
        self.frequencies: Optional[Tensor] = None
        self._q: list[Tensor] = []
        self.features = TrainingStepFeatures()
        self._pending_state: Optional[dict] = None
        self._epoch: Optional[int] = None  # epoch whose partial counts the metric holds

    # -- helpers ---------------------------------------------------------------------------
    def _ensure_metric(self, num_features: int, device: torch.device) -> ActivationStatistics:
        if self.metric is None or self.metric.num_features != num_features:
            self.metric = ActivationStatistics(num_features, self.eps).to(device)
            if self._pending_state is not None:
                for name in ("counts", "num_samples", "num_active", "num_nonfinite"):
                    getattr(self.metric, name).copy_(self._pending_state[name])
                self._pending_state = None
        return self.metric

    def _push(self, pl_module: Any, discriminative: Tensor) -> None:
        self.discriminative = discriminative.detach().cpu()
        buffer = getattr(pl_module, BUFFER, None)
        if isinstance(buffer, Tensor):
            buffer.copy_(discriminative.to(buffer.device))

    def _discriminative_on(self, device: torch.device) -> Tensor:
        # one host-to-device copy per new set, not one per training step
        cached = getattr(self, "_discriminative_cache", None)
        if cached is None or cached[0] is not self.discriminative or cached[1].device != device:
            self._discriminative_cache = (self.discriminative, self.discriminative.to(device))
        return self._discriminative_cache[1]

    def _statistics_pass(self, pl_module: Any) -> ActivationStatistics:
        feats, _ = extract_features(find_backbone(pl_module), self.dataloader, pl_module.device)
        # every process has passed over the whole loader: no need to sum across processes
        metric = ActivationStatistics(feats.shape[1], self.eps, sync_on_compute=False).to(pl_module.device)
        metric.update(feats)
        return metric

    # -- hooks -----------------------------------------------------------------------------
    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if not self.exact:
            self.features.attach(pl_module)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self.features.detach()

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        buffer = getattr(pl_module, BUFFER, None)
        has_set = isinstance(buffer, Tensor) and bool(buffer.any())
        if self.dataloader is not None and not has_set and self.discriminative is None:
            metric = self._statistics_pass(pl_module)
            self.frequencies = metric.compute().cpu()
            self._push(pl_module, discriminative_mask(self.frequencies, *self.band))
        elif has_set and self.discriminative is None:
            self.discriminative = buffer.detach().cpu()
        self._finish_restored_epoch(trainer, pl_module)

    def _finish_restored_epoch(self, trainer: Any, pl_module: Any) -> None:
        # A checkpoint saved after the last batch of an epoch (``every_n_train_steps``) holds that
        # epoch's full counts, but Lightning does not rerun ``on_train_epoch_end`` when it resumes
        # into the next epoch: compute that epoch's set now rather than mixing it into the next one.
        # zero counts: saved after that epoch's own reset (by a version that kept the epoch), nothing to finish
        if (self._pending_state is None or self._epoch is None or trainer.current_epoch <= self._epoch
                or int(self._pending_state["num_samples"]) == 0):
            return
        counts = self._pending_state["counts"]
        metric = self._ensure_metric(counts.numel(), pl_module.device)
        try:
            self.frequencies = metric.compute().detach().cpu()
            self._push(pl_module, discriminative_mask(self.frequencies, *self.band))
        except ValueError as err:
            rank_zero_warn(f"activation statistics of the restored epoch skipped, discriminative set unchanged: {err}")
        metric.reset()

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._q = []
        self._epoch = trainer.current_epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.exact:
            return
        h = self.features.take(pl_module)
        if h is None:
            return
        metric = self._ensure_metric(h.shape[1], h.device)
        if self.discriminative is not None:
            self._q.append(metric.update_and_score(h, self._discriminative_on(h.device)))
        else:
            metric.update(h)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        metric = self._statistics_pass(pl_module) if self.exact else self.metric
        if metric is None:
            return
        try:
            frequencies = metric.compute()
        except ValueError as err:  # NaN/Inf representations or no samples: keep the current set
            rank_zero_warn(f"activation statistics skipped this epoch, discriminative set unchanged: {err}")
            metric.reset()
            self._epoch = None
            return
        self.frequencies = frequencies.detach().cpu()
        discriminative = discriminative_mask(self.frequencies, *self.band)
        self._push(pl_module, discriminative)
        num_samples, num_active = metric.num_samples.double(), metric.num_active.double()
        if trainer.world_size > 1 and not self.exact:  # compute() synced A; these are still per-process
            num_samples = trainer.strategy.reduce(num_samples, reduce_op="sum")
            num_active = trainer.strategy.reduce(num_active, reduce_op="sum")
        logs = {
            "qscore/num_discriminative": float(discriminative.sum()),
            "qscore/mean_active": float(num_active) / float(num_samples) if float(num_samples) else 0.0,
            "qscore/num_samples": float(num_samples),
        }
        q = torch.cat(self._q).float().cpu() if self._q else None
        if q is not None:
            logs["qscore/q_mean"] = float(q.mean())  # the report's quantiles (core.qscore.Q_QUANTILES)
            logs.update({f"qscore/{quantile_log_name(p)}": value for p, value in q_quantiles(q).items()})
        pl_module.log_dict(logs, rank_zero_only=True)
        self._log_wandb(trainer, q=q)
        # reset here, not at epoch start: a checkpoint taken mid-epoch keeps its partial counts; one
        # taken after this (ModelCheckpoint's default) holds no epoch to finish on resume
        metric.reset()
        self._epoch = None
        self._q = []

    def _log_wandb(self, trainer: Any, q: Optional[Tensor]) -> None:
        if trainer.global_rank != 0:
            return
        for logger in wandb_loggers(trainer):
            import wandb

            from solo_qscore.plotting import activation_frequency_figure

            ranks = band_ranks(self.frequencies.numel(), *self.band)
            fig = activation_frequency_figure(self.frequencies, ranks, self.band, self.eps)
            payload = {"qscore/activation_frequency": wandb.Image(fig)}  # Lightning logs "epoch" itself
            if q is not None and q.numel():
                payload["qscore/q_histogram"] = wandb.Histogram(q.numpy())
            logger.experiment.log(payload)
            import matplotlib.pyplot as plt

            plt.close(fig)

    # -- checkpoint state ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"eps": self.eps, "band": self.band, "epoch": self._epoch,
                                 "discriminative": self.discriminative, "frequencies": self.frequencies}
        if self.metric is not None:
            for name in ("counts", "num_samples", "num_active", "num_nonfinite"):
                state[name] = getattr(self.metric, name).detach().cpu().clone()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.discriminative = state_dict.get("discriminative")
        self.frequencies = state_dict.get("frequencies")
        self._epoch = state_dict.get("epoch")
        if "counts" in state_dict:
            self._pending_state = {k: state_dict[k] for k in ("counts", "num_samples", "num_active", "num_nonfinite")}
            self.metric = None
