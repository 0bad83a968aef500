"""solo-learn main (1.0.6) through the adapter's public import path (solo_qscore.adapters.solo_main): the README's
two lines in solo-learn's own ``main_pretrain.py``, and the names the path re-exports.

Real solo-learn classes built from solo-learn's own config files
(``../shared/solo-learn-main/scripts/pretrain/cifar/*.yaml``, unchanged), a real Lightning
``Trainer`` on CPU and real Fashion-MNIST images (16 px, batch 8, two crops), shrunk only in width
(projector, prototypes, queues) so that a run takes a few optimiser steps in seconds.
"""

from __future__ import annotations

import pytest
from conftest import CONFIG_FILES, SOLO_CIFAR

from solo_qscore.adapters import solo_main


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    pass


def test_configs_are_solo_learns_own_files():
    assert SOLO_CIFAR.is_dir(), "../shared/solo-learn-main/scripts/pretrain/cifar is needed for these tests"
    for name in CONFIG_FILES.values():
        assert (SOLO_CIFAR / f"{name}.yaml").is_file()


def test_the_public_path_re_exports_each_name_from_its_concept_module():
    """Issue 23: the adapter is split by concept; ``solo_qscore.adapters.solo_main`` keeps every name users import
    (README, benchmarks), the same objects as in their modules."""
    from solo_qscore.adapters import solo_callbacks, solo_checkpoint, solo_config, solo_data, solo_method

    for name, module in [("with_qscore", solo_method), ("build_model", solo_method), ("QScoreMixin", solo_method),
                         ("CHECKPOINT_KEY", solo_method), ("qscore_callbacks", solo_callbacks),
                         ("read_checkpoint", solo_checkpoint), ("load_run", solo_checkpoint),
                         ("source_config", solo_checkpoint), ("CheckpointError", solo_checkpoint),
                         ("check_resume_checkpoint", solo_checkpoint), ("load_weights_into", solo_checkpoint),
                         ("prepare_config", solo_config), ("adapt_to_machine", solo_config),
                         ("eval_data_config", solo_config), ("run_view", solo_config),
                         ("make_pretrain_loader", solo_data), ("validation_loader", solo_data)]:
        assert getattr(solo_main, name) is getattr(module, name), name
    assert all(hasattr(solo_main, name) for name in solo_main.__all__)


def _solo_main_pretrain(tmp_path, folder, *overrides: str):
    """solo-learn's OWN ``main_pretrain.py`` (copied, with the README's two lines patched in, and a print of
    what the callbacks found) on ``folder`` with solo-learn's documented custom-data keys, in a subprocess."""
    import os
    import subprocess
    import sys

    solo_main = SOLO_CIFAR.parents[2] / "main_pretrain.py"
    text = solo_main.read_text()
    for old, new in [
        ("from solo.methods import METHODS\n",
         "from solo.methods import METHODS\n"
         "from solo_qscore.adapters.solo_main import qscore_callbacks, with_qscore\n"),
        ("    model = METHODS[cfg.method](cfg)\n", "    model = with_qscore(METHODS[cfg.method])(cfg)\n"),
        ("    trainer_kwargs = OmegaConf.to_container(cfg)\n",
         "    callbacks += qscore_callbacks(cfg)\n    trainer_kwargs = OmegaConf.to_container(cfg)\n"),
        ("        trainer.fit(model, train_loader, val_loader, ckpt_path=ckpt_path)\n",
         "        trainer.fit(model, train_loader, val_loader, ckpt_path=ckpt_path)\n"
         "        stats = next(c for c in callbacks if hasattr(c, 'frequencies'))\n"
         "        probe = next((c for c in callbacks if hasattr(c, 'last_report')), None)\n"
         "        print('QSCORE', stats.frequencies is not None, int(model.qscore_discriminative.sum()),\n"
         "              None if probe is None else probe.last_report.accuracy, flush=True)\n"),
    ]:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    (tmp_path / "main_pretrain.py").write_text(text)
    args = ["--config-path", str(SOLO_CIFAR), "--config-name", "simclr.yaml", "data.dataset=custom",
            "data.format=image_folder", f"data.train_path={folder}", "data.val_path=null",
            # tiny and on the CPU, through Hydra overrides only ('"1"': a length for solo's lr scaling, an int
            # for Lightning's CPU accelerator)
            "data.num_workers=0", "optimizer.batch_size=4", "method_kwargs.proj_hidden_dim=64",
            "method_kwargs.proj_output_dim=32", "augmentations.0.crop_size=16", "accelerator=cpu", 'devices="1"',
            "strategy=auto", "precision=32-true", "sync_batchnorm=false", "max_epochs=1",
            "++scheduler.warmup_epochs=0", "wandb.enabled=false", "checkpoint.enabled=false",
            "auto_resume.enabled=false", "+probe.max_iter=20", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    done = subprocess.run([sys.executable, "main_pretrain.py", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    result = next(line.split()[1:] for line in done.stdout.splitlines() if line.startswith("QSCORE "))
    return result, done.stderr


def test_solo_learns_own_main_pretrain_on_a_labelled_image_folder(tmp_path):
    """Issue 22 (3), end to end: solo-learn's own script with the README's two lines crashed in
    ``qscore_callbacks`` (ValueError: unknown dataset 'custom'). Now D is computed, the probe runs on a held-out
    part of the class folders, and a truncated image is skipped and named (``+data.bad_images=skip``)."""
    from helpers.image_folders import labelled_folder, truncate

    folder = labelled_folder(tmp_path / "images", classes=("ant", "bee", "cat"), per_class=4)
    truncate(folder / "bee" / "01.png")
    (stats_ran, num_discriminative, accuracy), err = _solo_main_pretrain(tmp_path, folder, "+data.bad_images=skip")
    assert stats_ran == "True" and int(num_discriminative) > 0
    assert 0.0 <= float(accuracy) <= 1.0  # the probe's report on the 3 held-out images
    assert f"solo-qscore: skipped 1 unreadable image (data.bad_images=skip): {folder}/bee/01.png" in err


def test_solo_learns_own_main_pretrain_on_unlabelled_images(tmp_path):
    """solo-learn's documented unlabelled form (a flat folder, ``data.no_labels=true``): D is computed, the probe
    is skipped with one line, and the run is not stopped by solo's online classifier (NaN without labels)."""
    from helpers.image_folders import flat_folder

    folder = flat_folder(tmp_path / "images", n=12)
    (stats_ran, num_discriminative, accuracy), err = _solo_main_pretrain(tmp_path, folder, "+data.no_labels=true")
    assert stats_ran == "True" and int(num_discriminative) > 0 and accuracy == "None"
    assert err.count("solo-qscore: the probe is skipped") == 1, err[-3000:]
