"""The training steps of solo-learn's InfoNCE methods with IFM (Robinson et al., NeurIPS 2021, eq. 2).

Each step is solo-learn main's own (its forward pass, its online-classifier loss, its queues) with the
contrastive term in its IFM form, ``(L + alpha*L_eps)/(1 + alpha)``. :data:`IFM_STEPS` maps each method of
:data:`solo_qscore.config.IFM_METHODS` to its step; :func:`ifm_training_step` refuses any other method (a
method without an InfoNCE term has nothing IFM could perturb, and another method's step would train the
wrong loss). The steps are functions of the module (a :class:`~solo_qscore.adapters.solo_method.QScoreMixin`
subclass of a solo-learn method), which calls them from its ``training_step``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor

from solo_qscore.config import ConfigError
from solo_qscore.losses.ifm import ifm_moco_loss, ifm_nnclr_loss, ifm_simclr_loss


def _global_batch(z: Tensor, indexes: Tensor) -> dict[str, Any]:
    """Under DDP, the candidates of every process for SimCLR's loss (as solo's ``simclr_loss_func``):
    ``z`` gathered with gradients (solo's ``GatherLayer``), the indexes, and this process's offset."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1):
        return {}
    from solo.utils.misc import gather

    return {"candidates": gather(z), "candidate_indexes": gather(indexes),
            "offset": torch.distributed.get_rank() * z.shape[0]}


def ifm_kwargs(ifm: DictConfig) -> dict[str, Any]:
    """The IFM losses' keyword arguments for a run's ``ifm`` section."""
    # validate=False: no host sync per step (the inputs come from the module, the loss is checked by Lightning)
    kwargs: dict[str, Any] = {"epsilon": float(ifm.epsilon), "alpha": float(ifm.alpha), "validate": False}
    if ifm.variant != "default":
        kwargs.update(variant=str(ifm.variant), pre_norm_steps=int(ifm.pre_norm_steps))
    return kwargs


def simclr_step(module, batch, batch_idx, contrastive_loss: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """solo's SimCLR step with ``contrastive_loss(z, indexes)`` in place of its InfoNCE (+ classifier loss)."""
    from solo.methods.base import BaseMethod

    out = BaseMethod.training_step(module, batch, batch_idx)
    z = torch.cat(out["z"])
    nce_loss = contrastive_loss(z, batch[0].repeat(module.num_large_crops + module.num_small_crops))
    module.log("train_nce_loss", nce_loss, on_epoch=True, sync_dist=True)
    return nce_loss + out["loss"]


def _simclr(module, batch, batch_idx, kw: dict[str, Any]) -> Tensor:
    """solo's SimCLR step with IFM's InfoNCE over the (gathered, under DDP) batch."""
    return simclr_step(module, batch, batch_idx,
                       lambda z, idx: ifm_simclr_loss(z, idx, module.temperature, **kw, **_global_batch(z, idx)))


def _mocov2plus(module, batch, batch_idx, kw: dict[str, Any]) -> Tensor:
    """solo's symmetric MoCo V2+ loss (q1.k2 and q2.k1 against each view's queue), both terms with IFM."""
    from solo.methods.base import BaseMomentumMethod
    from solo.utils.misc import gather

    out = BaseMomentumMethod.training_step(module, batch, batch_idx)
    q1, q2 = out["z"]
    k1, k2 = out["momentum_z"]
    queue = module.queue.clone().detach()
    nce_loss = (ifm_moco_loss(q1, k2, queue[1], module.temperature, **kw)
                + ifm_moco_loss(q2, k1, queue[0], module.temperature, **kw)) / 2
    module._dequeue_and_enqueue(torch.stack((gather(k1), gather(k2))))
    module.log("train_nce_loss", nce_loss, on_epoch=True, sync_dist=True)
    return nce_loss + out["loss"]


def _nnclr(module, batch, batch_idx, kw: dict[str, Any]) -> Tensor:
    """solo's NNCLR step with each ``nnclr_loss_func`` term in its IFM form."""
    from solo.methods.base import BaseMethod

    targets = batch[-1]
    out = BaseMethod.training_step(module, batch, batch_idx)
    z1, z2 = out["z"]
    p1, p2 = out["p"]
    idx1, nn1 = module.find_nn(z1)
    _, nn2 = module.find_nn(z2)
    nnclr_loss = (ifm_nnclr_loss(nn1, p2, module.temperature, **kw) / 2
                  + ifm_nnclr_loss(nn2, p1, module.temperature, **kw) / 2)
    nn_acc = (targets == module.queue_y[idx1]).sum() / targets.size(0)
    module.dequeue_and_enqueue(z1, targets)
    module.log_dict({"train_nnclr_loss": nnclr_loss, "train_nn_acc": nn_acc}, on_epoch=True, sync_dist=True)
    return nnclr_loss + out["loss"]


def _mocov3(module, batch, batch_idx, kw: dict[str, Any]) -> Tensor:
    """solo's MoCo V3 loss: InfoNCE of q against the other view's keys (in-batch negatives),
    scaled by 2*tau as solo does, with IFM on the logits."""
    from solo.methods.base import BaseMomentumMethod
    from solo.utils.misc import concat_all_gather_no_grad

    if torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1:
        raise ConfigError("IFM with MoCo V3 runs on one process only (its keys are gathered across processes)")
    out = BaseMomentumMethod.training_step(module, batch, batch_idx)
    Q, K = out["q"], out["momentum_k"]
    tau = module.temperature
    loss = (ifm_nnclr_loss(Q[0], concat_all_gather_no_grad(F.normalize(K[1], dim=1)), tau, **kw)
            + ifm_nnclr_loss(Q[1], concat_all_gather_no_grad(F.normalize(K[0], dim=1)), tau, **kw)) * (2 * tau)
    module.log_dict({"train_contrastive_loss": loss}, on_epoch=True, sync_dist=True)
    return loss + out["loss"]


#: solo-learn method name -> its training step with IFM; the keys are :data:`solo_qscore.config.IFM_METHODS`
IFM_STEPS: dict[str, Callable[..., Tensor]] = {
    "simclr": _simclr, "mocov2plus": _mocov2plus, "nnclr": _nnclr, "mocov3": _mocov3,
}


def ifm_training_step(module, method: str, batch, batch_idx) -> Tensor:
    """The IFM training step of solo-learn ``method`` on ``module``; ``ConfigError`` for a method without one."""
    step = IFM_STEPS.get(method)
    if step is None:
        raise ConfigError(f"IFM applies to InfoNCE methods only ({', '.join(IFM_STEPS)}); method {method!r} is not "
                          "one of them (config key 'ifm.enabled')")
    return step(module, batch, batch_idx, ifm_kwargs(module.cfg.ifm))
