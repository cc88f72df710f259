"""Class-imbalance losses, all from logits: a functional form and an ``nn.Module`` per loss.

Build one by name with :func:`build_loss`; :func:`available_losses` lists the
names (one ``conf/loss/<name>.yaml`` each). Every module takes
``forward(logits, target)`` and has a class attribute ``needs_class_counts``;
those that need class counts take ``class_counts=`` or receive them through
``set_class_counts(counts)``.

Example:
    >>> import torch
    >>> loss = build_loss("focal", gamma=2.0)
    >>> loss(torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0]))
    tensor(0.0041)
    >>> build_loss("logit_adjusted", class_counts=[90, 10], tau=1.0).needs_class_counts
    True
"""

from __future__ import annotations

from typing import Any

from torch import nn

from lit_imbalance._checks import fail
from lit_imbalance.losses.asymmetric import AsymmetricLoss, asymmetric_loss
from lit_imbalance.losses.focal import FocalLoss, SigmoidFocalLoss, sigmoid_focal_loss, softmax_focal_loss
from lit_imbalance.losses.ghm import GHMCLoss, ghmc_loss
from lit_imbalance.losses.logit_adjusted import (
    BalancedSoftmaxLoss,
    LogitAdjustedLoss,
    balanced_softmax_loss,
    logit_adjusted_loss,
)
from lit_imbalance.losses.margin import LDAMLoss, ldam_loss, ldam_margins
from lit_imbalance.losses.ohem import OHEMLoss, ohem_loss
from lit_imbalance.losses.reweighted import (
    ClassBalancedLoss,
    CostSensitiveLoss,
    CrossEntropyLoss,
    WeightedCrossEntropyLoss,
    class_balanced_loss,
    cost_sensitive_loss,
    cross_entropy,
    weighted_cross_entropy,
)
from lit_imbalance.losses.truncated import (
    SoftTruncatedCrossEntropyLoss,
    TruncatedCrossEntropyLoss,
    soft_truncated_cross_entropy,
    truncated_cross_entropy,
)

LOSSES: dict[str, type[nn.Module]] = {
    "ce": CrossEntropyLoss,
    "weighted_ce": WeightedCrossEntropyLoss,
    "cost_sensitive": CostSensitiveLoss,
    "sigmoid_focal": SigmoidFocalLoss,
    "focal": FocalLoss,
    "class_balanced": ClassBalancedLoss,
    "ldam": LDAMLoss,
    "balanced_softmax": BalancedSoftmaxLoss,
    "logit_adjusted": LogitAdjustedLoss,
    "asymmetric": AsymmetricLoss,
    "ghm": GHMCLoss,
    "ohem": OHEMLoss,
    "truncated_ce": TruncatedCrossEntropyLoss,
    "soft_truncated_ce": SoftTruncatedCrossEntropyLoss,
}


def available_losses() -> list[str]:
    """Names :func:`build_loss` accepts, in catalogue order.

    Example:
        >>> available_losses()[:3]
        ['ce', 'weighted_ce', 'cost_sensitive']
    """
    return list(LOSSES)


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate the loss registered as ``name`` with its constructor arguments.

    Statistics-driven losses take ``class_counts=``; ``cost_sensitive`` takes
    ``cost_matrix=``.

    Raises:
        ValueError: for an unknown name.
    """
    if name not in LOSSES:
        fail("name", "one of " + ", ".join(repr(n) for n in LOSSES), name)
    return LOSSES[name](**kwargs)


__all__ = [
    "LOSSES",
    "AsymmetricLoss",
    "BalancedSoftmaxLoss",
    "ClassBalancedLoss",
    "CostSensitiveLoss",
    "CrossEntropyLoss",
    "FocalLoss",
    "GHMCLoss",
    "LDAMLoss",
    "LogitAdjustedLoss",
    "OHEMLoss",
    "SigmoidFocalLoss",
    "SoftTruncatedCrossEntropyLoss",
    "TruncatedCrossEntropyLoss",
    "WeightedCrossEntropyLoss",
    "asymmetric_loss",
    "available_losses",
    "balanced_softmax_loss",
    "build_loss",
    "class_balanced_loss",
    "cost_sensitive_loss",
    "cross_entropy",
    "ghmc_loss",
    "ldam_loss",
    "ldam_margins",
    "logit_adjusted_loss",
    "ohem_loss",
    "sigmoid_focal_loss",
    "soft_truncated_cross_entropy",
    "softmax_focal_loss",
    "truncated_cross_entropy",
    "weighted_cross_entropy",
]
