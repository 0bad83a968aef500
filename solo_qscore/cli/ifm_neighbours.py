r"""``solo-qscore ifm-neighbours CKPT``: visualise IFM's latent perturbations by nearest-neighbour retrieval.

IFM paper §3.1, Fig. 4. For ``K`` anchors ``x`` drawn from the train set (the memory bank), with
:math:`v = g(f(x))` the L2-normalised projector output (the vector the InfoNCE loss uses), a
positive :math:`v^+` from an augmented view of ``x`` (the run's own augmentation) and a negative
:math:`v^-` from another train image, each synthesised point :math:`v^+ - \varepsilon v` and
:math:`v^- + \varepsilon v` is shown as its cosine 1-nearest neighbour in the bank. Writes
``ifm_neighbours.png`` (one row per anchor, :func:`solo_qscore.plotting.ifm_neighbours.neighbours_figure`) and
``ifm_neighbours.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from solo_qscore.cli.open_run import add_safety_arguments, check_output_folder, load_checkpoint_with_overrides

__all__ = ["Neighbours", "ifm_neighbours", "register", "run"]

DEFAULT_EPS = (0.0, 0.1, 0.2, 1.0)


@dataclass(eq=False)
class Neighbours:
    """What :func:`ifm_neighbours` returns: ``record``, the content of ``ifm_neighbours.json`` (the budgets and
    settings, one row of indices, labels and similarities per anchor, the summary per budget), and the data
    the figure draws besides it, which the JSON leaves out."""

    record: dict[str, Any]
    raw_set: Any  #: the memory bank's ``(PIL image, label)`` items (bank index = item index)
    views: Any  #: the anchors' augmented views as ``[K, H, W, 3]`` images in [0, 1] (numpy)
    pos_sim: Any  #: cosine similarity of each perturbed positive to its retrieved neighbour, ``[E, K]``
    neg_sim: Any  #: the same for each perturbed negative

    def bank_images(self) -> dict[int, Any]:
        """The memory bank's images the figure shows (anchors, negatives, retrievals) as arrays, by bank index."""
        import numpy as np

        needed = set()
        for row in self.record["rows"]:
            needed |= {row["anchor_index"], row["negative_index"], *row["positive_retrieved"],
                       *row["negative_retrieved"]}
        return {i: np.asarray(self.raw_set[i][0]) for i in sorted(needed)}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "ifm-neighbours",
        help="IFM paper Fig. 4: retrieve the train images nearest to IFM-perturbed positives and negatives")
    p.add_argument("checkpoint", help="a checkpoint written by solo-qscore pretrain/main")
    p.add_argument("--out", help="output folder (default OUTPUT_DIR/ifm_neighbours)")
    add_safety_arguments(p)
    p.add_argument("--anchors", type=int, default=6, help="number of anchor rows (default 6)")
    p.add_argument("--eps", type=_budget, nargs="+", default=list(DEFAULT_EPS),
                   help="perturbation budgets (default 0 0.1 0.2 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the anchor/negative choice and the augmentation")
    p.add_argument("--space", choices=("projection", "backbone"), default="projection",
                   help="embedding to perturb: the normalised projector output the loss uses (default) or the "
                        "backbone representation")
    p.add_argument("--renormalize", action="store_true",
                   help="re-normalise perturbed vectors (the paper's +norm variant; no effect on cosine retrieval)")
    p.set_defaults(func=run)


def _budget(text: str) -> float:
    """An ``--eps`` value: a finite number >= 0 (argparse's usage line and exit code 2 otherwise)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"a perturbation budget must be a finite number >= 0, got {text!r}")
    return value


def _embed(model, x, space: str):
    import torch.nn.functional as F

    from solo_qscore.probe.backbone import find_backbone

    h = find_backbone(model)(x)
    return F.normalize(model.projector(h) if space == "projection" else h, dim=-1)


# long: one pipeline (load data, embed, perturb, retrieve, collect images) sharing its tensors; kept in reading order
def ifm_neighbours(
    model, cfg: dict, anchors: int = 6, eps=DEFAULT_EPS, seed: int = 0, space: str = "projection",
    renormalize: bool = False, batch_size: int = 256,
) -> Neighbours:
    """Compute the retrievals: the indices, labels and similarities (``record``) and the images to draw."""
    import torch
    from torch.utils.data import DataLoader

    from solo_qscore.analysis.ifm_visual import cosine_nearest_neighbours, ifm_perturb
    from solo_qscore.config import ConfigError
    from solo_qscore.data import build_crop_pipelines, dataset_stats, make_eval_loaders

    if anchors < 1:
        raise ConfigError(f"--anchors must be a positive integer, got {anchors}")
    if not eps or not all(math.isfinite(e) and e >= 0 for e in eps):
        raise ConfigError(f"--eps needs one or more finite budgets >= 0, got {list(eps)}")
    if space == "projection" and not hasattr(model, "projector"):
        raise ConfigError(f"{type(model).__name__} has no projector; use --space backbone")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    train_loader, _ = make_eval_loaders(cfg["data"], batch_size=batch_size)
    eval_set = train_loader.dataset  # (normalised tensor, label) items
    raw_set = eval_set.dataset  # (PIL image, label) items
    n = len(eval_set)
    if n < 2 * anchors:
        raise ConfigError(f"the memory bank has {n} images, fewer than 2 x --anchors = {2 * anchors}")

    with torch.no_grad():
        bank, labels = [], []
        for x, y in DataLoader(eval_set, batch_size=batch_size, shuffle=False):
            bank.append(_embed(model, x.to(device), space).float())
            labels.append(y)
        bank, labels = torch.cat(bank), torch.cat(labels)

        gen = torch.Generator().manual_seed(int(seed))
        order = torch.randperm(n, generator=gen)
        anchor_idx, negative_idx = order[:anchors], order[anchors:2 * anchors]
        # the positive: one augmented view of each anchor image, drawn with the run's own pipeline
        mean, std = dataset_stats(getattr(raw_set, "name", "") or "")
        view = build_crop_pipelines(cfg["augmentations"], mean, std)[0]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            views = torch.stack([view(raw_set[int(i)][0]) for i in anchor_idx])  # K images only
        positive = _embed(model, views.to(device), space).float()

        v, v_neg = bank[anchor_idx.to(device)], bank[negative_idx.to(device)]
        pos_eps, neg_eps = ifm_perturb(v, positive, v_neg, list(eps), renormalize=renormalize)
        e, k, d = pos_eps.shape
        pos_nn, pos_sim = cosine_nearest_neighbours(pos_eps.reshape(e * k, d), bank)
        neg_nn, neg_sim = cosine_nearest_neighbours(neg_eps.reshape(e * k, d), bank)
        pos_nn, neg_nn = pos_nn.view(e, k).cpu(), neg_nn.view(e, k).cpu()
        # similarity of each retrieved image's embedding to the anchor: how far IFM moved the sample
        pos_to_anchor = (bank[pos_nn.view(-1).to(device)].view(e, k, d) * v).sum(-1).cpu()
        neg_to_anchor = (bank[neg_nn.view(-1).to(device)].view(e, k, d) * v).sum(-1).cpu()
        view_to_anchor = (positive * v).sum(-1).cpu()
        neg_clean_to_anchor = (v_neg * v).sum(-1).cpu()

    eps_list = [float(x) for x in eps]
    anchor_labels = labels[anchor_idx]
    summary = {
        f"{eps_:g}": {
            "positive_mean_cos_to_anchor": float(pos_to_anchor[j].mean()),
            "negative_mean_cos_to_anchor": float(neg_to_anchor[j].mean()),
            "positive_same_class_as_anchor": float((labels[pos_nn[j]] == anchor_labels).double().mean()),
            "negative_same_class_as_anchor": float((labels[neg_nn[j]] == anchor_labels).double().mean()),
            "positive_is_anchor_image": float((pos_nn[j] == anchor_idx).double().mean()),
        }
        for j, eps_ in enumerate(eps_list)
    }
    rows = []
    for r in range(anchors):
        rows.append({
            "anchor_index": int(anchor_idx[r]), "anchor_label": int(anchor_labels[r]),
            "negative_index": int(negative_idx[r]), "negative_label": int(labels[negative_idx[r]]),
            "cos_view_anchor": float(view_to_anchor[r]), "cos_negative_anchor": float(neg_clean_to_anchor[r]),
            "positive_retrieved": [int(i) for i in pos_nn[:, r]],
            "positive_retrieved_labels": [int(labels[i]) for i in pos_nn[:, r]],
            "positive_retrieved_cos_to_anchor": [float(s) for s in pos_to_anchor[:, r]],
            "negative_retrieved": [int(i) for i in neg_nn[:, r]],
            "negative_retrieved_labels": [int(labels[i]) for i in neg_nn[:, r]],
            "negative_retrieved_cos_to_anchor": [float(s) for s in neg_to_anchor[:, r]],
        })
    view_images = (views * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)).clamp(0, 1)
    record = {
        "eps": eps_list, "space": space, "renormalize": bool(renormalize), "seed": int(seed),
        "dataset": getattr(raw_set, "name", None), "bank_size": n, "embedding_dim": int(bank.shape[1]),
        "summary": summary, "rows": rows,
    }
    return Neighbours(record=record, raw_set=raw_set, views=view_images.permute(0, 2, 3, 1).numpy(),
                      pos_sim=pos_sim.view(e, k).cpu(), neg_sim=neg_sim.view(e, k).cpu())


def run(args: argparse.Namespace) -> int:
    from solo_qscore._files import atomic_file
    from solo_qscore.plotting import save_figure_atomic
    from solo_qscore.plotting.ifm_neighbours import DPI, neighbours_figure

    model, cfg = load_checkpoint_with_overrides(args.checkpoint, getattr(args, "overrides", []),
                                                trusted=args.trust_checkpoint)
    out = check_output_folder(args.out or Path(cfg["output_dir"]) / "ifm_neighbours", args.overwrite,
                              "ifm_neighbours.json")
    result = ifm_neighbours(model, cfg, anchors=args.anchors, eps=args.eps, seed=args.seed, space=args.space,
                            renormalize=args.renormalize)
    figure = neighbours_figure(result.record, result.bank_images(), result.views)
    save_figure_atomic(figure, out / "ifm_neighbours.png", dpi=DPI)
    public = {**result.record, "checkpoint": str(args.checkpoint)}
    with atomic_file(out / "ifm_neighbours.json", binary=False) as handle:
        json.dump(public, handle, indent=2)
    print(json.dumps(public["summary"], indent=2))
    print(f"figure: {out / 'ifm_neighbours.png'}")
    return 0
