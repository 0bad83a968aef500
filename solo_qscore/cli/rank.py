r"""``solo-qscore rank CKPT... [--out DIR]``: which checkpoint is better, without labels.

For each checkpoint, on the *same* training images (no labels needed), this command scores the frozen
backbone features :math:`H \in \mathbb{R}^{N \times r}` with

* Q-Score (Kalibhat et al., AAAI 2024): :math:`A` and :math:`D` of :math:`H` itself, then the mean of
  :math:`Q_i` (eq. 1), the fraction of samples with a non-empty :math:`L_i \cap D`, and :math:`|D|`;
* RankMe (Garrido et al., ICML 2023): :math:`\exp(-\sum_k p_k \log p_k)`, :math:`p_k = \sigma_k/\lVert\sigma\rVert_1`,
  on :math:`N \ge 25{,}600` samples or all there are (``--samples``);
* LiDAR (Thilak et al., ICLR 2024): the effective rank of the LDA matrix whose classes are the
  ``--lidar-views`` augmented views (the run's own pre-training augmentation) of each of ``--lidar-images``
  images (the paper: 50 views of 1,000 images; the same views for every checkpoint);
* α-ReQ (Agrawal et al., NeurIPS 2022): the power-law decay :math:`\lambda_k \propto k^{-\alpha}` of the
  covariance spectrum (near 1 is the good regime);
* the std of the L2-normalised embeddings (lightly's collapse signal; ``~1/\sqrt r`` when healthy).

When the data has labels, also the linear-probe accuracy of each checkpoint (the library's probe: fit on
the training features, scored on the validation split) and, for every metric, Kendall's τ and Spearman's ρ
against it (oriented so that a positive value means the metric orders the checkpoints as accuracy does),
with bootstrap intervals and the accuracy lost by trusting the metric (regret).

Writes ``ranking.csv`` (one row per checkpoint), ``ranking.json`` (rows, correlations, settings) and
``ranking.png`` (metric vs accuracy, one panel per metric) and prints a one-screen summary.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

#: the label-free scores of each checkpoint, in the columns' order
METRICS: tuple[str, ...] = ("q_mean", "nonempty_fraction", "num_discriminative", "rankme", "lidar",
                            "alpha_req", "embedding_std")
#: the summary's column headers
SHORT_NAMES = {"q_mean": "mean Q", "nonempty_fraction": "L∩D≠∅", "num_discriminative": "|D|", "rankme": "RankMe",
               "lidar": "LiDAR", "alpha_req": "α-ReQ", "embedding_std": "emb. std", "accuracy": "accuracy"}
#: RankMe's recommended number of samples (Garrido et al.: at least 25,600)
RANKME_SAMPLES = 25_600


def register(subparsers) -> None:
    """Add the ``rank`` subcommand."""
    p = subparsers.add_parser(
        "rank", help="rank checkpoints without labels: Q-Score, RankMe, LiDAR, alpha-ReQ, embedding std "
                     "(and, with labels, how well each metric predicts probe accuracy)")
    p.add_argument("checkpoints", nargs="+", metavar="CKPT", help="checkpoints of `solo-qscore pretrain` (two or more)")
    p.add_argument("--out", default="rank", help="output folder (default: ./rank)")
    p.add_argument("--samples", type=int, default=RANKME_SAMPLES,
                   help=f"training images scored (default {RANKME_SAMPLES:,}, RankMe's minimum; all when fewer)")
    p.add_argument("--lidar-images", type=int, default=256, help="LiDAR's images (classes); paper 1,000")
    p.add_argument("--lidar-views", type=int, default=8, help="augmented views per LiDAR image; paper 50")
    p.add_argument("--extra-eps", type=float, nargs="*", default=[],
                   help="also score mean Q and the non-empty fraction at these eps (columns q_mean@eps2, ...); "
                        "the run's qscore.eps (paper: 4) is always scored")
    p.add_argument("--no-probe", action="store_true", help="skip the probe accuracy even when there are labels")
    p.add_argument("--overwrite", action="store_true", help="replace a ranking already in the output folder")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="load checkpoints with weights_only=False (only for files you trust: it can run code)")
    p.set_defaults(func=cmd_rank)


# ------------------------------------------------------------------------------------- pure part
def qscore_scores(h, eps: float, band: Sequence[float]) -> dict[str, float]:
    """Mean Q, the fraction of samples with a non-empty :math:`L_i \\cap D` and :math:`|D|`, with
    :math:`A` and :math:`D` computed from ``h`` itself (no labels)."""
    from solo_qscore.core.activations import highly_activating
    from solo_qscore.core.discriminative import discriminative_mask
    from solo_qscore.core.qscore import q_score

    active = highly_activating(h, eps)
    frequencies = 100.0 * active.double().mean(dim=0)
    discriminative = discriminative_mask(frequencies, float(band[0]), float(band[1]))
    q = q_score(h, discriminative, eps)
    nonempty = (active & discriminative.to(active.device)).any(dim=1)
    return {"q_mean": float(q.double().mean()), "nonempty_fraction": float(nonempty.double().mean()),
            "num_discriminative": int(discriminative.sum())}


def extra_eps_metrics(extra_eps: Sequence[float]) -> list[str]:
    """The columns of Q at further thresholds: ``q_mean@eps2`` and ``nonempty_fraction@eps2`` for eps 2."""
    return [f"{m}@eps{e:g}" for e in extra_eps for m in ("q_mean", "nonempty_fraction")]


def encoder_scores(h, views, eps: float = 4.0, band: Sequence[float] = (50.0, 95.0),
                   extra_eps: Sequence[float] = ()) -> dict[str, float]:
    """Every label-free score of one encoder: ``h`` ``[N, r]`` clean training features, ``views``
    ``[n, q, r]`` (or ``None``: no LiDAR) the features of ``q`` augmented views of ``n`` images; the
    :data:`METRICS`, then mean Q and the non-empty fraction at each of ``extra_eps``."""
    from solo_qscore.core.label_free import alpha_req, lidar, normalized_embedding_std, rankme

    scores = qscore_scores(h, eps, band)
    try:
        decay = alpha_req(h)
    except ValueError:  # a collapsed spectrum has no decay to fit: the metric is undefined, the others are not
        decay = float("nan")
    scores.update(rankme=rankme(h), alpha_req=decay, embedding_std=normalized_embedding_std(h),
                  lidar=lidar(views) if views is not None else float("nan"))
    out = {k: scores[k] for k in METRICS}
    for e in extra_eps:
        more = qscore_scores(h, e, band)
        out.update({f"{m}@eps{e:g}": more[m] for m in ("q_mean", "nonempty_fraction")})
    return out


def best_checkpoint(values: Sequence[float], name: str, accuracy: Optional[Sequence[float]] = None) -> Optional[int]:
    """Index of the checkpoint a metric prefers (its oriented score's best finite value; ties broken as
    :func:`~solo_qscore.analysis.selection.preferred_index` does, so the summary, the figure and the regret agree)."""
    from solo_qscore.analysis.selection import oriented_score, preferred_index

    return preferred_index(oriented_score(name, values), accuracy)


# -------------------------------------------------------------------------------------- command
def _views_loader(train_loader, augmentations, images: int, views: int):
    """A loader of ``views`` augmented views of the first ``images`` scored training images, in order (row
    ``i * views + j`` is view ``j`` of image ``i``), with the first augmentation entry of the run."""
    import torch

    from solo_qscore.data.loaders import LabelledSubset, TransformDataset
    from solo_qscore.data.transforms import build_crop_pipelines, dataset_stats

    base = train_loader.dataset.dataset  # the images, untransformed, in the order of the features
    n = min(int(images), len(base))
    pipeline = build_crop_pipelines([{**dict(augmentations[0]), "num_crops": 1}], *dataset_stats(base.name))[0]
    index = torch.arange(n).repeat_interleave(int(views))
    return torch.utils.data.DataLoader(TransformDataset(LabelledSubset(base, index), pipeline),
                                       batch_size=train_loader.batch_size, shuffle=False, num_workers=0), n


def _checkpoint_row(path: str, saved: Mapping[str, Any], checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """What identifies a checkpoint in the table: its path, run name, method, step, epoch, learning rate."""
    lr = None
    try:
        from solo_qscore.adapters.solo_checkpoint import source_config

        lr = float(source_config(dict(checkpoint), path).optimizer.lr)
    except Exception:  # a checkpoint without its source config (not from `pretrain`): no lr column value
        lr = None
    return {"label": f"{saved.get('name', Path(path).parent.name)}/{Path(path).stem}", "checkpoint": str(path),
            "method": saved.get("method"), "global_step": checkpoint.get("global_step"),
            "epoch": checkpoint.get("epoch"), "lr": lr}


def _check_counts(samples: int, lidar_images: int, lidar_views: int, paths: Sequence[str]) -> None:
    from solo_qscore.config import ConfigError

    if len(paths) < 2:
        raise ConfigError("rank compares checkpoints: give two or more")
    for value, flag in ((samples, "--samples"), (lidar_images, "--lidar-images"), (lidar_views, "--lidar-views")):
        if int(value) < 2:
            raise ConfigError(f"{flag} must be at least 2, got {value}")


def rank_checkpoints(paths: Sequence[str], overrides: Sequence[str] = (), samples: int = RANKME_SAMPLES,
                     lidar_images: int = 256, lidar_views: int = 8, probe: bool = True, trusted: bool = False,
                     resamples: int = 1000, seed: int = 0, extra_eps: Sequence[float] = ()
                     ) -> dict[str, Any]:  # long: one pass per checkpoint
    """Score every checkpoint on the same images (see the module docstring); the result of ``rank``.

    The data is the first checkpoint's (with ``overrides``), ``samples`` training images of it. Every
    checkpoint is opened once before any feature is computed, so a bad one is refused (``CheckpointError``,
    one line) before minutes of work. Returns ``{"metrics", "rows", "correlations", "settings", "note"}``:
    ``metrics`` the score columns (:data:`METRICS`, then those of ``extra_eps``), ``rows`` each checkpoint's
    identity, scores and ``accuracy`` (``None`` without labels).
    """
    import torch

    from solo_qscore._progress import progress
    from solo_qscore.analysis.selection import rank_correlations
    from solo_qscore.cli.open_run import load_checkpoint, with_overrides
    from solo_qscore.data import make_eval_loaders, missing_labels
    from solo_qscore.data.loaders import make_eval_loader
    from solo_qscore.probe.backbone import find_backbone
    from solo_qscore.probe.features import extract_features
    from solo_qscore.probe.linear import probe_correctness
    from solo_qscore.report.config import ReportConfig

    _check_counts(samples, lidar_images, lidar_views, paths)
    rows, notes, view = [], [], None
    for path in paths:  # every checkpoint readable and ours, before any work
        _, saved, checkpoint = load_checkpoint(path, trusted=trusted)
        rows.append(_checkpoint_row(path, saved, checkpoint))
        if view is None:
            view = with_overrides(saved, [f"data.train_subset={int(samples)}", *overrides])
        elif saved["data"].get("dataset") != view["data"].get("dataset"):
            notes.append(f"{path} was trained on data.dataset={saved['data'].get('dataset')!r}; every checkpoint "
                         f"is scored on the first one's ({view['data'].get('dataset')!r})")
    config = ReportConfig.from_run(view)
    why_no_labels = missing_labels(view["data"])
    labelled = probe and why_no_labels is None
    if probe and not labelled:
        notes.append(f"no probe accuracy: {why_no_labels}")
    if labelled:
        train_loader, val_loader = make_eval_loaders(view["data"])
    else:
        train_loader, val_loader = make_eval_loader(view["data"], train=True), None
    views_loader, n_images = _views_loader(train_loader, view["augmentations"], lidar_images, lidar_views)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for row in progress(rows, desc="ranking checkpoints", unit="checkpoint", delay=0):
        model, _, _ = load_checkpoint(row["checkpoint"], trusted=trusted)
        backbone = find_backbone(model).to(device)
        train_h, train_y = extract_features(backbone, train_loader, device, desc="training images")
        with torch.random.fork_rng(devices=[]):  # the same augmented views for every checkpoint
            torch.manual_seed(seed)
            views, _ = extract_features(backbone, views_loader, device, desc="LiDAR views")
        row.update(encoder_scores(train_h.cpu(), views.cpu().reshape(n_images, int(lidar_views), -1),
                                  config.eps, config.band, extra_eps))
        row["accuracy"] = None
        if labelled:
            val_h, val_y = extract_features(backbone, val_loader, device, desc="validation images")
            row["accuracy"] = probe_correctness(train_h, train_y, val_h, val_y, **config.probe).accuracy
        del model, backbone
    correlations, metrics = [], [*METRICS, *extra_eps_metrics(extra_eps)]
    if labelled:
        methods = [row["method"] for row in rows]
        correlations = rank_correlations({m: [row[m] for row in rows] for m in metrics},
                                         [row["accuracy"] for row in rows],
                                         groups=methods if len(set(methods)) > 1 else None,
                                         resamples=resamples, seed=seed)
    settings = {"samples": int(train_h.shape[0]), "lidar_images": n_images, "lidar_views": int(lidar_views),
                "eps": config.eps, "band": list(config.band), "dataset": view["data"].get("dataset"),
                "validation_samples": None if val_loader is None else len(val_loader.dataset)}
    return {"metrics": metrics, "rows": rows, "correlations": correlations, "settings": settings,
            "note": "; ".join(notes) if notes else None}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 10):
        return f"{int(value)}"
    return f"{value:.{digits}f}"


def summary_text(result: Mapping[str, Any]) -> str:
    """The one-screen summary: each checkpoint's scores (``*`` marks the one each metric prefers, ``^`` the
    labelled best), then, with labels, how well each metric ranks the checkpoints."""
    from solo_qscore.analysis.selection import METRIC_DIRECTIONS

    rows, metrics = result["rows"], list(result.get("metrics", METRICS))
    columns = [*metrics, "accuracy"]
    accuracies = [r["accuracy"] for r in rows]
    labelled = all(a is not None for a in accuracies)
    picks = {m: best_checkpoint([r[m] for r in rows], m, accuracies if labelled else None) for m in metrics}
    if labelled:
        picks["accuracy"] = max(range(len(rows)), key=lambda i: accuracies[i])
    width = min(40, max(len(r["label"]) for r in rows))
    def header(name: str) -> str:
        base, _, setting = name.partition("@")
        return SHORT_NAMES.get(base, base) + (f" ε{setting[3:]}" if setting.startswith("eps") else "")

    lines = [f"{'checkpoint':<{width}} " + " ".join(f"{header(c):>10}" for c in columns)]
    for i, row in enumerate(rows):
        cells = [_fmt(row[c]) + ("*" if picks.get(c) == i else " ") for c in columns]
        lines.append(f"{row['label'][-width:]:<{width}} " + " ".join(f"{c:>10}" for c in cells))
    lines.append("* the checkpoint each metric prefers (higher is better; α-ReQ: " +
                 METRIC_DIRECTIONS["alpha_req"] + "); accuracy*: the labelled best")
    overall = [c for c in result["correlations"] if c["group"] == "all"]
    if overall:
        lines.append(f"\nagainst probe accuracy ({len(rows)} checkpoints; positive = ranks like accuracy):")
        lines.append(f"{'metric':<24} {'Kendall tau':>24} {'Spearman rho':>24} {'regret':>8}")
        for c in overall:
            tau = f"{_fmt(c['kendall_tau'], 2)} [{_fmt(c['kendall_ci'][0], 2)}, {_fmt(c['kendall_ci'][1], 2)}]"
            rho = f"{_fmt(c['spearman_rho'], 2)} [{_fmt(c['spearman_ci'][0], 2)}, {_fmt(c['spearman_ci'][1], 2)}]"
            lines.append(f"{c['metric']:<24} {tau:>24} {rho:>24} {_fmt(100 * c['regret'], 2):>8}")
        lines.append("regret: accuracy points lost by keeping the metric's choice instead of the labelled best")
    if result.get("note"):
        lines.append(f"note: {result['note']}")
    return "\n".join(lines)


def write_ranking(result: Mapping[str, Any], out: Path) -> list[Path]:
    """``ranking.csv``, ``ranking.json`` and ``ranking.png`` in ``out`` (each file written whole)."""
    from solo_qscore._files import atomic_file, write_json_atomic
    from solo_qscore.plotting import save_figure_atomic, selection_figure
    from solo_qscore.report.result import to_jsonable

    out.mkdir(parents=True, exist_ok=True)
    rows, metrics = result["rows"], list(result.get("metrics", METRICS))
    fields = ["label", "checkpoint", "method", "global_step", "epoch", "lr", *metrics, "accuracy"]
    with atomic_file(out / "ranking.csv", binary=False) as f:
        writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: row.get(k) for k in fields} for row in rows)
    paths = [out / "ranking.csv", write_json_atomic(to_jsonable(dict(result)), out / "ranking.json")]
    accuracy = [row["accuracy"] for row in rows]
    figure = selection_figure({m: [row[m] for row in rows] for m in metrics},
                              accuracy if all(a is not None for a in accuracy) else None,
                              groups=[row["method"] for row in rows], labels=[row["label"] for row in rows],
                              correlations=result["correlations"] or None)
    save_figure_atomic(figure, out / "ranking.png")
    return [*paths, out / "ranking.png"]


def cmd_rank(args: argparse.Namespace) -> int:
    from solo_qscore.cli.open_run import check_output_folder
    from solo_qscore.output_folder import folder_lock

    _check_counts(args.samples, args.lidar_images, args.lidar_views, args.checkpoints)
    out = check_output_folder(args.out, args.overwrite, "ranking.csv")
    with folder_lock(out, "--out"):
        check_output_folder(out, args.overwrite, "ranking.csv")  # again, under the lock
        result = rank_checkpoints(args.checkpoints, list(getattr(args, "overrides", []) or []), args.samples,
                                  args.lidar_images, args.lidar_views, probe=not args.no_probe,
                                  trusted=args.trust_checkpoint, extra_eps=args.extra_eps)
        paths = write_ranking(result, out)
    print(summary_text(result))
    print(f"ranking: {paths[0]} (+ {', '.join(p.name for p in paths[1:])})")
    return 0
