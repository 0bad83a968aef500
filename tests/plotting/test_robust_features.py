"""The robust-features bars (solo_qscore.plotting.robust_features): probes on D, D_R and D_NR per step size."""

from __future__ import annotations

import math

from solo_qscore.plotting.robust_features import DPI, eps_label, robust_features_figure


def test_eps_labels():
    assert eps_label(0.01) == "0.01" and eps_label(8 / 255) == "8/255" and eps_label(0.5) == "0.5"


def test_bars_chance_and_a_step_that_never_succeeded():
    runs = [{"eps": 0.01, "accuracy_D_R": 0.5, "accuracy_D_NR": 0.25, "attack_success_rate": 1.0,
             "mean_steps_successful": 2.0},
            {"eps": 8 / 255, "accuracy_D_R": math.nan, "accuracy_D_NR": math.nan, "attack_success_rate": 0.0,
             "mean_steps_successful": math.nan}]
    fig = robust_features_figure(0.75, runs, 0.1, "toy", 32, 24)
    ax = fig.axes[0]
    assert fig.dpi == DPI
    assert [round(bar.get_height(), 6) for bar in ax.patches] == [75.0, 50.0, 25.0, 0.0, 0.0]
    assert [t.get_text() for t in ax.texts] == ["75.0", "50.0", "25.0", "n/a", "n/a"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["D (clean)", "D_R\nε=0.01", "D_NR\nε=0.01",
                                                            "D_R\nε=8/255", "D_NR\nε=8/255"]
    assert ax.lines[0].get_ydata()[0] == 10.0  # chance, dashed
    assert ax.get_title().startswith("Robust vs non-robust features: toy, 32 train / 24 clean test\n")
