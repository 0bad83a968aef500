"""A small CPU ``Trainer`` of either Lightning namespace (the adapter tests)."""

from __future__ import annotations


def trainer(namespace: str = "lightning.pytorch", **kwargs):
    import importlib

    pl = importlib.import_module(namespace)
    options = dict(accelerator="cpu", devices=1, enable_progress_bar=False, logger=False, enable_checkpointing=False,
                   enable_model_summary=False, num_sanity_val_steps=0, max_steps=2)
    options.update(kwargs)
    return pl.Trainer(**options)
