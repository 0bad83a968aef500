"""The report's files on reference cases, to show a refactor of the report changes none of them.

    python benchmarks/report_reference.py write OUT [--inputs DIR]     (from the repository root)
    python benchmarks/report_reference.py compare OUT_BEFORE OUT_AFTER

``write`` builds four reports and writes each folder (``write_report``) into ``OUT/<case>/``:

* ``planted``: the planted features of tests/report (1200 train, 600 validation, r = 128, 8 classes),
  a compression study (fractions 0.25, 0.5, 1; 3 seeds; batch 500) and random images (``q_extremes.png``);
* ``planted_train``: the same report with the train split's table (``sample_table``) and images;
* ``real``: features of a 1-epoch SimCLR run on 32 Fashion-MNIST images evaluated on 120 / 60 images
  (tests/report's ``features``), eps 2, the default compression study, the class names, the real
  validation images; the features are cached in ``--inputs`` (default ``OUT/../report_reference_inputs``)
  so that two runs (before and after a change) read the same ones;
* ``small``: the small report of tests/test_reliability.py (r = 16, no compression study).

Then ``OUT/digests.json``: the sha256 of every file and, for the PNGs, of the decoded RGBA pixels.
``compare`` prints which digests differ (exit 1 if any). The digests are not committed as a test:
PNG bytes depend on the matplotlib / freetype build and the probe's floats on the BLAS, so they are
only comparable between two runs on one machine (issue 23: all 70 were identical before/after).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the planted features, the tiny run


def real_inputs(folder: Path) -> dict:
    """The features and validation images of a tiny SimCLR run (trained once, then read from ``folder``)."""
    path = folder / "real.pt"
    if path.exists():
        return torch.load(path)
    from conftest import tiny_pretrain
    from helpers.real_features import EVAL, TINY, _features

    from solo_qscore.cli.open_run import load_checkpoint, with_overrides
    from solo_qscore.data import make_eval_loaders

    folder.mkdir(parents=True, exist_ok=True)
    ckpt = Path(tiny_pretrain(folder / "run", "simclr", *TINY)["checkpoint"])
    _, saved, _ = load_checkpoint(str(ckpt))
    _, val_loader = make_eval_loaders(with_overrides(saved, EVAL)["data"])
    images = torch.stack([val_loader.dataset[i][0] for i in range(len(val_loader.dataset))])
    out = {"features": _features(ckpt), "images": images}
    torch.save(out, path)
    return out


def small_inputs() -> tuple:
    g = torch.Generator().manual_seed(0)
    train_y, val_y = torch.randint(0, 3, (120,), generator=g), torch.randint(0, 3, (60,), generator=g)
    train_h = (torch.randn(120, 16, generator=g) + 2.0 * torch.nn.functional.one_hot(train_y, 16)).relu()
    val_h = (torch.randn(60, 16, generator=g) + 2.0 * torch.nn.functional.one_hot(val_y, 16)).relu()
    return train_h, train_y, val_h, val_y


def write_all(out: Path, inputs: Path) -> None:
    import numba
    from helpers.data_configs import FASHION
    from helpers.planted import planted_features

    from solo_qscore.report.build import qscore_report
    from solo_qscore.report.config import AssociationSettings, CompressionSettings, ReportConfig
    from solo_qscore.report.samples import sample_table
    from solo_qscore.report.writer import write_report

    torch.set_num_threads(1)
    numba.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    train_h, train_y = planted_features(1200, seed=0)
    val_h, val_y = planted_features(600, seed=1)
    config = ReportConfig(compression=CompressionSettings((0.25, 0.5, 1.0), num_random_seeds=3), batch_size=500)
    report = qscore_report(train_h, train_y, val_h, val_y, config)
    write_report(report, out / "planted", images=torch.randn(600, 3, 12, 12, generator=gen))
    write_report(report, out / "planted_train", samples=sample_table(report, train_h, train_y, split="train"),
                 images=torch.rand(1200, 1, 10, 10, generator=gen))

    real = real_inputs(inputs)
    config = ReportConfig(eps=2.0, probe={"max_iter": 50, "weight_decay": 5e-4},
                          associations=AssociationSettings(max_features=8))
    write_report(qscore_report(*real["features"], config, class_names=FASHION), out / "real",
                 images=real["images"])

    config = ReportConfig(eps=1.0, probe={"max_iter": 20}, compression=None)
    write_report(qscore_report(*small_inputs(), config), out / "small", images=torch.rand(60, 3, 8, 8, generator=gen))
    (out / "digests.json").write_text(json.dumps(digests(out), indent=1, sort_keys=True) + "\n")


def digests(out: Path) -> dict[str, str]:
    """sha256 of every file under ``out`` and of the decoded pixels of every PNG."""
    from PIL import Image

    found = {}
    for path in sorted(out.rglob("*")):
        if not path.is_file() or path.name == "digests.json":
            continue
        key = path.relative_to(out).as_posix()
        found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        if path.suffix == ".png":
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGBA"))
            found[key + ":pixels"] = f"{hashlib.sha256(pixels.tobytes()).hexdigest()} {pixels.shape}"
    return found


def compare(before: Path, after: Path) -> int:
    a = json.loads((before / "digests.json").read_text())
    b = json.loads((after / "digests.json").read_text())
    differ = [key for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]
    for key in differ:
        print(f"DIFFERS {key}")
    print(f"{len(set(a) | set(b)) - len(differ)} identical, {len(differ)} differ")
    return 1 if differ else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    write = sub.add_parser("write", help="write the reference reports and their digests into OUT")
    write.add_argument("out", type=Path)
    write.add_argument("--inputs", type=Path, help="the real features cache (default OUT/../report_reference_inputs)")
    both = sub.add_parser("compare", help="compare the digests of two OUT folders")
    both.add_argument("before", type=Path)
    both.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.command == "compare":
        return compare(args.before, args.after)
    write_all(args.out, args.inputs or args.out.parent / "report_reference_inputs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
