"""Lightning callback: label-free metrics of the training features each epoch (RankMe, α-ReQ, embedding std).

Hooks:
    ``on_train_batch_end``: add the batch's backbone features to a
    :class:`~solo_qscore.core.label_free.LabelFreeStatistics` (the features the training step already
    computed: the module's ``qscore_batch_features``, or a forward hook on its backbone; no extra
    forward pass; one float64 gram per step).
    ``on_train_epoch_end``: compute the metrics over every process's rows and log ``label_free/rankme``,
    ``label_free/alpha_req``, ``label_free/embedding_std``; then reset.

The features are the training crops (augmented views), as RankMe's authors track it during training.
An epoch with NaN/Inf features, or fewer than 2 rows, logs nothing and warns; an α-ReQ that is undefined
(a collapsed representation: RankMe about 1, std about 0) is left out of the logs with a warning. A run
resumed in the middle of an epoch logs that epoch over the steps after the resume (the sums are not
checkpointed: O(r²) floats that a later epoch makes whole again).
"""

from __future__ import annotations

import math
from typing import Any, Optional

from solo_qscore.adapters.lightning import CALLBACK_BASES, rank_zero_warn
from solo_qscore.callbacks.batch_features import TrainingStepFeatures
from solo_qscore.core.label_free import LabelFreeStatistics

#: the logged keys, ``label_free/<key of LabelFreeStatistics.compute()>``
LOGGED = ("rankme", "alpha_req", "embedding_std")


class LabelFreeMetricsCallback(*CALLBACK_BASES):
    """Logs RankMe, α-ReQ and the std of the L2-normalised training features each epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.metric: Optional[LabelFreeStatistics] = None
        self.last: Optional[dict[str, float]] = None  # the values of the last epoch that computed
        self.features = TrainingStepFeatures()

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.features.attach(pl_module)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self.features.detach()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        h = self.features.take(pl_module)
        if h is None:
            return
        if self.metric is None or self.metric.num_features != h.shape[1]:
            self.metric = LabelFreeStatistics(h.shape[1]).to(h.device)
        self.metric.update(h)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.metric is None:
            return
        try:
            values = self.metric.compute()  # summed over every process's rows (torchmetrics sync)
        except ValueError as err:  # NaN/Inf features or fewer than 2 rows
            rank_zero_warn(f"label-free metrics skipped this epoch: {err}")
            self.metric.reset()
            return
        self.last = values
        if math.isnan(values["alpha_req"]):
            rank_zero_warn("label_free/alpha_req not logged this epoch: its power-law fit is undefined "
                           "(a collapsed representation, or too few samples or features)")
        logs = {f"label_free/{key}": values[key] for key in LOGGED if not math.isnan(values[key])}
        pl_module.log_dict(logs, rank_zero_only=True)
        self.metric.reset()
