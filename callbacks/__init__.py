"""Lightning callbacks of solo-qscore (imported as ``solo_qscore.callbacks``)."""

from solo_qscore.callbacks.activation_statistics import (
    ActivationStatisticsCallback,
    extract_features,
    find_backbone,
)
from solo_qscore.callbacks.bad_images import BadImagesCallback
from solo_qscore.callbacks.finite_loss import FiniteLossCallback, NonFiniteLossError
from solo_qscore.callbacks.label_free import LabelFreeMetricsCallback
from solo_qscore.callbacks.probe import QScoreProbeCallback

__all__ = ["ActivationStatisticsCallback", "BadImagesCallback", "FiniteLossCallback", "LabelFreeMetricsCallback",
           "NonFiniteLossError", "QScoreProbeCallback", "extract_features", "find_backbone"]
