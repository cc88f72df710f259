"""A fitted model's outputs on a whole split: logits, targets and the classifier's input features.

Post-hoc methods choose something on validation outputs (a temperature, a
decision threshold, the tau of tau-normalisation, the post-hoc logit-adjustment
scale) or fit something on training features (class means for nearest-class-mean
prediction). They all start from :func:`collect_outputs`, which runs the model
in evaluation mode without gradients and, under DDP, gathers every rank's shard
so that each rank chooses the same value from the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from lit_imbalance._checks import fail


@dataclass(frozen=True)
class Outputs:
    """What a model produced on a split, in dataset order within each rank's shard.

    Attributes:
        logits: ``(N, C)`` (binary: ``(N,)`` or ``(N, 1)``), float32, on the CPU.
        targets: ``(N,)`` class indices or ``(N, L)`` multi-hot labels, on the CPU.
        features: ``(N, D)`` inputs of the classifier head, when asked for.
    """

    logits: Tensor
    targets: Tensor
    features: Tensor | None = None


@torch.no_grad()
def collect_outputs(
    model: nn.Module,
    batches: Iterable,
    head: nn.Module | None = None,
    device: torch.device | str | None = None,
) -> Outputs:
    """Run ``model`` over ``batches`` of ``(inputs, targets)``; with ``head``, also keep the head's inputs.

    The model is put in evaluation mode for the pass and given back in the
    mode it had. Under an initialised process group the result holds every
    rank's samples (``all_gather_object``), so a choice made from it is the
    same on every rank.

    Args:
        model: maps a batch of inputs to logits.
        batches: an iterable of ``(inputs, targets)`` pairs, e.g. a DataLoader.
        head: a submodule of ``model`` whose input features are recorded
            (a forward pre-hook, removed afterwards).
        device: where to run; the device of the model's first parameter by default.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> batches = [(torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 1]))]
        >>> out = collect_outputs(net, batches, head=net[2])
        >>> out.logits.shape, out.targets.tolist(), out.features.shape
        (torch.Size([5, 2]), [0, 1, 0, 1, 1], torch.Size([5, 4]))
    """
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    logits, targets, features = [], [], []
    handle = None
    if head is not None:
        handle = head.register_forward_pre_hook(lambda _module, args: features.append(args[0].detach().float().cpu()))
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            inputs, target = batch[0], batch[1]
            logits.append(model(inputs.to(device)).detach().float().cpu())
            targets.append(target.detach().cpu())
    finally:
        model.train(was_training)
        if handle is not None:
            handle.remove()
    local = Outputs(_cat(logits), _cat(targets), _cat(features) if head is not None else None)
    return gather_outputs(local)


def validation_outputs(trainer: Any, module: nn.Module, key: str) -> Outputs:
    """``module``'s outputs on its trainer's datamodule's whole validation split, gathered across ranks.

    The datamodule's own loader: a lit_imbalance datamodule shards it without
    padding under DDP (every sample once after the gather); any other one serves
    each rank the whole split, which repeats every sample equally often and so
    leaves every choice made from it (an argmin, an argmax) unchanged.

    Args:
        trainer: the Lightning Trainer ``module`` is attached to.
        module: the model.
        key: the config key the error names when there is no validation loader.
    """
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is None or not callable(getattr(datamodule, "val_dataloader", None)):
        fail(key, "used with a datamodule that has a val_dataloader (its choice is made on validation outputs)",
             type(datamodule).__name__ if datamodule is not None else None)
    return collect_outputs(module, datamodule.val_dataloader())


def gather_outputs(outputs: Outputs) -> Outputs:
    """Every rank's ``outputs`` concatenated in rank order (unchanged without a process group)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return outputs
    shards: list[Outputs | None] = [None] * dist.get_world_size()
    dist.all_gather_object(shards, outputs)
    return Outputs(
        _cat([s.logits for s in shards]),  # type: ignore[union-attr]
        _cat([s.targets for s in shards]),  # type: ignore[union-attr]
        _cat([s.features for s in shards]) if outputs.features is not None else None,  # type: ignore[union-attr, misc]
    )


def _cat(tensors: list[Tensor]) -> Tensor:
    return torch.cat(tensors) if tensors else torch.empty(0)
