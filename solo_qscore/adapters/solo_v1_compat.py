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

Found by ``tests/test_solo_adapter.py`` beyond the list in SPEC §5:

6. ``SwAV`` registers its ``queue`` buffer only in ``on_train_start``, so its checkpoints do not
   load into a new module and resuming zeroes the queue (:func:`swav_queue_in_state_dict`).
7. ``WeightedKNNClassifier.compute`` counts classes from the validation labels only and indexes
   out of bounds when the validation set misses a class: then the kNN metrics of that epoch are
   NaN with a warning saying why, instead of a crash (:func:`knn_compute_or_warn`).
8. ``BaseMomentumMethod.validation_epoch_end`` calls ``super().validation_epoch_end``, which fix 2
   removed (:func:`solo_validation_epoch_end_restored`).
9. ``static_lr`` groups (SimSiam) put a ``functools.partial`` into the scheduler's state, so such
   runs cannot resume (:func:`static_lr_in_scheduler_class`).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import sys
import types
import warnings

import torch

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


_REDRIVEN_CLASSES: list[type] = []


def redrive_validation_epoch_end(cls: type) -> None:
    """Fix 2: Lightning 2 refuses modules defining ``validation_epoch_end``; collect and re-drive it.

    The method moves to ``_solo_validation_epoch_end``; ``on_validation_batch_end`` collects the
    step outputs and ``on_validation_epoch_end`` calls it (see :func:`call_solo_validation_epoch_end`).
    """
    if "validation_epoch_end" not in cls.__dict__:
        return
    cls._solo_validation_epoch_end = cls.__dict__["validation_epoch_end"]
    delattr(cls, "validation_epoch_end")
    _REDRIVEN_CLASSES.append(cls)


@contextlib.contextmanager
def solo_validation_epoch_end_restored():
    """Put solo's ``validation_epoch_end`` methods back on their classes for the duration of a call.

    ``BaseMomentumMethod.validation_epoch_end`` calls ``super().validation_epoch_end(...)``, which
    must find ``BaseMethod``'s; Lightning only rejects the name when a loop starts, so restoring it
    while the epoch-end hook runs is safe.
    """
    restored = [cls for cls in _REDRIVEN_CLASSES if "validation_epoch_end" not in cls.__dict__]
    for cls in restored:
        cls.validation_epoch_end = cls.__dict__["_solo_validation_epoch_end"]
    try:
        yield
    finally:
        for cls in restored:
            delattr(cls, "validation_epoch_end")


def call_solo_validation_epoch_end(module, outputs: list) -> None:
    """Run solo-learn's ``validation_epoch_end(outputs)`` of ``module``'s class (fix 2)."""
    with solo_validation_epoch_end_restored():
        type(module)._solo_validation_epoch_end(module, outputs)


def _on_validation_batch_end(self, outputs, batch, batch_idx, dataloader_idx=0) -> None:
    if outputs is not None:
        self.__dict__.setdefault("_solo_validation_outputs", []).append(outputs)


def _on_validation_epoch_end(self) -> None:
    outputs = self.__dict__.pop("_solo_validation_outputs", [])
    if outputs:
        call_solo_validation_epoch_end(self, outputs)


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

        def compute(self):
            return knn_compute_or_warn(self, original.compute)

    knn_module.WeightedKNNClassifier = WeightedKNNClassifier
    base_module.WeightedKNNClassifier = WeightedKNNClassifier
    return WeightedKNNClassifier


def knn_compute_or_warn(knn, solo_compute) -> tuple[float, float]:
    """Fix 7: run solo's kNN ``compute`` only when it can index every class it will see.

    solo-learn 1.0.2 sizes its one-hot by ``unique(test_targets).numel()``; when the validation
    labels do not cover ``0 .. max label`` of train and validation, it would index out of bounds.
    Then the epoch's kNN accuracies are NaN (with a warning naming the missing classes).
    """
    train_targets, test_targets = torch.cat(knn.train_targets), torch.cat(knn.test_targets)
    num_classes = int(torch.cat([train_targets, test_targets]).max()) + 1
    present = torch.unique(test_targets)
    if present.numel() != num_classes:
        missing = sorted(set(range(num_classes)) - set(present.tolist()))
        warnings.warn(
            f"kNN evaluation skipped this epoch (NaN): the validation set has no sample of class(es) "
            f"{missing[:10]}, and solo-learn 1.0.2's kNN counts classes from the validation labels. "
            "Use a validation set with every class (e.g. no data.val_subset) or knn_eval=false.",
            stacklevel=2,
        )
        knn.reset()
        return float("nan"), float("nan")
    return solo_compute(knn)


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


def _resize_swav_queue(module, state_dict, prefix, *args) -> None:
    """Load-state-dict pre-hook: take the queue shape of the checkpoint (DDP runs keep Q / world_size)."""
    saved = state_dict.get(prefix + "queue")
    queue = module._buffers.get("queue")
    if saved is not None and queue is not None and saved.shape != queue.shape:
        module._buffers["queue"] = queue.new_zeros(saved.shape)


def swav_queue_in_state_dict(swav_cls: type) -> None:
    """Fix 6: SwAV's ``queue`` buffer is created in ``on_train_start``, so it is missing from a new module.

    solo-learn 1.0.2 registers ``queue`` (``[2, queue_size // world_size, proj_output_dim]``) only
    when training starts. A checkpoint of a run with ``queue_size > 0`` therefore holds a ``queue``
    that a freshly built SwAV lacks (``load_state_dict``: unexpected key "queue"), and resuming
    would zero the restored queue. Here the buffer exists from ``__init__`` (world size 1; a
    checkpoint's shape wins when loading), and ``on_train_start`` keeps the current contents when
    the shape it wants is the one already there.
    """
    original_init = swav_cls.__init__
    if getattr(original_init, "__solo_qscore_patched__", False):
        return
    original_on_train_start = swav_cls.on_train_start

    @functools.wraps(original_init)
    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        if self.queue_size > 0:
            self.register_buffer("queue", torch.zeros(2, self.queue_size, self.proj_output_dim))
        self.register_load_state_dict_pre_hook(_resize_swav_queue)

    @functools.wraps(original_on_train_start)
    def on_train_start(self):
        current = self._buffers.get("queue")
        original_on_train_start(self)  # builds Sinkhorn-Knopp and a zero queue for the world size
        if current is not None and current.shape == self.queue.shape:
            self.queue.copy_(current)

    __init__.__solo_qscore_patched__ = True
    swav_cls.__init__ = __init__
    swav_cls.on_train_start = on_train_start


@functools.cache
def _scheduler_with_static_lr(cls: type) -> type:
    """``cls`` whose ``get_lr`` keeps the groups in ``self.static_lr_groups`` at fixed rates."""

    def get_lr(self):
        lrs = cls.get_lr(self)
        for index, lr in zip(self.static_lr_groups["indexes"], self.static_lr_groups["lrs"]):
            lrs[index] = lr
        return lrs

    return type(f"StaticLR{cls.__name__}", (cls,), {"get_lr": get_lr, "__module__": __name__})


def static_lr_in_scheduler_class(base_module) -> None:
    """Fix 9: keep solo's ``static_lr`` closure out of the scheduler state, so such runs can resume.

    For parameter groups with ``static_lr`` (SimSiam's predictor) solo-learn 1.0.2 sets
    ``scheduler.get_lr = partial(static_lr, get_lr=scheduler.get_lr, ...)`` on the instance.
    ``LRScheduler.state_dict()`` saves every instance attribute, so the checkpoint holds that
    partial: Lightning's default ``weights_only`` loading rejects it, and with ``weights_only=False``
    the restored partial calls itself (``RecursionError``). Here the partial becomes plain data,
    ``scheduler.static_lr_groups = {"indexes": [...], "lrs": [...]}``, read by ``get_lr`` of a
    subclass of the scheduler's class; the learning rates are the same.
    """
    cls = base_module.BaseMethod
    original = cls.configure_optimizers
    if getattr(original, "__solo_qscore_patched__", False):
        return

    @functools.wraps(original)
    def configure_optimizers(self):
        out = original(self)
        if isinstance(out, (list, tuple)) and len(out) == 2:
            for scheduler in out[1]:
                static = scheduler.__dict__.get("get_lr")
                if isinstance(static, functools.partial) and static.func is base_module.static_lr:
                    del scheduler.__dict__["get_lr"]
                    scheduler.static_lr_groups = {
                        "indexes": [int(i) for i in static.keywords["param_group_indexes"]],
                        "lrs": [float(lr) for lr in static.keywords["lrs_to_replace"]],
                    }
                    scheduler.__class__ = _scheduler_with_static_lr(type(scheduler))
        return out

    configure_optimizers.__solo_qscore_patched__ = True
    cls.configure_optimizers = configure_optimizers


def patch_solo() -> None:
    """Apply all fixes (idempotent) and import solo-learn."""
    global _PATCHED
    if _PATCHED:
        return
    install_pl_bolts_shim()
    import solo  # noqa: F401
    from solo.methods import base, dino, swav
    from solo.utils import knn

    for cls in (base.BaseMethod, base.BaseMomentumMethod):
        redrive_validation_epoch_end(cls)
    base.BaseMethod.on_validation_batch_end = _on_validation_batch_end
    base.BaseMethod.on_validation_epoch_end = _on_validation_epoch_end
    optional_dataloader_idx(base.BaseMomentumMethod)
    fix_knn_classifier(knn, base)
    rename_dino_clip_gradients(dino.DINO)
    swav_queue_in_state_dict(swav.SwAV)
    static_lr_in_scheduler_class(base)
    _PATCHED = True


patch_solo()
