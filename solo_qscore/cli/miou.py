r"""``solo-qscore miou``: how much of the discriminative features' heat map lies on annotated masks (paper Fig. 7).

For a checkpoint of ``solo-qscore pretrain`` and masks of its validation images:

1. representations of the validation set (``data.val_subset`` applies), :math:`A_j` and :math:`D`
   (``qscore.eps``/``qscore.band``; ``--stats-from train`` for the train set's);
2. per image, the Grad-CAM map (:func:`solo_qscore.analysis.gradcam.grad_cam`) of
   :math:`t_i = \sum_{j \in L_i \cap D} h_{ij}` (``--target active``, the paper's heat map of the
   sample's discriminative features) or of :math:`\sum_{j \in D} h_{ij}` (``--target discriminative``);
3. the heat-map-weighted :math:`\mathrm{IoU}_i = s(Ar_i \cap M_i) / s(Ar_i \cup M_i)` with the mask
   (:mod:`solo_qscore.analysis.miou`), averaged over images, and split by the linear probe's correctness
   (probe fit on the train set, as ``solo-qscore probe`` does; ``--no-probe`` skips it).

``--masks``: ``trifeature`` (exact shape masks of generated Trifeature images; the run's
``data.dataset`` must be ``trifeature``), a ``.npy``/``.pt`` array ``[N, H, W]`` indexed by dataset
index, or a folder of ``<dataset index>.png`` files (non-zero = inside); see
:func:`solo_qscore.analysis.miou.load_masks`. Writes ``miou.json`` and ``miou.png`` (example heat maps with
the mask outlines, :func:`solo_qscore.plotting.gradcam.miou_figure`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from solo_qscore.cli.explain import (
    common_arguments,
    dataset_indices,
    discriminative_set,
    eval_backbone,
    load_images,
    to_display,
)
from solo_qscore.cli.open_run import check_output_folder, load_checkpoint_with_overrides
from solo_qscore.config import ConfigError

DEFAULT_EXAMPLES = 6


def _base_dataset(dataset):
    """The split under the eval wrappers (TransformDataset -> LabelledSubset -> split)."""
    while hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    return dataset


def _split_masks(spec: str, cfg: dict, val_dataset):
    """``(masks BoolTensor[K, H, W], dataset indices LongTensor[K])`` for ``--masks``."""
    import torch

    from solo_qscore.analysis.miou import load_masks

    if spec.lower() == "trifeature":
        from solo_qscore.data import trifeature_masks

        if val_dataset.name != "trifeature":
            raise ConfigError(f"--masks trifeature needs a Trifeature run (data.dataset=trifeature); "
                              f"the validation data is {val_dataset.name!r}")
        base = _base_dataset(val_dataset)
        data = cfg["data"]
        masks = trifeature_masks(root=data["root"], train=False, num_samples=len(base),
                                 image_size=int(data["image_size"]), seed=getattr(base, "seed", 0))
        return torch.from_numpy(masks), torch.arange(masks.shape[0])
    try:
        return load_masks(spec)
    except ValueError as err:
        raise ConfigError(f"--masks: {err}") from err


def pick_examples(iou, correct, examples: int) -> list:
    """``[(group, rows)]``: up to ``examples`` scored images per group, spread evenly over the IoU range."""
    import numpy as np

    groups = [("all", np.ones(len(iou), dtype=bool))] if correct is None else [
        ("correct", correct), ("misclassified", ~correct)]
    picks = []
    for name, members in groups:
        rows = np.flatnonzero(members & ~np.isnan(iou))
        rows = rows[np.argsort(iou[rows], kind="stable")]
        if len(rows):
            rows = rows[np.unique(np.linspace(0, len(rows) - 1, min(examples, len(rows))).round().astype(int))]
        picks.append((name, rows))
    return picks


# long: a command's script (load, probe, Grad-CAM per image, IoU, write); each step uses the previous ones' locals
def cmd_miou(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Subset

    from solo_qscore._files import atomic_file
    from solo_qscore.analysis.associations import dataset_class_names
    from solo_qscore.analysis.gradcam import discriminative_targets, grad_cam, resolve_layer
    from solo_qscore.analysis.miou import heatmap_iou, match_masks, mean_iou
    from solo_qscore.data import make_eval_loaders
    from solo_qscore.plotting.gradcam import DPI, miou_figure
    from solo_qscore.plotting.save import save_figure_quantized
    from solo_qscore.probe.features import extract_features
    from solo_qscore.probe.linear import probe_correctness

    if not 0.0 <= args.threshold < 1.0:
        raise ConfigError(f"--threshold must be in [0, 1), got {args.threshold}")
    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    model, cfg = load_checkpoint_with_overrides(args.checkpoint, args.overrides, trusted=args.trust_checkpoint)
    backbone, device = eval_backbone(model)
    out = check_output_folder(args.out or Path(cfg["output_dir"]) / "miou", args.overwrite, "miou.json")
    try:
        resolve_layer(backbone, args.layer)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    train_loader, val_loader = make_eval_loaders(cfg["data"])
    val_set = val_loader.dataset
    masks, mask_indices = _split_masks(args.masks, cfg, val_set)
    size = int(cfg["data"]["image_size"])
    if tuple(masks.shape[-2:]) != (size, size):
        raise ConfigError(f"masks are {tuple(masks.shape[-2:])} pixels but the images are {(size, size)} "
                          "(data.image_size); masks must have the image size")
    index = dataset_indices(val_set)
    masks, found = match_masks(masks, mask_indices, index)
    if not bool(found.any()):
        raise ConfigError(f"no mask matches a validation image (their dataset indices are "
                          f"{int(index.min())}..{int(index.max())})")
    positions = found.nonzero().flatten()

    val_h, val_y = extract_features(backbone, val_loader, device)
    val_h, val_y = val_h.cpu(), val_y.cpu()
    q = cfg["qscore"]
    train_h = train_y = None
    if not args.no_probe or args.stats_from == "train":  # one pass over the train set serves both
        train_h, train_y = (t.cpu() for t in extract_features(backbone, train_loader, device))
    A, D = discriminative_set(train_h if args.stats_from == "train" else val_h, q["eps"], q["band"])
    correct, accuracy = None, None
    if not args.no_probe:
        result = probe_correctness(train_h, train_y, val_h, val_y, max_iter=cfg["probe"]["max_iter"],
                                   weight_decay=cfg["probe"]["weight_decay"])
        correct, accuracy = result.correct.cpu()[positions], result.accuracy

    if args.target == "active":
        weights = discriminative_targets(val_h[positions], D, q["eps"])
    else:
        weights = D.float()[None, :].expand(len(positions), -1)
    batch = int(args.batch_size or cfg["data"]["batch_size"])
    loader = DataLoader(Subset(val_set, positions.tolist()), batch_size=batch, shuffle=False)
    heat, start = [], 0
    for x, _ in loader:  # one forward + backward per batch
        w = weights[start:start + len(x)]
        start += len(x)
        if not bool(w.any()):  # no target in the whole batch: all-zero maps, no pass needed
            heat.append(torch.zeros(len(x), *x.shape[-2:]))
            continue
        heat.append(grad_cam(backbone, x.to(device), args.layer, w.to(device)).cpu())
    heat = torch.cat(heat)

    iou = heatmap_iou(heat, masks, args.threshold)
    summary = mean_iou(heat, masks, correct, args.threshold)
    # reference: a uniform heat map scores IoU_i = |M_i| / (H W), the mask's share of the image
    # (over the same scored images)
    scored = ~torch.isnan(iou)
    uniform = mean_iou(torch.ones_like(heat[scored]), masks[scored], None if correct is None else correct[scored])
    baseline = {"miou": uniform["miou"],
                **{k: uniform[k]["miou"] for k in ("correct", "misclassified") if k in uniform}}
    report = {
        "checkpoint": str(args.checkpoint), "dataset": val_set.name, "masks": args.masks,
        "threshold": float(args.threshold), "target": args.target, "layer": args.layer,
        "stats_from": args.stats_from, "eps": float(q["eps"]), "band": [float(b) for b in q["band"]],
        "num_discriminative": int(D.sum()),
        "mean_targets_per_image": float(weights.sum(dim=1).mean()),
        "probe_accuracy": accuracy, **summary, "uniform_baseline": baseline,
        "per_image": {"index": index[positions].tolist(), "iou": [None if np.isnan(v) else float(v) for v in
                                                                  iou.tolist()],
                      "correct": None if correct is None else correct.tolist()},
    }
    if args.examples > 0:
        picks = pick_examples(iou.numpy(), None if correct is None else correct.numpy(), args.examples)
        rows = np.concatenate([r for _, r in picks]).astype(np.int64)
        images = to_display(load_images(val_set, positions[torch.from_numpy(rows)]), val_set.name) \
            if len(rows) else []
        display = dict(zip(rows.tolist(), images))
        def text(value):
            return "n/a" if value is None else f"{value:.3f}"

        title = (f"{val_set.name}: Grad-CAM of {'L_i ∩ D' if args.target == 'active' else 'D'} vs masks (white);"
                 f" mIoU {text(summary['miou'])} over {summary['num_scored']} images"
                 f" (uniform heat map: {text(baseline['miou'])})")
        fig = miou_figure(picks, display, heat.numpy(), masks.numpy(), iou.numpy(), index[positions].numpy(),
                          val_y[positions].numpy(), dataset_class_names(val_set), summary, title)
        report["image"] = str(save_figure_quantized(fig, out / "miou.png", dpi=DPI))
    with atomic_file(out / "miou.json", binary=False) as handle:
        json.dump(report, handle, indent=2)
    printed = {k: report[k] for k in ("miou", "num_images", "num_scored", "num_undefined", "probe_accuracy",
                                      "uniform_baseline")}
    for key in ("correct", "misclassified"):
        if key in summary:
            printed[key] = summary[key]
    print(json.dumps(printed, indent=2))
    print(f"report: {out / 'miou.json'}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "miou", help="heat-map-weighted IoU of the discriminative features' Grad-CAM maps with masks, "
                     "split by probe correctness")
    common_arguments(p)
    p.add_argument("--masks", required=True,
                   help="'trifeature' (exact shape masks), a .npy/.pt array [N,H,W] by dataset index, "
                        "or a folder of <dataset index>.png (non-zero = inside)")
    p.add_argument("--out", help="output folder (default OUTPUT_DIR/miou)")
    p.add_argument("--threshold", type=float, default=0.0,
                   help="heat-map area = pixels with heat > threshold (default 0: the whole map)")
    p.add_argument("--target", choices=("active", "discriminative"), default="active",
                   help="heat map of each sample's L_i ∩ D (default, the paper's) or of all of D")
    p.add_argument("--no-probe", action="store_true", help="skip the linear probe (no correct/misclassified split)")
    p.add_argument("--examples", type=int, default=DEFAULT_EXAMPLES,
                   help=f"example images per group in miou.png (default {DEFAULT_EXAMPLES}; 0: no figure)")
    p.add_argument("--batch-size", type=int, help="Grad-CAM batch size (default data.batch_size)")
    p.set_defaults(func=cmd_miou)
