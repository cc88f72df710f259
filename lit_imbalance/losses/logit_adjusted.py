"""Losses that add the log class prior to the logits: balanced softmax and logit adjustment.

Both run the fused softmax kernel with the per-class shift ``tau * log_prior``,
the shift :func:`lit_imbalance.priors.adjust_logits` applies (it also does
post-hoc adjustment at prediction time), without materialising the shifted logits twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from lit_imbalance._checks import check_non_negative
from lit_imbalance.losses._common import ClassCountsLoss, check_logits, check_reduction
from lit_imbalance.losses._fused_softmax import fused_softmax_loss
from lit_imbalance.priors import adjust_logits
from lit_imbalance.priors import log_prior as compute_log_prior


def logit_adjusted_loss(
    logits: Tensor,
    target: Tensor,
    log_prior: Tensor,
    tau: float = 1.0,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    r"""Logit-adjusted cross-entropy (Menon et al., 2021).

    .. math:: \ell(x, y) = -\log \frac{e^{x_y + \tau \log \pi_y}}{\sum_c e^{x_c + \tau \log \pi_c}}

    Training against prior-shifted logits makes the raw logits ``x`` estimate
    the balanced (prior-free) posterior, so ``argmax x`` targets the balanced
    error. ``tau=0`` is cross-entropy exactly; ``tau=1`` is the balanced softmax.

    Args:
        logits: ``(N, C)`` or ``(N, C, d1, ...)``.
        target: class indices, ``(N,)`` or ``(N, d1, ...)``.
        log_prior: ``(C,)`` log class prior, from :func:`lit_imbalance.priors.log_prior`.
        tau: scale of the adjustment, ``>= 0``.
        ignore_index: target value that contributes no loss.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per sample).

    Example:
        >>> import torch
        >>> from lit_imbalance.priors import log_prior
        >>> logits, target = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
        >>> logit_adjusted_loss(logits, target, log_prior([90, 10]), tau=1.0)
        tensor(0.7380)
        >>> logit_adjusted_loss(logits, target, log_prior([90, 10]), tau=0.0)  # == CE
        tensor(0.2201)
    """
    logits = check_logits(logits)
    check_non_negative("tau", tau)
    check_reduction(reduction)
    # The shift is adjust_logits of zero logits: the one definition of the adjustment, shared with
    # post-hoc adjustment (and its shape check), applied to C numbers instead of to all N x C logits.
    shift = adjust_logits(logits.new_zeros(1, logits.shape[1]), log_prior, tau).view(-1)
    return fused_softmax_loss(logits, target, logit_shift=shift, reduction=reduction, ignore_index=ignore_index)


def balanced_softmax_loss(
    logits: Tensor, target: Tensor, log_prior: Tensor, ignore_index: int = -100, reduction: str = "mean"
) -> Tensor:
    r"""Balanced softmax cross-entropy (Ren et al., 2020): CE on :math:`x_c + \log \pi_c`.

    The logit-adjusted loss with ``tau=1`` (:func:`logit_adjusted_loss`).

    Example:
        >>> import torch
        >>> from lit_imbalance.priors import log_prior
        >>> logits, target = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
        >>> balanced_softmax_loss(logits, target, log_prior([90, 10]))
        tensor(0.7380)
    """
    return logit_adjusted_loss(logits, target, log_prior, 1.0, ignore_index, reduction)


class LogitAdjustedLoss(ClassCountsLoss):
    r"""Logit-adjusted cross-entropy; see :func:`logit_adjusted_loss`.

    For post-hoc adjustment of a CE-trained model instead, see
    :func:`lit_imbalance.priors.posthoc_logit_adjustment`.

    Args:
        class_counts: training samples per class, all positive; or set later
            with :meth:`set_class_counts`.
        tau: scale of the adjustment, ``>= 0``.
        ignore_index: target value that contributes no loss.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> import torch
        >>> loss = LogitAdjustedLoss(class_counts=[90, 10], tau=1.0)
        >>> loss(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
        tensor(0.7380)
    """

    derived_buffers = ("log_prior",)

    def __init__(
        self,
        class_counts: Sequence[int] | Tensor | None = None,
        tau: float = 1.0,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.tau = check_non_negative("tau", tau)
        self.ignore_index = ignore_index
        self.reduction = check_reduction(reduction)
        if class_counts is not None:
            self.set_class_counts(class_counts)

    def statistics(self, class_counts: Tensor) -> Mapping[str, Tensor]:
        return {"log_prior": compute_log_prior(class_counts)}

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits = check_logits(logits)
        self.require_class_counts(logits.shape[1])
        return logit_adjusted_loss(logits, target, self.log_prior, self.tau, self.ignore_index, self.reduction)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, reduction={self.reduction!r}"


class BalancedSoftmaxLoss(LogitAdjustedLoss):
    """Balanced softmax (Ren et al., 2020): :class:`LogitAdjustedLoss` with ``tau=1``.

    Args:
        class_counts: training samples per class, all positive; or set later
            with :meth:`set_class_counts`.
        ignore_index: target value that contributes no loss.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> import torch
        >>> loss = BalancedSoftmaxLoss(class_counts=[90, 10])
        >>> loss(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
        tensor(0.7380)
    """

    def __init__(
        self,
        class_counts: Sequence[int] | Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__(class_counts, tau=1.0, ignore_index=ignore_index, reduction=reduction)
