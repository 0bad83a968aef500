"""solo-qscore: Q-Score (Kalibhat et al., AAAI 2024) and IFM (Robinson et al., NeurIPS 2021) for solo-learn.

The core below is plain PyTorch (plus torchmetrics); it imports and works without solo-learn.
"""

from solo_qscore.core.activations import highly_activating
from solo_qscore.core.discriminative import (
    discriminative_mask,
    feature_ranks,
    lower_tail_mask,
    random_mask,
    upper_tail_mask,
)
from solo_qscore.core.qscore import q_score
from solo_qscore.core.regularizer import (
    RegularizerTerms,
    TermGradientNorms,
    lasso_penalty,
    qscore_regularizer,
    qscore_regularizer_terms,
    regularizer_term_gradient_norms,
)
from solo_qscore.core.statistics import ActivationStatistics
from solo_qscore.losses.hard_negatives import hard_negative_infonce, hard_negative_simclr_loss, hard_negative_weights
from solo_qscore.losses.ifm import IFM_METHODS, ifm_moco_loss, ifm_nnclr_loss, ifm_simclr_loss

__version__ = "0.1.0"

__all__ = [
    "ActivationStatistics",
    "IFM_METHODS",
    "RegularizerTerms",
    "TermGradientNorms",
    "discriminative_mask",
    "feature_ranks",
    "hard_negative_infonce",
    "hard_negative_simclr_loss",
    "hard_negative_weights",
    "highly_activating",
    "ifm_moco_loss",
    "ifm_nnclr_loss",
    "ifm_simclr_loss",
    "lasso_penalty",
    "lower_tail_mask",
    "q_score",
    "qscore_regularizer",
    "qscore_regularizer_terms",
    "random_mask",
    "regularizer_term_gradient_norms",
    "upper_tail_mask",
]
