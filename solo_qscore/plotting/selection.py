"""Which checkpoint each label-free metric prefers, and whether probe accuracy agrees (``solo-qscore rank``).

One panel per metric. With probe accuracy: the metric (x) against the accuracy (y, shared by all panels),
one colour and marker per group (e.g. the method), a ring on the checkpoint the metric picks and Kendall's
tau in the title, so a glance says which metrics rank like accuracy. Without accuracy: the metric's value
per checkpoint (checkpoints on a shared x axis), the checkpoint it prefers highlighted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from solo_qscore.analysis.selection import METRIC_DIRECTIONS, oriented_score, preferred_index
from solo_qscore.plotting.style import COLORS, as_array, new_figure, no_data, style_axes

__all__ = ["selection_figure"]

GROUP_COLORS = ("#2166ac", "#d6604d", "#1b7837", "#762a83", "#e08214", "#8c510a", "#35978f", "#7f7f7f")
GROUP_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")
HIGHLIGHT = "#222222"
PREFERRED_BAND = "#fde0b6"


def _direction(name: str) -> str:
    return METRIC_DIRECTIONS.get(name, "higher")


def _score(name: str, values: np.ndarray) -> np.ndarray:
    """Higher-is-better values; a metric not in METRIC_DIRECTIONS is read as higher-is-better."""
    return oriented_score(name, values) if name in METRIC_DIRECTIONS else values


def _signed(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:+.2f}"


def _tau_line(name: str, correlations: Sequence[dict] | None) -> str:
    """``Kendall τ = +0.43 [+0.10, +0.70]`` of the metric's "all" row; "" without one."""
    row = next((r for r in correlations or () if r.get("metric") == name and r.get("group") == "all"), None)
    if row is None:
        return ""
    ci = row.get("kendall_ci") or [None, None]
    return f"\nKendall τ = {_signed(row.get('kendall_tau'))}  [{_signed(ci[0])}, {_signed(ci[1])}]"


def _groups(groups: Sequence[str] | None, n: int) -> list[tuple[str, np.ndarray, str, str]]:
    """(name, members, colour, marker) per distinct group, in order of first appearance."""
    labels = ["all"] * n if groups is None else [str(g) for g in groups]
    if len(labels) != n:
        raise ValueError(f"groups has {len(labels)} entries for {n} checkpoints")
    names = list(dict.fromkeys(labels))
    return [(g, np.array([label == g for label in labels]), GROUP_COLORS[k % len(GROUP_COLORS)],
             GROUP_MARKERS[k % len(GROUP_MARKERS)]) for k, g in enumerate(names)]


def _checked(metrics: Mapping[str, Sequence[float]], labels: Sequence[str] | None, n_hint: int | None):
    values = {name: as_array(v).ravel() for name, v in metrics.items()}
    if not values:
        raise ValueError("no metric to draw")
    n = n_hint if n_hint is not None else next(iter(values.values())).size
    wrong = {name: v.size for name, v in values.items() if v.size != n}
    if wrong:
        raise ValueError(f"every metric needs one value per checkpoint ({n}): {wrong}")
    names = [f"#{i}" for i in range(n)] if labels is None else [str(label) for label in labels]
    if len(names) != n:
        raise ValueError(f"labels has {len(names)} entries for {n} checkpoints")
    return values, n, names


def _group_handles(groups) -> list[Line2D]:
    return [Line2D([], [], ls="", marker=marker, color=color, label=g) for g, _, color, marker in groups]


def _label_pick(ax: Axes, label: str, x: float, y: float) -> None:
    """The picked checkpoint's name beside its ring, on the side with room (inside the panel)."""
    ax.margins(x=0.08, y=0.1)
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    right = (x - x0) / (x1 - x0) > 0.5 if x1 > x0 else False
    above = (y - y0) / (y1 - y0) < 0.5 if y1 > y0 else True
    ax.annotate(label, (x, y), xytext=(-9 if right else 9, 8 if above else -8), textcoords="offset points",
                ha="right" if right else "left", va="bottom" if above else "top", fontsize=7, color=HIGHLIGHT)


def _scatter_panel(ax: Axes, name: str, x: np.ndarray, acc: np.ndarray, groups, names: list[str],
                   tau: str) -> None:
    style_axes(ax)
    ax.set_title(f"{name} ({_direction(name)} is better){tau}", fontsize=9)
    if not np.isfinite(x).any():
        no_data(ax, "not defined for any checkpoint")
        return
    for _, members, color, marker in groups:
        ax.scatter(x[members], acc[members], s=34, color=color, marker=marker, edgecolors="white",
                   linewidths=0.5, alpha=0.9, zorder=3)
    if name == "alpha_req":
        ax.axvline(1.0, color=COLORS["chance"], ls="--", lw=1)
    if np.isfinite(acc).any():
        ax.axhline(np.nanmax(acc), color=COLORS["chance"], ls=":", lw=1)
    picked = preferred_index(_score(name, x), acc)
    if picked is not None:
        ax.scatter([x[picked]], [acc[picked]], s=150, facecolors="none", edgecolors=HIGHLIGHT, linewidths=1.4,
                   zorder=4)
        _label_pick(ax, names[picked], x[picked], acc[picked])
    ax.tick_params(labelsize=7)


def _with_accuracy(values: dict[str, np.ndarray], acc: np.ndarray, groups, names: list[str],
                   correlations: Sequence[dict] | None) -> Figure:
    k = len(values)
    ncols = min(4, k)
    nrows = -(-k // ncols)
    fig = new_figure(max(3.2 * ncols, 6.0), 2.8 * nrows + 0.9)
    axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel()
    for ax in axes[k:]:
        fig.delaxes(ax)
    for ax, (name, x) in zip(axes, values.items()):
        _scatter_panel(ax, name, x, acc, groups, names, _tau_line(name, correlations))
    for ax in axes[:k:ncols]:
        ax.set_ylabel("probe accuracy", fontsize=8)
    handles = _group_handles(groups) if len(groups) > 1 else []
    handles += [Line2D([], [], ls="", marker="o", markersize=10, markerfacecolor="none", color=HIGHLIGHT,
                       label="the checkpoint the metric picks"),
                Line2D([], [], ls=":", color=COLORS["chance"], label="best probe accuracy")]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), max(2, 2 * ncols)), fontsize=8,
               frameon=False)
    fig.suptitle(f"Label-free metrics vs probe accuracy, {acc.size} checkpoints{' ' if ncols > 2 else chr(10)}"
                 "(τ > 0: the metric ranks like accuracy)", fontsize=11)
    return fig


def _preference_panel(ax: Axes, name: str, y: np.ndarray, groups, names: list[str]) -> None:
    style_axes(ax)
    picked = preferred_index(_score(name, y))
    preferred = f": prefers {names[picked]}" if picked is not None else ""
    ax.set_title(f"{name} ({_direction(name)} is better){preferred}", fontsize=9, loc="left")
    if picked is None:
        no_data(ax, "not defined for any checkpoint")
        ax.set_yticks([])
        return
    ax.axvspan(picked - 0.4, picked + 0.4, color=PREFERRED_BAND, zorder=0)
    xs = np.arange(y.size)
    for _, members, color, marker in groups:
        ax.scatter(xs[members], y[members], s=30, color=color, marker=marker, zorder=3)
    ax.scatter([picked], [y[picked]], s=150, facecolors="none", edgecolors=HIGHLIGHT, linewidths=1.4, zorder=4)
    ax.margins(y=0.18)
    if name == "alpha_req":
        ax.axhline(1.0, color=COLORS["chance"], ls="--", lw=1)
    ax.tick_params(labelsize=7)


def _without_accuracy(values: dict[str, np.ndarray], n: int, groups, names: list[str]) -> Figure:
    k = len(values)
    fig = new_figure(max(6.5, 2.0 + 0.32 * n), 1.45 * k + 1.6)
    axes = fig.subplots(k, 1, sharex=True, squeeze=False).ravel()
    for ax, (name, y) in zip(axes, values.items()):
        _preference_panel(ax, name, y, groups, names)
    axes[-1].set_xticks(np.arange(n), names, rotation=60, ha="right", fontsize=7)
    axes[-1].set_xlim(-0.6, n - 0.4)
    if len(groups) > 1:
        handles = _group_handles(groups)
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), fontsize=8,
                   frameon=False)
    fig.suptitle(f"Which of {n} checkpoints each label-free metric prefers (ringed)", fontsize=11)
    return fig


def selection_figure(
    metrics: Mapping[str, Sequence[float]],
    accuracy: Sequence[float] | None,
    groups: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    correlations: Sequence[dict] | None = None,
) -> Figure:
    """One panel per metric: does each label-free metric rank the checkpoints like probe accuracy?

    ``metrics`` maps a metric name (:data:`~solo_qscore.analysis.selection.METRIC_DIRECTIONS`; another
    name is read as higher-is-better) to one value per checkpoint; ``groups`` (e.g. the method) colours the
    points, ``labels`` names the checkpoints (``#0``, ``#1``, ... without). With ``accuracy``: metric (x) vs
    probe accuracy (y, shared), up to 4 panels a row, the metric's pick ringed and labelled (ties: the worst
    accuracy, as :func:`~solo_qscore.analysis.selection.selection_regret`), the best accuracy dotted, and
    Kendall's tau with its interval from the ``"all"`` row of ``correlations``
    (:func:`~solo_qscore.analysis.selection.rank_correlations`) in the title. Without: one row per metric,
    its value per checkpoint over the shared checkpoint axis (the metrics' scales differ, so each keeps its
    own y axis), the preferred checkpoint ringed on a band and named in the title. α-ReQ gets a dashed line at
    1, its good regime. NaN values are not drawn and never picked.
    """
    acc = None if accuracy is None else as_array(accuracy).ravel()
    values, n, names = _checked(metrics, labels, None if acc is None else acc.size)
    group_list = _groups(groups, n)
    if acc is None:
        return _without_accuracy(values, n, group_list, names)
    return _with_accuracy(values, acc, group_list, names, correlations)
