r"""Which checkpoint is better without labels: how well a label-free metric ranks checkpoints like probe accuracy.

The statistics behind ``solo-qscore rank`` and ``benchmarks/bench_selection.py``: Kendall's
:math:`\tau_b` and Spearman's :math:`\rho` of a metric against probe accuracy over checkpoints, their
bootstrap intervals, and the *selection regret*, the accuracy lost by keeping the checkpoint the metric
prefers instead of the labelled best. Every metric is first turned into a higher-is-better score
(:func:`oriented_score`), so a positive :math:`\tau` always means "ranks like accuracy".

Pure NumPy; the number of checkpoints is small (tens), so the pairwise statistics use :math:`N \times N`
sign and comparison matrices instead of loops, and the bootstrap evaluates all resamples as one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

__all__ = [
    "METRIC_DIRECTIONS",
    "bootstrap_interval",
    "kendall_tau",
    "oriented_score",
    "preferred_index",
    "rank_correlations",
    "selection_regret",
    "spearman_rho",
]

#: How to read each metric ``solo-qscore rank`` produces. "closer to 1": α-ReQ (Agrawal et al., NeurIPS 2022),
#: whose good regime is a covariance spectrum decaying like :math:`k^{-\alpha}` with :math:`\alpha \approx 1`
#: (:math:`\alpha \ll 1`: noisy, nearly white features; :math:`\alpha \gg 1`: collapsed onto a few directions).
METRIC_DIRECTIONS: dict[str, str] = {
    "q_mean": "higher",
    "nonempty_fraction": "higher",
    "num_discriminative": "higher",
    "rankme": "higher",
    "lidar": "higher",
    "embedding_std": "higher",
    "alpha_req": "closer to 1",
}

_BOOTSTRAP_CHUNK = 4_000_000  # elements of one batch of B x N x N comparison matrices (32 MB of float64)


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    return x, y


def _kendall_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row pair of two ``(B, N)`` arrays (see :func:`kendall_tau`)."""
    sx = np.sign(x[:, :, None] - x[:, None, :])
    sy = np.sign(y[:, :, None] - y[:, None, :])
    concordance = (sx * sy).sum(axis=(1, 2))
    untied = np.sqrt(np.abs(sx).sum(axis=(1, 2)) * np.abs(sy).sum(axis=(1, 2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = concordance / untied
    return np.where(untied > 0, tau, np.nan)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks along the last axis; tied values share the mean of the ranks they span."""
    less = (x[..., None, :] < x[..., :, None]).sum(axis=-1)
    equal = (x[..., None, :] == x[..., :, None]).sum(axis=-1)
    return less + (equal + 1) / 2.0


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    norm = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=1) / norm
    return np.where(norm > 0, np.clip(r, -1.0, 1.0), np.nan)


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair of two ``(B, N)`` arrays (see :func:`spearman_rho`)."""
    return _pearson_rows(_average_ranks(x), _average_ranks(y))


def _one_row(rows: Callable[[np.ndarray, np.ndarray], np.ndarray], x, y) -> float:
    x, y = _pair(x, y)
    if x.size < 2 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return float("nan")
    return float(rows(x[None], y[None])[0])


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    r"""Kendall's :math:`\tau_b` of two paired samples, ties handled (as ``scipy.stats.kendalltau``).

    With :math:`s^x_{ij} = \operatorname{sign}(x_i - x_j)` and likewise :math:`s^y_{ij}`, over all ordered
    pairs :math:`i \ne j`:

    .. math:: \tau_b = \frac{\sum_{ij} s^x_{ij} s^y_{ij}}{\sqrt{\sum_{ij} |s^x_{ij}| \sum_{ij} |s^y_{ij}|}}
              = \frac{n_c - n_d}{\sqrt{(n_0 - n_1)(n_0 - n_2)}},

    :math:`n_c, n_d` the concordant and discordant pairs, :math:`n_0 = N(N-1)/2`, :math:`n_1, n_2` the pairs
    tied in :math:`x` and in :math:`y`. NaN when either input is constant (no untied pair), when there are
    fewer than 2 values, or when a value is not finite.
    """
    return _one_row(_kendall_rows, x, y)


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    r"""Spearman's :math:`\rho`: the Pearson correlation of the ranks (as ``scipy.stats.spearmanr``).

    .. math:: \rho = \frac{\sum_i (r_i - \bar r)(q_i - \bar q)}{\sqrt{\sum_i (r_i - \bar r)^2 \sum_i (q_i - \bar q)^2}},

    :math:`r_i = \#\{j : x_j < x_i\} + (\#\{j : x_j = x_i\} + 1)/2`, the 1-based rank of :math:`x_i` with
    tied values sharing the mean of the ranks they span (and :math:`q_i` likewise for :math:`y`). NaN when
    either input is constant, when there are fewer than 2 values, or when a value is not finite.
    """
    return _one_row(_spearman_rows, x, y)


_BATCHED: dict[Callable, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    kendall_tau: _kendall_rows,
    spearman_rho: _spearman_rows,
}


def _resampled_statistics(x: np.ndarray, y: np.ndarray, statistic: Callable, index: np.ndarray) -> np.ndarray:
    rows = _BATCHED.get(statistic)
    if rows is None:  # any other statistic: one call per resample
        return np.array([statistic(x[i], y[i]) for i in index], dtype=float)
    n = x.size
    chunk = max(1, _BOOTSTRAP_CHUNK // max(1, n * n))
    return np.concatenate([rows(x[index[s:s + chunk]], y[index[s:s + chunk]])
                           for s in range(0, len(index), chunk)])


def bootstrap_interval(
    x: Sequence[float],
    y: Sequence[float],
    statistic: Callable[[np.ndarray, np.ndarray], float],
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    r"""Percentile bootstrap interval of ``statistic(x, y)``, resampling the :math:`(x_i, y_i)` pairs.

    Draws ``resamples`` sets of :math:`N` pair indices with replacement (``numpy.random.default_rng(seed)``,
    so the same seed resamples the same pairs for every metric of one set of checkpoints), evaluates the
    statistic on each and returns the :math:`(1 - \text{level})/2` and :math:`(1 + \text{level})/2`
    percentiles. **Resamples where the statistic is NaN are dropped** (with few checkpoints a resample often
    repeats one pair :math:`N` times or is tied throughout, and a rank correlation of a constant is
    undefined), so the interval is over the defined resamples only; ``(nan, nan)`` when none is defined.
    :func:`kendall_tau` and :func:`spearman_rho` are evaluated on all resamples at once; any other callable
    is called once per resample with two 1-D arrays.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x, y = _pair(x, y)
    if x.size == 0:
        return float("nan"), float("nan")
    index = np.random.default_rng(seed).integers(0, x.size, size=(resamples, x.size))
    values = _resampled_statistics(x, y, statistic, index)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [50.0 * (1.0 - level), 50.0 * (1.0 + level)])
    return float(low), float(high)


def preferred_index(score: Sequence[float], accuracy: Sequence[float] | None = None,
                    higher_is_better: bool = True) -> int | None:
    """The checkpoint a score picks: its best finite value; ``None`` when no value is finite.

    Ties in the score are broken pessimistically: the tied checkpoint with the lowest ``accuracy`` (with
    ``accuracy`` given; checkpoints whose accuracy is not finite are never picked then), else the first.
    """
    s = np.asarray(score, dtype=float).ravel()
    s = s if higher_is_better else -s
    valid = np.isfinite(s)
    if accuracy is not None:
        a = np.asarray(accuracy, dtype=float).ravel()
        if a.shape != s.shape:
            raise ValueError(f"score and accuracy must have the same length, got {s.size} and {a.size}")
        valid &= np.isfinite(a)
    if not valid.any():
        return None
    tied = np.flatnonzero(valid & (s == s[valid].max()))
    if accuracy is None:
        return int(tied[0])
    return int(tied[np.argmin(a[tied])])


def selection_regret(score: Sequence[float], accuracy: Sequence[float], higher_is_better: bool = True) -> float:
    r"""The accuracy lost by keeping the checkpoint the score prefers instead of the labelled best.

    .. math:: \text{regret} = \max_k a_k - a_{\hat k}, \qquad \hat k = \arg\max_k s_k

    (:math:`\arg\min` with ``higher_is_better=False``). Ties in the score are broken pessimistically, towards
    the worst accuracy among the tied checkpoints: a metric that cannot tell them apart gets no credit for
    luck. Only checkpoints with a finite score and a finite accuracy count; NaN when there is none.
    """
    a = np.asarray(accuracy, dtype=float).ravel()
    picked = preferred_index(score, a, higher_is_better)
    if picked is None:
        return float("nan")
    s = np.asarray(score, dtype=float).ravel()
    best = a[np.isfinite(s) & np.isfinite(a)].max()
    return float(best - a[picked])


def oriented_score(name: str, values: Sequence[float]) -> np.ndarray:
    r"""Metric ``name``'s values as a higher-is-better score (:data:`METRIC_DIRECTIONS`).

    "higher": unchanged; "lower": :math:`-v`; "closer to 1" (α-ReQ): :math:`-|v - 1|`. NaN stays NaN.
    A name with a setting after ``@`` (``q_mean@eps2``: mean Q at another ε) reads as the metric before it.
    """
    v = np.asarray(values, dtype=float)
    direction = METRIC_DIRECTIONS.get(name.split("@")[0])
    if direction == "higher":
        return v.copy()
    if direction == "lower":
        return -v
    if direction == "closer to 1":
        return -np.abs(v - 1.0)
    raise ValueError(f"unknown metric {name!r}: known are {', '.join(METRIC_DIRECTIONS)}")


def _row(metric: str, group: str, score: np.ndarray, accuracy: np.ndarray, resamples: int, seed: int) -> dict:
    keep = np.isfinite(score) & np.isfinite(accuracy)
    s, a = score[keep], accuracy[keep]
    n = int(s.size)
    picked = preferred_index(s, a)
    row = {"metric": metric, "group": group, "n": n, "kendall_tau": float("nan"),
           "kendall_ci": [float("nan"), float("nan")], "spearman_rho": float("nan"),
           "spearman_ci": [float("nan"), float("nan")], "regret": selection_regret(s, a),
           "best_accuracy": float(a.max()) if n else float("nan"),
           "picked_accuracy": float(a[picked]) if picked is not None else float("nan")}
    if n >= 3:
        for point, interval, statistic in (("kendall_tau", "kendall_ci", kendall_tau),
                                           ("spearman_rho", "spearman_ci", spearman_rho)):
            row[point] = statistic(s, a)
            row[interval] = list(bootstrap_interval(s, a, statistic, resamples=resamples, seed=seed))
    return row


def rank_correlations(
    metrics: Mapping[str, Sequence[float]],
    accuracy: Sequence[float],
    groups: Sequence[str] | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> list[dict]:
    r"""How well each metric ranks the checkpoints like probe accuracy: one row per (metric, group).

    ``metrics`` maps a name of :data:`METRIC_DIRECTIONS` to one value per checkpoint, ``accuracy`` holds
    the probe accuracy of the same checkpoints and ``groups`` (optional) a group per checkpoint (e.g. the
    method). For each metric, in the order given: the row of group ``"all"``, then one row per distinct
    group in order of first appearance. Keys: ``metric``, ``group``, ``n`` (checkpoints with a finite metric
    and accuracy: the others are left out), ``kendall_tau`` and ``kendall_ci`` (its
    :func:`bootstrap_interval` as a 2-list), ``spearman_rho`` and ``spearman_ci``, ``regret``
    (:func:`selection_regret`), ``best_accuracy`` and ``picked_accuracy`` (the accuracy of the checkpoint
    the metric prefers, ties broken pessimistically).

    The correlations and the pick use :func:`oriented_score`, so a positive :math:`\tau` always means the
    metric ranks like accuracy, whatever its direction. Groups with :math:`n < 3` get NaN correlations and
    NaN intervals (two points are always perfectly ordered or perfectly reversed: no evidence); their
    regret is still computed. Every interval uses the same ``seed``: the metrics of a group are resampled
    over the same pairs.
    """
    acc = np.asarray(accuracy, dtype=float).ravel()
    labels = ["all"] * acc.size if groups is None else [str(g) for g in groups]
    if len(labels) != acc.size:
        raise ValueError(f"groups has {len(labels)} entries for {acc.size} checkpoints")
    distinct = list(dict.fromkeys(labels)) if groups is not None else []
    members = [("all", np.ones(acc.size, dtype=bool))]
    members += [(g, np.array([label == g for label in labels], dtype=bool)) for g in distinct]
    rows = []
    for name, values in metrics.items():
        score = oriented_score(name, values).ravel()
        if score.size != acc.size:
            raise ValueError(f"metric {name!r} has {score.size} values for {acc.size} checkpoints")
        rows += [_row(name, g, score[m], acc[m], resamples, seed) for g, m in members]
    return rows
