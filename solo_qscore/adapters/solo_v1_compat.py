"""Run solo-learn 1.0.2's method classes under pytorch-lightning 2.x (SPEC §5).

Importing this module makes ``import solo`` work and fixes, from outside solo-learn, the
breakages listed in SPEC §5; each fix is a small, named function applied once:

1. ``pl_bolts`` (needed by ``solo.methods.base``) is replaced by a shim module providing our own
   :class:`~solo_qscore.adapters.warmup_cosine.LinearWarmupCosineAnnealingLR`.
2. ``validation_epoch_end`` (removed in Lightning 2.0) is moved aside and re-driven from
   ``on_validation_batch_end`` / ``on_validation_epoch_end``.
3. ``BaseMomentumMethod.on_train_batch_end`` gets ``dataloader_idx`` as optional.
4. ``WeightedKNNClassifier`` no longer passes ``compute_on_step`` to torchmetrics and its
   ``forward`` only updates (no ``compute()`` per step).
5. ``DINO.clip_gradients(clip)`` is renamed so Lightning's ``clip_gradients`` works again.
"""

from __future__ import annotations

import importlib.util
import sys
import types

from solo_qscore.adapters.warmup_cosine import LinearWarmupCosineAnnealingLR

SOLO_VERSION = "1.0.2"
_PATCHED = False


def install_pl_bolts_shim() -> None:
    """Fix 1: provide ``pl_bolts.optimizers.lr_scheduler.LinearWarmupCosineAnnealingLR``."""
    if "pl_bolts" in sys.modules or importlib.util.find_spec("pl_bolts") is not None:
        return
    names = ["pl_bolts", "pl_bolts.optimizers", "pl_bolts.optimizers.lr_scheduler"]
    modules = {name: types.ModuleType(name) for name in names}
    modules["pl_bolts"].optimizers = modules["pl_bolts.optimizers"]
    modules["pl_bolts.optimizers"].lr_scheduler = modules["pl_bolts.optimizers.lr_scheduler"]
    modules["pl_bolts.optimizers.lr_scheduler"].LinearWarmupCosineAnnealingLR = LinearWarmupCosineAnnealingLR
    for module in modules.values():
        module.__dict__["__solo_qscore_shim__"] = True
    sys.modules.update(modules)


def redrive_validation_epoch_end(cls: type) -> None:
    """Fix 2: Lightning 2 refuses modules defining ``validation_epoch_end``; collect and re-drive it."""
    if "validation_epoch_end" not in cls.__dict__:
        return
    cls._solo_validation_epoch_end = cls.__dict__["validation_epoch_end"]
    delattr(cls, "validation_epoch_end")


def _on_validation_batch_end(self, outputs, batch, batch_idx, dataloader_idx=0) -> None:
    if outputs is not None:
        self.__dict__.setdefault("_solo_validation_outputs", []).append(outputs)


def _on_validation_epoch_end(self) -> None:
    outputs = self.__dict__.pop("_solo_validation_outputs", [])
    if outputs:
        type(self)._solo_validation_epoch_end(self, outputs)


def optional_dataloader_idx(cls: type) -> None:
    """Fix 3: Lightning 2 calls ``on_train_batch_end(outputs, batch, batch_idx)``."""
    original = cls.__dict__["on_train_batch_end"]
    if getattr(original, "__solo_qscore_patched__", False):
        return

    def on_train_batch_end(self, outputs, batch, batch_idx, dataloader_idx=0):
        return original(self, outputs, batch, batch_idx, dataloader_idx)

    on_train_batch_end.__solo_qscore_patched__ = True
    on_train_batch_end.__doc__ = original.__doc__
    cls.on_train_batch_end = on_train_batch_end


def fix_knn_classifier(knn_module, base_module) -> type:
    """Fix 4: a ``WeightedKNNClassifier`` that torchmetrics >= 1.0 accepts and that updates per step."""
    from torchmetrics import Metric

    original = knn_module.WeightedKNNClassifier
    if getattr(original, "__solo_qscore_patched__", False):
        return original
    original_init = original.__init__

    class WeightedKNNClassifier(original):
        __solo_qscore_patched__ = True
        full_state_update = False

        def __init__(self, *args, **kwargs):
            metric_init = Metric.__init__

            def init_without_compute_on_step(metric, *a, compute_on_step=None, **kw):
                metric_init(metric, *a, **kw)

            Metric.__init__ = init_without_compute_on_step
            try:
                original_init(self, *args, **kwargs)
            finally:
                Metric.__init__ = metric_init

        def forward(self, *args, **kwargs):  # update only: compute() once per epoch
            self.update(*args, **kwargs)

    knn_module.WeightedKNNClassifier = WeightedKNNClassifier
    base_module.WeightedKNNClassifier = WeightedKNNClassifier
    return WeightedKNNClassifier


def rename_dino_clip_gradients(dino_cls: type) -> None:
    """Fix 5: DINO's ``clip_gradients(clip)`` shadows ``LightningModule.clip_gradients``.

    DINO's own version moves to ``dino_clip_gradients``; ``clip_gradients`` dispatches on its
    first argument: a number (DINO's call in ``on_after_backward``) or an optimizer (Lightning's).
    """
    own = dino_cls.__dict__.get("clip_gradients")
    if own is None or getattr(own, "__solo_qscore_patched__", False):
        return
    import pytorch_lightning as pl

    dino_cls.dino_clip_gradients = own

    def clip_gradients(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        if isinstance(optimizer, (int, float)):
            return self.dino_clip_gradients(optimizer)
        return pl.LightningModule.clip_gradients(self, optimizer, gradient_clip_val, gradient_clip_algorithm)

    clip_gradients.__solo_qscore_patched__ = True
    dino_cls.clip_gradients = clip_gradients


def patch_solo() -> None:
    """Apply all fixes (idempotent) and import solo-learn."""
    global _PATCHED
    if _PATCHED:
        return
    install_pl_bolts_shim()
    import solo  # noqa: F401
    from solo.methods import base, dino
    from solo.utils import knn

    for cls in (base.BaseMethod, base.BaseMomentumMethod):
        redrive_validation_epoch_end(cls)
    base.BaseMethod.on_validation_batch_end = _on_validation_batch_end
    base.BaseMethod.on_validation_epoch_end = _on_validation_epoch_end
    optional_dataloader_idx(base.BaseMomentumMethod)
    fix_knn_classifier(knn, base)
    rename_dino_clip_gradients(dino.DINO)
    _PATCHED = True


patch_solo()
