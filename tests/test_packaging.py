"""The wheel installs into a fresh virtual environment and maps callbacks/ to solo_qscore.callbacks."""

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(*cmd, cwd=None):
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)


def test_wheel_installs_and_imports_in_fresh_venv(tmp_path):
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-w", str(dist))
    wheel = next(dist.glob("solo_qscore-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "solo_qscore/callbacks/__init__.py" in names
    assert "solo_qscore/callbacks/activation_statistics.py" in names
    assert "solo_qscore/adapters/solo_main.py" in names and "solo_qscore/data/loaders.py" in names
    assert "solo_qscore/analysis/explain.py" in names  # every package of the source tree is in the wheel
    for folder in (REPO / "solo_qscore").rglob("__init__.py"):
        assert f"solo_qscore/{folder.relative_to(REPO / 'solo_qscore').as_posix()}" in names, folder
    assert "solo_qscore/method_configs/cifar/simclr.yaml" in names  # the configs users start from
    assert "solo_qscore/method_configs/cifar/augmentations/symmetric.yaml" in names
    assert not any(name.startswith("callbacks/") for name in names)

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", str(venv))
    python = venv / "bin" / "python"
    # reuse this environment's torch & co. (a path entry only: no editable install leaks in)
    site = run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    Path(site, "reuse_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel))
    probe = (
        "import solo_qscore, solo_qscore.callbacks as cb; "
        "print(solo_qscore.__file__); print(cb.ActivationStatisticsCallback.__module__)"
    )
    out = run(str(python), "-c", probe, cwd=tmp_path).stdout.split()
    assert out[0].startswith(str(venv)), out  # imported from the wheel, not the checkout
    assert out[1] == "solo_qscore.callbacks.activation_statistics"
    assert (venv / "bin" / "solo-qscore").exists()  # console script
    help_text = run(str(venv / "bin" / "solo-qscore"), "--help", cwd=tmp_path).stdout
    assert "pretrain" in help_text and "explain" in help_text  # the analysis commands import from the wheel
    configs = run(str(python), "-c", "from solo_qscore.cli import packaged_configs; print(packaged_configs())",
                  cwd=tmp_path).stdout.strip()
    assert configs.startswith(str(venv)) and Path(configs, "cifar", "simclr.yaml").is_file()
