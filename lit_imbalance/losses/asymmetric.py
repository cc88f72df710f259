"""Asymmetric loss for multi-label classification (ASL, Ridnik et al., 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_imbalance._checks import check_in_unit_interval
from lit_imbalance.losses._common import (
    SIGMOID_REDUCTIONS,
    binary_targets,
    check_gamma,
    check_logits,
    check_reduction,
    focal_modulation,
    mask,
    reduce_loss,
)


def asymmetric_loss(
    logits: Tensor,
    target: Tensor,
    gamma_pos: float = 0.0,
    gamma_neg: float = 4.0,
    clip: float = 0.05,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    r"""Asymmetric loss: separate focusing for positives and negatives, plus probability shifting.

    With :math:`p = \sigma(x)` and the shifted probability
    :math:`p_m = \max(p - m, 0)` (``clip`` :math:`= m`):

    .. math::
        \mathrm{ASL}(x, t) = -t\,(1 - p)^{\gamma_+} \log p
                             - (1 - t)\,p_m^{\gamma_-} \log(1 - p_m).

    Negatives with :math:`p < m` contribute nothing (hard thresholding of easy
    negatives), which also discards mislabelled negatives. Soft targets mix the
    two terms linearly. In log space, without the reference code's
    ``log(max(p, 1e-8))`` clamp, so a confidently wrong positive keeps its full
    loss and gradient. ``gamma_pos=gamma_neg=clip=0`` is BCE with logits.

    Args:
        logits: ``(N, C)`` or ``(N, C, d1, ...)`` (or any shape with same-shape targets).
        target: same shape as ``logits`` (multi-hot or soft), or integer class
            indices ``(N, d1, ...)`` one-hot encoded along dim 1 (``ignore_index`` rows masked).
        gamma_pos: focusing of positives, ``>= 0``.
        gamma_neg: focusing of negatives, ``>= 0``.
        clip: probability margin :math:`m \in [0, 1]`.
        ignore_index: class index whose rows are ignored (class-index targets only).
        reduction: ``"mean"`` (over the elements that count), ``"sum"``, ``"none"``
            or ``"positives"`` (sum over ``max(1, #positives)``). The reference
            implementation returns the sum.

    Example:
        >>> logits = torch.tensor([[2.0, -1.0, 0.0]])
        >>> asymmetric_loss(logits, torch.tensor([[1.0, 0.0, 1.0]]))
        tensor(0.2735)
    """
    logits = check_logits(logits, min_ndim=1)
    gamma_pos = check_gamma(gamma_pos, "gamma_pos")
    gamma_neg = check_gamma(gamma_neg, "gamma_neg")
    clip = check_in_unit_interval("clip", clip)
    check_reduction(reduction, SIGMOID_REDUCTIONS)
    targets, valid = binary_targets(logits, target, ignore_index)
    log_p = F.logsigmoid(logits)
    log_one_minus_p = log_p - logits  # log(1 - sigmoid(x)) == logsigmoid(-x)
    positive = focal_modulation(log_one_minus_p.exp(), gamma_pos) * log_p
    if clip > 0:
        shifted_p = (log_p.exp() - clip).clamp_min(0.0)
        log_one_minus_shifted = torch.log1p(-shifted_p)  # 1 - p_m >= clip > 0
    else:
        shifted_p, log_one_minus_shifted = log_p.exp(), log_one_minus_p
    negative = focal_modulation(shifted_p, gamma_neg) * log_one_minus_shifted
    loss = -(targets * positive + (1 - targets) * negative)
    return reduce_loss(mask(loss, valid), reduction, valid, targets=targets)


class AsymmetricLoss(nn.Module):
    """Asymmetric loss (ASL); see :func:`asymmetric_loss`.

    Example:
        >>> loss = AsymmetricLoss(gamma_pos=0.0, gamma_neg=4.0, clip=0.05)
        >>> loss(torch.tensor([[2.0, -1.0, 0.0]]), torch.tensor([[1.0, 0.0, 1.0]]))
        tensor(0.2735)
    """

    needs_class_counts = False
    # One independent sigmoid per logit: the bias prior is logit(pi_c), not log(pi_c).
    sigmoid_outputs = True

    def __init__(
        self,
        gamma_pos: float = 0.0,
        gamma_neg: float = 4.0,
        clip: float = 0.05,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.gamma_pos = check_gamma(gamma_pos, "gamma_pos")
        self.gamma_neg = check_gamma(gamma_neg, "gamma_neg")
        self.clip = check_in_unit_interval("clip", clip)
        self.ignore_index = ignore_index
        self.reduction = check_reduction(reduction, SIGMOID_REDUCTIONS)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return asymmetric_loss(
            logits, target, self.gamma_pos, self.gamma_neg, self.clip, self.ignore_index, self.reduction
        )

    def extra_repr(self) -> str:
        return f"gamma_pos={self.gamma_pos}, gamma_neg={self.gamma_neg}, clip={self.clip}"
