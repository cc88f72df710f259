"""Callbacks for training only the classifier head: a frozen backbone, and per-class MaxNorm."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch import nn

from lit_imbalance._checks import check_positive
from lit_imbalance.decoupling import max_norm_
from lit_imbalance.heads import find_classifier_head


def classifier_head_of(module: L.LightningModule) -> nn.Module:
    """The module's classifier layer, found as the bias prior finds it.

    An imbalance-aware module names it (``classifier_head()``); any other is
    searched for the only linear layer with ``num_classes`` outputs.
    """
    if callable(getattr(module, "classifier_head", None)):
        return module.classifier_head()
    return find_classifier_head(module, getattr(module, "num_classes", None))


class FrozenBackbone(Callback):
    """Train only ``trainable`` submodules: every other parameter is frozen and every other module kept in eval mode.

    Eval mode, not only frozen weights: batch-norm statistics and dropout of the
    backbone stay as stage 1 left them, as decoupled re-training (cRT, LWS)
    prescribes. The previous ``requires_grad`` flags come back at the end of the fit.

    Args:
        trainable: the modules that keep learning (the classifier head).
    """

    def __init__(self, trainable: Sequence[nn.Module]) -> None:
        self.trainable = list(trainable)
        self._flags: dict[nn.Parameter, bool] = {}

    def _trainable_parameters(self) -> set[nn.Parameter]:
        return {p for module in self.trainable for p in module.parameters()}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # In setup, before the strategy wraps the module: DDP only reduces gradients of trainable parameters.
        if stage != "fit":
            return
        keep = self._trainable_parameters()
        self._flags = {p: p.requires_grad for p in pl_module.parameters()}
        for parameter in pl_module.parameters():
            parameter.requires_grad_(parameter in keep)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning puts the whole module in train mode before each epoch.
        pl_module.eval()
        for module in self.trainable:
            module.train()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for parameter, flag in self._flags.items():
            parameter.requires_grad_(flag)
        self._flags = {}


class MaxNorm(Callback):
    """Per-class MaxNorm on the classifier (weight balancing, Alshammari et al., 2022).

    After every optimiser step, each class's weight row is projected back onto
    the ball of radius ``max_norm`` (projected gradient descent), so no class,
    however frequent, grows a larger weight norm than the bound.

    Args:
        max_norm: the bound on every per-class weight norm.
        head: the classifier layer; found as the bias prior finds it when ``None``.

    Example:
        >>> MaxNorm(max_norm=1.0).max_norm
        1.0
    """

    def __init__(self, max_norm: float = 1.0, head: nn.Module | None = None) -> None:
        self.max_norm = check_positive("max_norm", max_norm)
        self.head = head

    def project(self, pl_module: L.LightningModule) -> None:
        """Apply the bound now (also at the start of the fit, so the first step starts inside it)."""
        max_norm_(self.head if self.head is not None else classifier_head_of(pl_module), self.max_norm)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.project(pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        self.project(pl_module)
