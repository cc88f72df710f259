"""Asymmetric loss for multi-label classification (ASL, Ridnik et al., 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_imbalance._checks import check_choice, check_in_unit_interval
from lit_imbalance.losses._closed_form import (
    FAST_PATHS,
    ClosedFormLoss,
    reduction_extras,
    kernel_path,
    summed_and_scaled,
)
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
    fast_path: str = "auto",
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
        fast_path: ``"auto"`` (from ``COMPILE_MIN_ELEMENTS`` elements the loss and its
            closed-form gradient in one compiled pass, below that autograd through the
            formula, which is as fast there), ``"compiled"``, ``"eager"`` (the closed-form
            kernel uncompiled) or ``"reference"`` (autograd through the formula; also what
            targets that require grad get). All give the same values up to rounding.

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
    check_choice("fast_path", fast_path, FAST_PATHS)
    targets, valid = binary_targets(logits, target, ignore_index)
    # Uncompiled, the kernel's where()s cost as much as autograd through the formula (more below 1M
    # elements on 2 CPU cores), so "auto" keeps the formula until the compiled kernel pays.
    use_kernel, compile_kernel = kernel_path(fast_path, logits, targets)
    if use_kernel:
        element_weight, scale = reduction_extras(reduction, logits, valid, targets)
        # A zero leaves its terms out of the kernel (its own graph), which the default gamma_pos = 0 uses.
        scalars = tuple(value or None for value in (gamma_pos, gamma_neg, clip))
        return ClosedFormLoss.apply(_asymmetric_kernel, compile_kernel, logits, targets, scalars, element_weight,
                                    scale)
    return reduce_loss(mask(_asymmetric_reference(logits, targets, gamma_pos, gamma_neg, clip), valid),
                       reduction, valid, targets=targets)


def _asymmetric_reference(logits: Tensor, targets: Tensor, gamma_pos: float, gamma_neg: float, clip: float) -> Tensor:
    """The element-wise formula as written, in log space, differentiated by autograd."""
    log_p = F.logsigmoid(logits)
    log_one_minus_p = log_p - logits  # log(1 - sigmoid(x)) == logsigmoid(-x)
    positive = focal_modulation(log_one_minus_p.exp(), gamma_pos) * log_p
    if clip > 0:
        shifted_p = (log_p.exp() - clip).clamp_min(0.0)
        log_one_minus_shifted = torch.log1p(-shifted_p)  # 1 - p_m >= clip > 0
    else:
        shifted_p, log_one_minus_shifted = log_p.exp(), log_one_minus_p
    negative = focal_modulation(shifted_p, gamma_neg) * log_one_minus_shifted
    return -(targets * positive + (1 - targets) * negative)


def _asymmetric_kernel(
    x: Tensor,
    t: Tensor,
    scalars: tuple[float | Tensor | None, float | Tensor | None, float | Tensor | None],
    element_weight: Tensor | None,
    scale: Tensor | None,
) -> tuple[Tensor, Tensor]:
    r"""Element-wise ASL and its derivative w.r.t. ``x`` in one pass (eager, or traced by compile).

    With :math:`p = \sigma(x)`, :math:`q = 1 - p` and :math:`p_m = \max(p - m, 0)`:
    :math:`\partial_x[-q^{\gamma_+}\log p] = q^{\gamma_+}(\gamma_+ p \log p - q)` and, where
    :math:`p_m > 0`, :math:`\partial_x[-p_m^{\gamma_-}\log(1 - p_m)] = p\,\frac{q}{1 - p_m}\,p_m^{\gamma_-}
    - \gamma_- p_m^{\gamma_- - 1}\log(1 - p_m)\,p q`. Without a clip :math:`q / (1 - p_m) = 1`
    exactly, so a confidently wrong negative (:math:`q` underflowing to 0) keeps its gradient of 1.
    ``scalars`` is ``(gamma_pos, gamma_neg, clip)``: 0-d tensors when compiled, and ``None`` for
    a zero, whose terms are then left out of the graph (Dynamo guards on ``None`` exactly).
    """
    gamma_pos, gamma_neg, clip = scalars
    # Powers as exp(gamma * log): the logs are needed anyway, so each power costs one exp, not a pow.
    log_p = F.logsigmoid(x)
    p = log_p.exp()
    q = 1 - p
    log_q = log_p - x  # log(1 - sigmoid(x)) == logsigmoid(-x), finite where q underflows
    if gamma_pos is None:
        positive_loss, positive_grad = -log_p, -q
    else:
        positive_factor = torch.exp(gamma_pos * log_q)  # q^gamma_pos
        positive_loss = -positive_factor * log_p
        positive_grad = positive_factor * (gamma_pos * p * log_p - q)
    if clip is None:
        shifted, log_one_minus_shifted, log_shifted = p, log_q, log_p
        q_over_one_minus_shifted = None  # exactly 1
    else:
        shifted = (p - clip).clamp_min(0.0)
        log_one_minus_shifted = torch.log1p(-shifted)  # 1 - p_m >= clip > 0
        q_over_one_minus_shifted = q / (1 - shifted)
        log_shifted = torch.log(shifted)
    active = shifted > 0
    if gamma_neg is None:  # p_m^0 = 1 where p_m > 0; the loss there is -log(1 - p_m)
        negative_loss = torch.where(active, -log_one_minus_shifted, 0.0)
        negative_grad = torch.where(active, p if q_over_one_minus_shifted is None else p * q_over_one_minus_shifted,
                                    0.0)
    else:
        # p_m^gamma_neg, and gamma_neg * p_m^(gamma_neg - 1) = gamma_neg * p_m^gamma_neg / p_m: zero where p_m = 0.
        negative_factor = torch.where(active, torch.exp(gamma_neg * log_shifted), 0.0)
        focal_slope = torch.where(active, gamma_neg * negative_factor / shifted, 0.0)
        negative_loss = -negative_factor * log_one_minus_shifted
        own = negative_factor if q_over_one_minus_shifted is None else q_over_one_minus_shifted * negative_factor
        negative_grad = torch.where(active, p * (own - focal_slope * log_one_minus_shifted * q), 0.0)
    loss = torch.lerp(negative_loss, positive_loss, t)  # t * positive + (1 - t) * negative
    grad = torch.lerp(negative_grad, positive_grad, t)
    if element_weight is not None:
        loss, grad = loss * element_weight, grad * element_weight
    return summed_and_scaled(loss, grad, scale)


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
        fast_path: str = "auto",
    ) -> None:
        super().__init__()
        self.gamma_pos = check_gamma(gamma_pos, "gamma_pos")
        self.gamma_neg = check_gamma(gamma_neg, "gamma_neg")
        self.clip = check_in_unit_interval("clip", clip)
        self.ignore_index = ignore_index
        self.reduction = check_reduction(reduction, SIGMOID_REDUCTIONS)
        self.fast_path = check_choice("fast_path", fast_path, FAST_PATHS)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return asymmetric_loss(
            logits, target, self.gamma_pos, self.gamma_neg, self.clip, self.ignore_index, self.reduction,
            self.fast_path,
        )

    def extra_repr(self) -> str:
        return f"gamma_pos={self.gamma_pos}, gamma_neg={self.gamma_neg}, clip={self.clip}"
