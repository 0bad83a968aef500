"""benchmarks/gpu_suite.py --smoke: every step of the GPU suite runs (tiny, on the CPU) and writes its table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_suite_smoke(tmp_path):
    out = tmp_path / "results.md"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1", "CI": "true"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), "--smoke", "--out", str(out),
                           "--work", str(tmp_path / "work")], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "smoke run" in text
    for method in ("simclr", "byol"):
        row = next(line for line in text.splitlines() if line.startswith(f"| {method} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert int(cells[1]) == 3 and 0.0 <= float(cells[2]) <= 1.0  # steps, probe accuracy
        assert cells[6] != "None" and cells[7] != "None"  # both further-training arms ran their probe
