r"""``solo-qscore loss-readout CKPT CKPT CKPT ...``: InfoNCE loss vs linear-readout error (IFM paper Fig. 2).

For every checkpoint written by ``solo-qscore pretrain`` (the module, projector included, is rebuilt
with :func:`~solo_qscore.cli.open_run.load_checkpoint`):

1. the held-out InfoNCE :func:`~solo_qscore.analysis.loss_readout.heldout_infonce` at one common temperature
   (``--temperature``, default 0.5 as in the paper, App. C.2.3), on two augmented views of the
   validation images (the first checkpoint's ``augmentations``, the same seeded crops for every
   checkpoint), through backbone and projector in eval mode;
2. the linear-readout error (``1 - accuracy`` of :func:`~solo_qscore.probe.linear.fit_linear_probe` fitted
   on frozen train-set backbone features, tested on the validation set) per attribute: Trifeature's
   colour, shape and texture, a dataset's own ``attributes`` where it has them, else the class label.

Then the Pearson correlation matrix of ``[loss, error_1, ..., error_k]`` over the checkpoints, the
heat map of the paper's Fig. 2 with the per-checkpoint scatter, and ``loss_readout.json``.
All checkpoints must come from the same dataset at the same image size; the evaluation data (subsets,
augmentations, probe settings) are those of the first checkpoint's config plus any ``key=value``
overrides.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from solo_qscore.cli.open_run import add_safety_arguments, check_output_folder
from solo_qscore.config import ConfigError

PNG_NAME = "loss_readout.png"
JSON_NAME = "loss_readout.json"


def register(subparsers) -> None:
    """Add the ``loss-readout`` subcommand."""
    p = subparsers.add_parser(
        "loss-readout",
        help="correlation of held-out InfoNCE loss with linear-readout error per attribute across checkpoints "
        "(IFM paper Fig. 2)",
    )
    p.add_argument("checkpoints", nargs="+", metavar="CKPT", help="at least 3 checkpoints of `solo-qscore pretrain`")
    p.add_argument("--temperature", type=float, default=0.5,
                   help="common temperature of the evaluated InfoNCE (paper: 0.5, whatever the training tau)")
    p.add_argument("--batch-size", type=int, default=256,
                   help="held-out InfoNCE batch B (each view has 2B-2 negatives); also the feature batch")
    p.add_argument("--seed", type=int, default=0, help="seed of the augmented held-out views")
    p.add_argument("--out", help="output folder (default: <first checkpoint's output_dir>/loss_readout)")
    add_safety_arguments(p)
    p.set_defaults(func=cmd_loss_readout)


# ----------------------------------------------------------------------------------------- data
def _read_config(path: str, overrides: Sequence[str], trusted: bool = False) -> dict:
    from omegaconf import OmegaConf

    from solo_qscore.adapters.solo_checkpoint import CHECKPOINT_KEY, CheckpointError, read_checkpoint
    from solo_qscore.adapters.solo_config import run_view
    from solo_qscore.cli.open_run import with_overrides

    checkpoint = read_checkpoint(path, trusted=trusted)
    saved = checkpoint.get(CHECKPOINT_KEY, {}).get("config")
    if not saved:
        raise CheckpointError(f"{path} was not written by solo-qscore pretrain (no run config inside)")
    return with_overrides(run_view(OmegaConf.create(saved)), list(overrides))


def check_same_data(paths: Sequence[str], cfgs: Sequence[Mapping[str, Any]]) -> None:
    """``ConfigError`` unless every checkpoint was trained on the first one's dataset and image size."""
    ref = (cfgs[0]["data"]["dataset"], cfgs[0]["data"]["image_size"])
    for path, cfg in zip(paths[1:], cfgs[1:]):
        got = (cfg["data"]["dataset"], cfg["data"]["image_size"])
        if got != ref:
            raise ConfigError(
                f"checkpoints were trained on different data: {paths[0]} on {ref[0]} at {ref[1]} px, "
                f"{path} on {got[0]} at {got[1]} px (config keys 'data.dataset', 'data.image_size'); "
                "a correlation across encoders needs one evaluation set"
            )


def attribute_labels(dataset) -> dict[str, Any]:
    """``{attribute: LongTensor[N]}``: Trifeature's colour/shape/texture, a dict ``attributes``, or the class."""
    import torch

    from solo_qscore.data import ATTRIBUTES

    attrs = getattr(dataset, "attributes", None)
    if isinstance(attrs, Mapping):
        return {str(k): torch.as_tensor(v, dtype=torch.long) for k, v in attrs.items()}
    if getattr(dataset, "name", None) == "trifeature" and attrs is not None:
        return {name: attrs[:, k] for k, name in enumerate(ATTRIBUTES)}
    return {"class": torch.as_tensor(dataset.targets, dtype=torch.long)}


def _split(data_cfg: Mapping[str, Any], train: bool):
    """(dataset, {attribute: labels}) of one split, with the config's seeded subset applied."""
    from solo_qscore.data import LabelledSubset, load_dataset, subset_indices

    dataset = load_dataset(str(data_cfg["dataset"]), root=str(data_cfg["root"]), train=train,
                           image_size=int(data_cfg["image_size"]), fallback=data_cfg.get("fallback"))
    labels = attribute_labels(dataset)
    idx = subset_indices(len(dataset), data_cfg.get("train_subset" if train else "val_subset"))
    if idx is not None:
        dataset = LabelledSubset(dataset, idx)
        labels = {k: v[idx] for k, v in labels.items()}
    return dataset, labels


# ----------------------------------------------------------------------------------------- compute
def _projections(backbone, projector, loader, device, seed: int):
    """Projections of the first two augmented views of every image, with the same crops on every call."""
    import torch

    z1, z2 = [], []
    backbone.eval()
    projector.eval()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)  # augmentations draw from torch's RNG only; num_workers = 0
        for _, crops, _ in loader:
            z1.append(projector(backbone(crops[0].to(device))).float().cpu())
            z2.append(projector(backbone(crops[1].to(device))).float().cpu())
    return torch.cat(z1), torch.cat(z2)


# long: one loop over checkpoints (load, embed, held-out InfoNCE, readouts) then the correlations; kept in reading order
def evaluate_checkpoints(
    paths: Sequence[str], overrides: Sequence[str] = (), temperature: float = 0.5, batch_size: int = 256,
    seed: int = 0, trusted: bool = False,
) -> dict[str, Any]:
    """Held-out InfoNCE and readout errors of every checkpoint, and their correlations (see the module docstring)."""
    import torch
    from torch.utils.data import DataLoader

    from solo_qscore.analysis.loss_readout import MIN_ENCODERS, correlation_matrix, heldout_infonce
    from solo_qscore.cli.open_run import load_checkpoint as load_method
    from solo_qscore.data import (
        NCropAugmentation,
        PretrainDataset,
        TransformDataset,
        build_crop_pipelines,
        dataset_stats,
        eval_transform,
    )
    from solo_qscore.probe.backbone import find_backbone
    from solo_qscore.probe.features import extract_features
    from solo_qscore.probe.linear import fit_linear_probe

    if len(paths) < MIN_ENCODERS:
        raise ConfigError(f"loss-readout needs at least {MIN_ENCODERS} checkpoints (a correlation over "
                          f"{len(paths)} encoder(s) is undefined or trivially +-1), got {len(paths)}")
    if not temperature > 0:
        raise ConfigError(f"--temperature must be > 0, got {temperature}")
    if batch_size < 2:
        raise ConfigError(f"--batch-size must be >= 2, got {batch_size}")
    cfgs = [_read_config(p, overrides, trusted) for p in paths]
    check_same_data(paths, cfgs)
    cfg = cfgs[0]
    data = cfg["data"]
    train_set, train_labels = _split(data, train=True)
    val_set, val_labels = _split(data, train=False)
    if len(val_set) < batch_size:
        raise ConfigError(f"the validation set has {len(val_set)} images, fewer than --batch-size {batch_size} "
                          "(lower --batch-size or raise data.val_subset)")
    mean, std = dataset_stats(train_set.name)
    plain = eval_transform(int(data["image_size"]), mean, std)
    pipelines = build_crop_pipelines(cfg["augmentations"], mean, std)
    if len(pipelines) < 2:
        raise ConfigError("config key 'augmentations' must give at least two crops for the two-view InfoNCE")
    train_loader = DataLoader(TransformDataset(train_set, plain), batch_size=batch_size, shuffle=False)
    val_loader = DataLoader(TransformDataset(val_set, plain), batch_size=batch_size, shuffle=False)
    # own generator: creating the loader's iterator then draws no number from the global RNG the crops use
    view_loader = DataLoader(PretrainDataset(val_set, NCropAugmentation(pipelines[:2])), batch_size=batch_size,
                             shuffle=False, drop_last=True, generator=torch.Generator().manual_seed(seed))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    probe_kwargs = {"max_iter": cfg["probe"]["max_iter"], "weight_decay": cfg["probe"]["weight_decay"]}
    attributes = list(train_labels)

    rows = []
    for path, ckpt_cfg in zip(paths, cfgs):
        model, _, _ = load_method(path, trusted=trusted)
        projector = getattr(model, "projector", None)
        if not isinstance(projector, torch.nn.Module):
            raise ConfigError(f"{path}: method '{ckpt_cfg['method']}' has no projector to evaluate InfoNCE with")
        backbone = find_backbone(model).to(device)
        projector.to(device)
        z1, z2 = _projections(backbone, projector, view_loader, device, seed)
        loss = float(heldout_infonce(z1, z2, temperature, batch_size))
        train_h, _ = extract_features(backbone, train_loader, device)
        val_h, _ = extract_features(backbone, val_loader, device)
        errors = {}
        for name in attributes:
            num_classes = int(max(train_labels[name].max(), val_labels[name].max())) + 1
            probe = fit_linear_probe(train_h, train_labels[name].to(train_h.device), num_classes=num_classes,
                                     **probe_kwargs)
            pred = probe.predict(val_h).cpu()
            errors[name] = 100.0 * float((pred != val_labels[name]).double().mean())
        rows.append({"checkpoint": str(path), "name": ckpt_cfg["name"], "method": ckpt_cfg["method"],
                     "train_temperature": ckpt_cfg["method_kwargs"].get("temperature"),
                     "ifm": ckpt_cfg["ifm"] if ckpt_cfg["ifm"]["enabled"] else None,
                     "hard_negatives": (ckpt_cfg["hard_negatives"] if ckpt_cfg["hard_negatives"]["enabled"]
                                        else None),
                     "infonce": loss, "error": errors})
        del model, backbone, projector

    table = torch.tensor([[r["infonce"], *(r["error"][a] for a in attributes)] for r in rows], dtype=torch.float64)
    corr = correlation_matrix(table)
    return {
        "temperature": temperature, "batch_size": batch_size, "seed": seed,
        "dataset": train_set.name, "image_size": int(data["image_size"]),
        "num_train": len(train_set), "num_val": len(val_set), "num_views_batches": len(view_loader),
        "attributes": attributes, "variables": ["infonce", *attributes],
        "correlation": corr.tolist(),
        "loss_error_correlation": {a: float(corr[0, 1 + k]) for k, a in enumerate(attributes)},
        "checkpoints": rows,
    }


# ----------------------------------------------------------------------------------------- figure
def loss_readout_figure(result: Mapping[str, Any]):
    """The command's figure (:func:`solo_qscore.plotting.loss_readout.loss_readout_figure`) of its result."""
    from solo_qscore.plotting.loss_readout import loss_readout_figure as draw

    rows = result["checkpoints"]
    title = (f"{result['dataset']}: held-out InfoNCE at τ={result['temperature']} (B={result['batch_size']}, "
             f"{result['num_val']} held-out images) vs linear-readout error ({result['num_train']} train images)")
    return draw([r["infonce"] for r in rows], {a: [r["error"][a] for r in rows] for a in result["attributes"]},
                result["correlation"], result["loss_error_correlation"], [_short(r) for r in rows],
                result["temperature"], title=title)


def _short(row: Mapping[str, Any]) -> str:
    parts = [str(row["name"])]
    if row.get("train_temperature") is not None:
        parts.append(f"τ={row['train_temperature']}")
    if row.get("ifm"):
        parts.append(f"IFM ε={row['ifm']['epsilon']}")
    if row.get("hard_negatives"):
        parts.append(f"HN β={row['hard_negatives']['beta']}")
    return ", ".join(parts) + f": loss {row['infonce']:.3f}"


# ----------------------------------------------------------------------------------------- command
def cmd_loss_readout(args: argparse.Namespace) -> int:
    from solo_qscore._files import write_json_atomic
    from solo_qscore.plotting import save_figure_atomic
    from solo_qscore.report.result import to_jsonable

    trusted = args.trust_checkpoint
    if args.out:
        out = Path(args.out)
    else:
        first = _read_config(args.checkpoints[0], getattr(args, "overrides", []), trusted)
        out = Path(first["output_dir"]) / "loss_readout"
    check_output_folder(out, args.overwrite, JSON_NAME)
    result = evaluate_checkpoints(args.checkpoints, list(getattr(args, "overrides", [])), args.temperature,
                                  args.batch_size, args.seed, trusted=trusted)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(to_jsonable(result), out / JSON_NAME)
    save_figure_atomic(loss_readout_figure(result), out / PNG_NAME, dpi=100)
    for row in result["checkpoints"]:
        errs = " ".join(f"{a} {row['error'][a]:.1f}%" for a in result["attributes"])
        print(f"{row['name']}: InfoNCE(τ={result['temperature']}) {row['infonce']:.4f} | readout error {errs}")
    print("Pearson r(InfoNCE, error): " + json.dumps(
        {a: round(v, 4) for a, v in result["loss_error_correlation"].items()}))
    print(f"report: {out / JSON_NAME}\nfigure: {out / PNG_NAME}")
    return 0
