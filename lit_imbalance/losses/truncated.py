"""Truncated cross-entropy: no loss (hard) or a fading loss (soft) once the true class is confident."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lit_imbalance._checks import check_in_unit_interval, check_positive
from lit_imbalance.losses._common import check_logits, check_reduction, reduce_loss
from lit_imbalance.losses.reweighted import _cross_entropy_terms


def truncated_cross_entropy(
    logits: Tensor, target: Tensor, m: float = 0.9, ignore_index: int = -100, reduction: str = "mean"
) -> Tensor:
    r"""Hard-truncated cross-entropy: samples past the margin contribute nothing.

    With :math:`p_y = \mathrm{softmax}(x)_y` and :math:`\theta` the step function:

    .. math:: \ell(x, y) = \theta(m - p_y)\,(-\log p_y),

    i.e. no loss (and no gradient) once :math:`p_y > m`, so the abundant easy
    samples of head classes stop dominating the gradient. ``m=1`` is
    cross-entropy.

    Args:
        logits: ``(N, C)`` or ``(N, C, d1, ...)``.
        target: class indices, ``(N,)`` or ``(N, d1, ...)``.
        m: margin on the true-class probability, in ``[0, 1]``.
        ignore_index: target value that contributes no loss.
        reduction: ``"mean"`` (over non-ignored samples, truncated ones
            included), ``"sum"`` or ``"none"`` (per sample).

    Example:
        >>> logits, target = torch.tensor([[4.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
        >>> truncated_cross_entropy(logits, target, m=0.9)   # the first sample is past the margin
        tensor(0.1566)
    """
    return _truncated(logits, target, check_in_unit_interval("m", m), None, ignore_index, reduction)


def soft_truncated_cross_entropy(
    logits: Tensor, target: Tensor, m: float = 0.9, K: float = 50.0, ignore_index: int = -100, reduction: str = "mean"
) -> Tensor:
    r"""Soft-truncated cross-entropy: the step of :func:`truncated_cross_entropy` replaced by a sigmoid.

    .. math:: \ell(x, y) = \sigma\big(K (m - p_y)\big)\,(-\log p_y).

    The factor is differentiated too, and both it and the CE fall as
    :math:`p_y` grows, so the gradient never pushes :math:`p_y` down; ``K -> inf``
    recovers the hard truncation.

    Args:
        logits: ``(N, C)`` or ``(N, C, d1, ...)``.
        target: class indices, ``(N,)`` or ``(N, d1, ...)``.
        m: margin on the true-class probability, in ``[0, 1]``.
        K: sharpness of the step, ``> 0``.
        ignore_index: target value that contributes no loss.
        reduction: ``"mean"`` (over non-ignored samples), ``"sum"`` or ``"none"`` (per sample).

    Example:
        >>> logits, target = torch.tensor([[4.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
        >>> soft_truncated_cross_entropy(logits, target, m=0.9, K=50.0)
        tensor(0.1567)
    """
    m = check_in_unit_interval("m", m)
    return _truncated(logits, target, m, check_positive("K", K), ignore_index, reduction)


def _truncated(logits: Tensor, target: Tensor, m: float, K: float | None, ignore_index: int, reduction: str) -> Tensor:
    """Truncated CE; ``K=None`` for the hard step."""
    logits = check_logits(logits)
    check_reduction(reduction)
    ce, _, valid, _ = _cross_entropy_terms(logits, target, None, 0.0, ignore_index)
    p_true = torch.exp(-ce)
    factor = (p_true <= m).to(ce.dtype) if K is None else torch.sigmoid(K * (m - p_true))
    return reduce_loss(ce * factor, reduction, valid)


class TruncatedCrossEntropyLoss(nn.Module):
    """Hard-truncated cross-entropy; see :func:`truncated_cross_entropy`.

    Example:
        >>> loss = TruncatedCrossEntropyLoss(m=0.9)
        >>> loss(torch.tensor([[4.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
        tensor(0.1566)
    """

    needs_class_counts = False

    def __init__(self, m: float = 0.9, ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__()
        self.m = check_in_unit_interval("m", m)
        self.ignore_index = ignore_index
        self.reduction = check_reduction(reduction)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return truncated_cross_entropy(logits, target, self.m, self.ignore_index, self.reduction)

    def extra_repr(self) -> str:
        return f"m={self.m}"


class SoftTruncatedCrossEntropyLoss(nn.Module):
    """Soft-truncated cross-entropy; see :func:`soft_truncated_cross_entropy`.

    Example:
        >>> loss = SoftTruncatedCrossEntropyLoss(m=0.9, K=50.0)
        >>> loss(torch.tensor([[4.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
        tensor(0.1567)
    """

    needs_class_counts = False

    def __init__(self, m: float = 0.9, K: float = 50.0, ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__()
        self.m = check_in_unit_interval("m", m)
        self.K = check_positive("K", K)
        self.ignore_index = ignore_index
        self.reduction = check_reduction(reduction)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return soft_truncated_cross_entropy(logits, target, self.m, self.K, self.ignore_index, self.reduction)

    def extra_repr(self) -> str:
        return f"m={self.m}, K={self.K}"
