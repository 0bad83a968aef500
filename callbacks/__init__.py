"""Lightning callbacks of solo-qscore (imported as ``solo_qscore.callbacks``)."""

from solo_qscore.callbacks.activation_statistics import (
    ActivationStatisticsCallback,
    extract_features,
    find_backbone,
)
from solo_qscore.callbacks.probe import QScoreProbeCallback

__all__ = ["ActivationStatisticsCallback", "QScoreProbeCallback", "extract_features", "find_backbone"]
