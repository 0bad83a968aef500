"""Snapshots of a module's floating-point state, to tell whether a training step moved it."""

from __future__ import annotations

import torch


def float_state(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items() if v.dtype.is_floating_point}


def changed(before: dict, module: torch.nn.Module, prefix: str = "backbone.") -> bool:
    after = float_state(module)
    return any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))
