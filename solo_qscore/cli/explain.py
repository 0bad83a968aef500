r"""``solo-qscore explain``: Grad-CAM heat maps of the top discriminative features (Q-Score paper Fig. 1, A.11-A.14).

For a checkpoint of ``solo-qscore pretrain``: extract the backbone representations of the
validation set (``data.val_subset`` applies), compute the activation frequencies :math:`A_j` and the
discriminative set :math:`D` (``qscore.eps``, ``qscore.band`` of the run config; from the validation
set, or the train set with ``--stats-from train`` as the probe does), take the K features of
:math:`D` with the highest :math:`A_j` and, for each, the M validation samples where it stands out
most, measured by the standardised activation

.. math:: z_{ij} = \frac{h_{ij} - \mu(h_i)}{\sigma(h_i)} \qquad (j \in L_i \iff z_{ij} > \epsilon),

and draw the Grad-CAM map of :math:`h_{ij}` (:func:`solo_qscore.analysis.gradcam.grad_cam`) over each image.
Writes ``explain.png`` (rows = features, columns = samples) and ``explain.json``.

The helpers here (the backbone, statistics, images) are shared with ``solo-qscore miou``; the figure is
:func:`solo_qscore.plotting.gradcam.explain_figure`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from solo_qscore.cli.open_run import add_safety_arguments, check_output_folder
from solo_qscore.config import ConfigError

DEFAULT_TOP_FEATURES = 6
DEFAULT_SAMPLES = 8


# ----------------------------------------------------------------------------- shared helpers

def eval_backbone(model) -> tuple[Any, Any]:
    """``(backbone, device)``: the backbone of a checkpoint's model (opened with
    :func:`~solo_qscore.cli.open_run.load_checkpoint_with_overrides`) in eval mode, on the GPU when there is one."""
    import torch

    from solo_qscore.probe.backbone import find_backbone

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backbone = find_backbone(model).to(device)
    backbone.eval()
    return backbone, device


def discriminative_set(h, eps: float, band) -> tuple[Any, Any]:
    """``(A, D)``: activation frequencies ``[r]`` (percent) and the discriminative mask of ``h``."""
    from solo_qscore.core.discriminative import discriminative_mask
    from solo_qscore.core.statistics import ActivationStatistics

    stats = ActivationStatistics(h.shape[1], eps=eps)
    stats.update(h.cpu())
    A = stats.compute()
    D = discriminative_mask(A, *band)
    if not bool(D.any()):
        raise ConfigError(f"the discriminative set D is empty (band {list(band)} of {h.shape[1]} features); "
                          "widen qscore.band, e.g. qscore.band=[50,95]")
    return A, D


def statistics_features(args, backbone, device, train_loader, val_h):
    """Representations the statistics come from: the validation set's, or the train set's."""
    from solo_qscore.probe.features import extract_features

    if args.stats_from == "train":
        return extract_features(backbone, train_loader, device)[0].cpu()
    return val_h


def dataset_indices(dataset) -> Any:
    """Indices into the full split of the items of an eval dataset (``data.*_subset`` aware)."""
    import torch

    base = getattr(dataset, "dataset", None)  # TransformDataset -> LabelledSubset or the split itself
    indices = getattr(base, "indices", None)
    return indices.clone() if isinstance(indices, torch.Tensor) else torch.arange(len(dataset))


def standardized_activations(h):
    r""":math:`z_{ij} = (h_{ij} - \mu_i)/\sigma_i` (population std; 0 for constant rows)."""
    import torch

    h = h.float()
    var, mean = torch.var_mean(h, dim=1, correction=0, keepdim=True)
    std = var.sqrt()
    return torch.where(std > 0, (h - mean) / torch.where(std > 0, std, torch.ones_like(std)), torch.zeros_like(h))


def top_discriminative_features(A, D, k: int):
    """The ``k`` features of ``D`` with the highest ``A_j`` (ties: lower index first)."""
    import torch

    candidates = D.nonzero().flatten()
    order = torch.sort(A[candidates], descending=True, stable=True).indices
    return candidates[order[: int(k)]]


def top_samples(z, features, m: int):
    """``LongTensor[K, m]``: per feature, the positions of the ``m`` largest ``z_ij`` (ties: lower position)."""
    import torch

    order = torch.sort(z[:, features], dim=0, descending=True, stable=True).indices
    return order[: int(m)].t().contiguous()


def load_images(dataset, positions, batch_size: int = 256):
    """The eval-transformed images of ``dataset`` at ``positions`` as one tensor ``[n, C, H, W]``."""
    import torch
    from torch.utils.data import DataLoader, Subset

    loader = DataLoader(Subset(dataset, positions.tolist()), batch_size=batch_size, shuffle=False)
    return torch.cat([x for x, _ in loader])


def to_display(images, dataset_name: str):
    """Undo the eval normalisation: ``[n, H, W, 3]`` numpy in ``[0, 1]``."""
    import torch

    from solo_qscore.data import dataset_stats

    mean, std = (torch.tensor(v, dtype=images.dtype)[:, None, None] for v in dataset_stats(dataset_name))
    return (images.cpu() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a checkpoint of `solo-qscore pretrain` (its config gives the data)")
    parser.add_argument("--layer", default="layer4",
                        help="backbone layer whose activations Grad-CAM uses (default layer4, the last block)")
    parser.add_argument("--stats-from", choices=("val", "train"), default="val",
                        help="split whose activation statistics give A_j and D (default val; the probe uses train)")
    add_safety_arguments(parser)


# ----------------------------------------------------------------------------- the command

def cmd_explain(args: argparse.Namespace) -> int:
    from solo_qscore._files import atomic_file
    from solo_qscore.analysis.associations import dataset_class_names
    from solo_qscore.analysis.gradcam import grad_cam, resolve_layer
    from solo_qscore.cli.open_run import load_checkpoint_with_overrides
    from solo_qscore.data import make_eval_loaders
    from solo_qscore.plotting.gradcam import DPI, explain_figure
    from solo_qscore.plotting.save import save_figure_quantized
    from solo_qscore.probe.features import extract_features

    if args.top_features < 1 or args.samples < 1:
        raise ConfigError(f"--top-features and --samples must be >= 1, got {args.top_features}, {args.samples}")
    model, cfg = load_checkpoint_with_overrides(args.checkpoint, args.overrides, trusted=args.trust_checkpoint)
    backbone, device = eval_backbone(model)
    out = check_output_folder(args.out or Path(cfg["output_dir"]) / "explain", args.overwrite, "explain.json")
    try:
        resolve_layer(backbone, args.layer)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    train_loader, val_loader = make_eval_loaders(cfg["data"])
    val_h, val_y = extract_features(backbone, val_loader, device)
    val_h, val_y = val_h.cpu(), val_y.cpu()
    q = cfg["qscore"]
    stats_h = statistics_features(args, backbone, device, train_loader, val_h)
    A, D = discriminative_set(stats_h, q["eps"], q["band"])

    features = top_discriminative_features(A, D, args.top_features)
    z = standardized_activations(val_h)
    positions = top_samples(z, features, min(args.samples, val_h.shape[0]))  # [K, M] loader positions
    flat = positions.flatten()
    images = load_images(val_loader.dataset, flat).to(device)
    feature_of = features.repeat_interleave(positions.shape[1])
    heat = grad_cam(backbone, images, args.layer, feature_of.to(device)).cpu()

    index = dataset_indices(val_loader.dataset)[flat]
    h_sel, z_sel = val_h[flat, feature_of], z[flat, feature_of]
    display = to_display(images, val_loader.dataset.name)
    fig = explain_figure(display, heat.numpy(), features, A, index.view_as(positions), val_y[flat],
                         h_sel, z_sel, positions.shape[1], dataset_class_names(val_loader.dataset))
    png = save_figure_quantized(fig, out / "explain.png", dpi=DPI)

    m = positions.shape[1]
    report = {
        "checkpoint": str(args.checkpoint), "dataset": val_loader.dataset.name, "split": "val",
        "num_samples": int(val_h.shape[0]), "stats_from": args.stats_from, "eps": float(q["eps"]),
        "band": [float(b) for b in q["band"]], "num_features": int(val_h.shape[1]),
        "num_discriminative": int(D.sum()), "layer": args.layer,
        "feature_ranking": "features of D by activation frequency A_j, descending (ties: lower index)",
        "sample_ranking": "samples by z_ij = (h_ij - mean_i) / std_i, descending (j in L_i iff z_ij > eps)",
        "features": [
            {"feature": int(j), "A": float(A[j]), "samples": [
                {"position": int(positions[r, c]), "index": int(index[r * m + c]), "label": int(val_y[positions[r, c]]),
                 "h": float(h_sel[r * m + c]), "z": float(z_sel[r * m + c]),
                 "in_L": bool(z_sel[r * m + c] > q["eps"]),
                 "heat_mean": float(heat[r * m + c].mean())}
                for c in range(m)]}
            for r, j in enumerate(features.tolist())
        ],
        "image": str(png),
    }
    with atomic_file(out / "explain.json", binary=False) as handle:
        json.dump(report, handle, indent=2)
    print(json.dumps({"num_discriminative": report["num_discriminative"], "features": features.tolist(),
                      "samples_per_feature": m}, indent=2))
    print(f"figure: {png}\nreport: {out / 'explain.json'}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "explain", help="Grad-CAM heat maps of the top discriminative features on their most activating "
                        "validation samples (grid PNG + JSON)")
    common_arguments(p)
    p.add_argument("--out", help="output folder (default OUTPUT_DIR/explain)")
    p.add_argument("--top-features", type=int, default=DEFAULT_TOP_FEATURES,
                   help=f"K: features of D with the highest A_j (default {DEFAULT_TOP_FEATURES})")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                   help=f"M: most activating samples per feature (default {DEFAULT_SAMPLES})")
    p.set_defaults(func=cmd_explain)
