"""``benchmarks/bench_selection.py --smoke``: trains 4 tiny checkpoints (SimCLR and BYOL, 2 epochs each), ranks
them with ``solo-qscore rank``'s function and writes the markdown table, the verdicts and the figure."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "bench_selection.py"


def test_smoke_run_ranks_every_checkpoint(tmp_path):
    md, png = tmp_path / "selection.md", tmp_path / "selection.png"
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--methods", "simclr", "byol", "--lr-factors", "1.0",
           "--threads", "1", "--num-workers", "0", "--bootstrap", "50", "--run-prefix", f"{tmp_path}/runs/",
           "--md", str(md), "--png", str(png)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,  # no timeout: a busy machine is slow
                          env={**os.environ, "WANDB_MODE": "disabled", "CI": "true"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    with (tmp_path / "runs" / "ranking" / "ranking.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {r["method"] for r in rows} == {"simclr", "byol"}
    assert sorted(int(r["epoch"]) for r in rows) == [0, 0, 1, 1]
    assert all(r["accuracy"] and r["rankme"] and r["q_mean@eps2"] for r in rows)
    text = md.read_text()
    for needed in ("| rankme | all | 4 |", "| q_mean | simclr | 2 |", "Q-Score against RankMe", "- all:",
                   "python benchmarks/bench_selection.py"):
        assert needed in text, needed
    assert png.stat().st_size > 10_000
