"""Every matplotlib figure, one module per concept; each builder takes arrays and returns a Figure.

``style`` (colours, the Agg figure), ``separation`` (PR/ROC curves, Q histograms), ``features``
(activation frequencies, class heat maps, associations), ``compression``, ``comparison`` (before vs
after), ``images`` (thumbnails), ``loss_readout`` (InfoNCE vs readout error), ``gradcam`` (heat maps
over images: ``explain``, ``miou``), ``ifm_neighbours`` (IFM's perturbations by retrieval),
``robust_features`` (probes on D, D_R, D_NR), ``selection`` (label-free metrics vs probe accuracy
over checkpoints), ``save`` (PNG files and bytes). The plotting layer
imports no report: the report turns itself into these arrays (:mod:`solo_qscore.report.figures`), the
analysis commands likewise.
"""

from solo_qscore.plotting.comparison import regularization_comparison_figure
from solo_qscore.plotting.compression import compression_figure
from solo_qscore.plotting.features import (
    activation_frequency_figure,
    associations_figure,
    discriminative_heatmap_figure,
)
from solo_qscore.plotting.gradcam import explain_figure, miou_figure
from solo_qscore.plotting.ifm_neighbours import neighbours_figure
from solo_qscore.plotting.images import display_image, q_extremes_figure
from solo_qscore.plotting.loss_readout import loss_readout_figure
from solo_qscore.plotting.robust_features import robust_features_figure
from solo_qscore.plotting.save import figure_to_png_bytes, save_figure_atomic, save_figure_quantized
from solo_qscore.plotting.selection import selection_figure
from solo_qscore.plotting.separation import pr_curve_figure, q_histogram_figure, roc_curve_figure
from solo_qscore.plotting.style import COLORS

__all__ = [
    "COLORS",
    "activation_frequency_figure",
    "associations_figure",
    "compression_figure",
    "discriminative_heatmap_figure",
    "display_image",
    "explain_figure",
    "figure_to_png_bytes",
    "loss_readout_figure",
    "miou_figure",
    "neighbours_figure",
    "pr_curve_figure",
    "q_extremes_figure",
    "q_histogram_figure",
    "regularization_comparison_figure",
    "robust_features_figure",
    "roc_curve_figure",
    "save_figure_atomic",
    "save_figure_quantized",
    "selection_figure",
]
