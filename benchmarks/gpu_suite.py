"""The papers' Q-Score studies on one large GPU in one command (prepared in advance; ``--smoke`` on CPU).

    python benchmarks/gpu_suite.py [--budget-min 9] [--out benchmarks/results_gpu.md]
    python benchmarks/gpu_suite.py --smoke --out /tmp/gpu_smoke.md        # about a minute on a CPU

Within ``--budget-min`` minutes of wall time on one GPU (16 CPU cores for the loaders): SimCLR and BYOL
(ResNet-18, CIFAR stem, solo-learn main's cifar configs in ``method_configs/cifar``) pre-trained on
Fashion-MNIST at 32x32 for as many epochs as fit (Lightning's ``max_time``), then for each encoder

1. Q-Score predicts misclassification (Kalibhat et al., AAAI 2024, Fig. 4): the probe report's AUROC
   and AUPRC of Q at the paper's eps = 4 and at eps = 2;
2. compression (Fig. 2): probe accuracy of the discriminative band vs random subsets and PCA (from the
   same report);
3. regularisation (Table A.1): the encoder further-trained briefly with and without the Q-Score
   regulariser at the paper's lr 1e-5 (``solo-qscore finetune``), probe accuracy of both.

It writes one markdown results file. Fashion-MNIST is read from ``SOLO_QSCORE_FASHION_MNIST`` when set
(a copy of Debian's files that travels with the working tree), else from the Debian package.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from solo_qscore.config import apply_overrides, compose  # noqa: E402
from solo_qscore.train import pretrain  # noqa: E402

CONFIGS = ROOT / "method_configs" / "cifar"


def _hhmmss(seconds: float) -> str:
    seconds = max(1, int(seconds))
    return f"00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def overrides(args, method: str, out: Path, seconds: float) -> list[str]:
    gpu = torch.cuda.is_available()
    common = [
        "data.dataset=fashion_mnist", "wandb.enabled=false", f"output_dir={out}", "devices=1", "strategy=auto",
        "sync_batchnorm=false", "++scheduler.warmup_epochs=0", "+enable_progress_bar=false",
        "probe.every_n_epochs=0", "qscore.eps=2.0",
    ]
    if args.smoke:
        return [*common, "accelerator=cpu", "precision=32-true", "data.train_subset=128", "data.val_subset=64",
                "data.num_workers=0", "optimizer.batch_size=32", "+max_steps=3", "augmentations.0.crop_size=16",
                "method_kwargs.proj_hidden_dim=64", "method_kwargs.proj_output_dim=32", "probe.max_iter=20",
                "probe.compression=false",  # ~90 probe fits per report, 6 reports: the real run keeps it
                *(["method_kwargs.pred_hidden_dim=64"] if method == "byol" else [])]
    return [*common, "accelerator=gpu" if gpu else "accelerator=cpu",
            "precision=bf16-mixed", "data.val_subset=10000", "data.num_workers=12", "optimizer.batch_size=256",
            "max_epochs=1000", f"+max_time={_hhmmss(seconds)}", "probe.max_iter=300"]


def study(args, method: str, budget: float) -> dict:
    out = Path(args.work) / method
    t0 = time.time()
    cfg = compose(CONFIGS, method, overrides(args, method, out, budget * 0.75))
    summary = pretrain(cfg, overwrite=True)
    report = json.loads((out / "probe" / "probe.json").read_text())
    row = {"method": method, "steps": summary["global_step"], "pretrain_s": round(time.time() - t0, 1),
           "accuracy": report["accuracy"], "auroc_eps2": report["auroc"], "auprc_eps2": report["auprc"],
           "num_discriminative": report["num_discriminative"], "compression": report.get("compression")}
    # regularisation: the paper's further-training, with and without the regulariser, same budget
    from solo_qscore.adapters.solo_main import read_checkpoint, source_config

    ckpt = summary["checkpoint"]
    for arm, extra in (("plain", ["qscore.enabled=false"]), ("qscore", ["qscore.enabled=true"])):
        cfg = source_config(read_checkpoint(ckpt), ckpt)
        steps = ["+max_steps=2"] if args.smoke else [f"+max_time={_hhmmss(budget * 0.1)}"]
        apply_overrides(cfg, ["optimizer.lr=1.0e-5", f"output_dir={out}-ft-{arm}", *extra, *steps])
        ft = pretrain(cfg, init_from=ckpt, overwrite=True)
        row[f"ft_{arm}_accuracy"] = (ft["probe"] or {}).get("accuracy")
    return row


def write_results(rows: list[dict], path: Path, args, wall: float) -> None:
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    lines = [f"# GPU suite results ({'smoke run, not results' if args.smoke else 'GPU run'})", "",
             f"Machine: {device}. Command: `python benchmarks/gpu_suite.py {' '.join(sys.argv[1:])}`. "
             f"Wall time {wall / 60:.1f} min.", "",
             "| method | steps | probe acc. | AUROC(Q) eps 2 | AUPRC(Q) eps 2 | D | further-trained plain | "
             "further-trained + Q-Score |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['steps']} | {r['accuracy']} | {r['auroc_eps2']} | {r['auprc_eps2']} | "
                     f"{r['num_discriminative']} | {r['ft_plain_accuracy']} | {r['ft_qscore_accuracy']} |")
    lines += ["", "Compression (probe accuracy by subset size) per method:", ""]
    for r in rows:
        lines.append(f"- {r['method']}: `{json.dumps(r['compression'])[:2000]}`")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-min", type=float, default=9.0, help="total wall-time budget in minutes")
    parser.add_argument("--methods", nargs="+", default=["simclr", "byol"])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results_gpu.md"))
    parser.add_argument("--work", default=str(ROOT / "runs" / "gpu_suite"))
    parser.add_argument("--smoke", action="store_true", help="a tiny CPU run of every step (about a minute)")
    args = parser.parse_args()
    t0 = time.time()
    per_method = args.budget_min * 60 / len(args.methods)
    rows = [study(args, method, per_method) for method in args.methods]
    write_results(rows, Path(args.out), args, time.time() - t0)
    print(Path(args.out).read_text())


if __name__ == "__main__":
    main()
