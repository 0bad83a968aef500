"""The compression figure (solo_qscore.plotting.compression)."""

from __future__ import annotations

from solo_qscore.plotting.compression import compression_figure


def test_every_method_against_the_number_of_kept_features():
    compression = {"sizes": [4, 8, 16], "band": [0.5, 0.6, 0.7], "random_mean": [0.3, 0.5, 0.7],
                   "random_std": [0.05, 0.05, 0.0], "lower_tail": [0.2, 0.4, 0.7], "upper_tail": [0.4, 0.5, 0.7],
                   "pca": [0.6, 0.65, None], "full_accuracy": 0.7, "num_features": 16, "num_discriminative": 8,
                   "num_random_seeds": 2}
    fig = compression_figure(compression)
    labels = [line.get_label() for line in fig.axes[0].lines]
    assert labels[:5] == ["random subsets (mean ± std, 2 seeds)", "discriminative band", "PCA (top-k components)",
                          "lower tail of A", "upper tail of A"]
    assert "all features (70.0%)" in labels
    band = fig.axes[0].lines[1]
    assert list(band.get_xdata()) == [4, 8, 16] and list(band.get_ydata()) == [50.0, 60.0, 70.0]
    assert "|D| = 8" in [t.get_text() for t in fig.axes[0].texts]
    empty = compression_figure({"sizes": []})
    assert "no compression sizes" in empty.axes[0].texts[0].get_text()
