"""Label-distribution-aware margin loss (LDAM, Cao et al., 2019)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from lit_imbalance._checks import check_choice, check_in_unit_interval, check_positive
from lit_imbalance.losses._closed_form import (
    FAST_PATHS,
    ClosedFormLoss,
    reduction_scale,
    should_compile,
    summed_and_scaled,
)
from lit_imbalance.losses._common import ClassCountsLoss, check_logits, check_reduction, class_index_target_or_all
from lit_imbalance.losses._fused_softmax import (
    SUBNORMAL_FREE_FLOOR,
    fused_softmax_loss,
    hyper_parameter_vector,
    is_soft_target,
    per_sample_weight,
)
from lit_imbalance.priors import positive_class_counts
from lit_imbalance.weights import WEIGHT_SCHEMES, class_weights


def ldam_margins(class_counts: Sequence[int] | Tensor, max_m: float = 0.5) -> Tensor:
    r"""Per-class margins :math:`\Delta_c \propto n_c^{-1/4}`, scaled so the largest is ``max_m``.

    Args:
        class_counts: training samples per class ``(C,)``, all positive.
        max_m: margin of the rarest class, ``> 0``.

    Returns:
        float32 tensor ``(C,)``.

    Example:
        >>> ldam_margins([10000, 16, 1], max_m=0.5)
        tensor([0.0500, 0.2500, 0.5000])
    """
    counts = positive_class_counts(class_counts, reason="the margin n^(-1/4) is infinite")
    check_positive("max_m", max_m)
    margins = counts.pow(-0.25)
    return (margins * (max_m / margins.max())).to(torch.float32)


def ldam_loss(
    logits: Tensor,
    target: Tensor,
    margins: Tensor,
    s: float = 30.0,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    fast_path: str = "auto",
) -> Tensor:
    r"""LDAM loss: cross-entropy after subtracting a class-dependent margin from the true logit.

    .. math::
        \ell(x, y) = -w_y \log \frac{e^{s (x_y - \Delta_y)}}
                     {e^{s (x_y - \Delta_y)} + \sum_{c \ne y} e^{s x_c}}

    Cao et al. apply it to cosine logits (a normalised last layer) with
    ``s=30``; with raw logits a smaller ``s`` is usually better. Rare classes
    get the larger margins, pushing their decision boundary away from their
    few samples.

    Args:
        logits: ``(N, C)`` or ``(N, C, d1, ...)``.
        target: class indices, ``(N,)`` or ``(N, d1, ...)``.
        margins: ``(C,)`` margins, from :func:`ldam_margins`.
        s: logit scale, ``> 0``.
        weight: optional per-class weights (the re-weighted stage of LDAM-DRW);
            ``"mean"`` is then the weighted mean, as with ``F.cross_entropy``.
        ignore_index: target value that contributes no loss.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per sample).
        fast_path: ``"auto"`` (from ``COMPILE_MIN_ELEMENTS`` elements of ``(N, C)``
            logits the loss and its closed-form gradient in one compiled kernel, below
            that, where compiling does not pay, the eager fused softmax kernel), ``"compiled"``,
            ``"eager"`` (the closed-form kernel uncompiled) or ``"reference"`` (the eager
            fused softmax kernel always). Logits of shape ``(N, C, d1, ...)`` take the
            fused kernel whatever is asked. All give the same values up to rounding.

    Example:
        >>> logits, target = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
        >>> ldam_loss(logits, target, ldam_margins([90, 10], max_m=0.5), s=1.0)
        tensor(0.3201)
        >>> ldam_loss(logits, target, ldam_margins([90, 10], max_m=0.5), s=1.0, fast_path="eager")
        tensor(0.3201)
    """
    logits = check_logits(logits)
    check_positive("s", s)
    check_reduction(reduction)
    check_choice("fast_path", fast_path, FAST_PATHS)
    margins = hyper_parameter_vector(margins, "margins", logits)
    weight = hyper_parameter_vector(weight, "weight", logits)
    compile_kernel = should_compile(fast_path, logits)
    if (compile_kernel or fast_path == "eager") and logits.ndim == 2 and not is_soft_target(logits, target):
        return _ldam_closed_form(logits, target, margins, s, weight, ignore_index, reduction, compile_kernel)
    return fused_softmax_loss(
        logits,
        target,
        target_margin=margins,
        scale=s,
        class_weight=weight,
        weighted_mean=True,
        reduction=reduction,
        ignore_index=ignore_index,
    )


def _ldam_closed_form(logits: Tensor, target: Tensor, margins: Tensor, s: float, weight: Tensor | None,
                      ignore_index: int, reduction: str, compile_kernel: bool) -> Tensor:
    """LDAM on ``(N, C)`` logits and class indices through :func:`_ldam_kernel`, with the fused kernel's weighting."""
    safe_target, valid = class_index_target_or_all(logits, target, ignore_index)
    sample_weight = per_sample_weight(weight, safe_target, valid, logits.dtype)
    # F.cross_entropy's weighted mean: divided by the summed weights of the samples that count.
    # logits[:, 0]: a view with one entry per sample, in the logits' dtype, for denominator's count and sum.
    scale = reduction_scale(reduction, logits[:, 0], valid, safe_target, sample_weight)
    return ClosedFormLoss.apply(_ldam_kernel, compile_kernel, logits, safe_target, (s,), margins, sample_weight,
                                scale)


def _ldam_kernel(x: Tensor, t: Tensor, scalars: tuple[float | Tensor], margins: Tensor,
                 sample_weight: Tensor | None, scale: Tensor | None) -> tuple[Tensor, Tensor]:
    r"""LDAM and its gradient :math:`s\,w\,(\mathrm{softmax}(z) - e_y)` over ``(N, C)`` logits, together.

    Compiled, that is three passes over each row: its maximum and target logit, its
    log-sum-exp, its gradient.

    Here :math:`z = s\,(x - \Delta_y e_y)`. The target column is a comparison with the class
    index, not a gather: Inductor's CPU gather checks the bounds of every index, which
    costs as much as the loss. Logits far below their row's maximum are raised to it
    plus ``SUBNORMAL_FREE_FLOOR`` before the exponentials (as the fused kernel does:
    subnormal ``exp()`` is 20-30x slower on the CPU); the target's own logit is not, so
    its loss stays exact.
    """
    (s,) = scalars
    is_target = torch.arange(x.shape[1], device=x.device) == t.unsqueeze(1)
    z = (x - torch.where(is_target, margins, 0.0)) * s
    row_max = z.amax(dim=1, keepdim=True)
    # exp(shifted) is recomputed in the gradient's loop rather than stored: one write fewer (measured faster).
    shifted = torch.clamp_min(z - row_max, SUBNORMAL_FREE_FLOOR[z.dtype])
    sum_exp = torch.exp(shifted).sum(dim=1, keepdim=True)
    loss = (sum_exp.log() + row_max).squeeze(1) - torch.where(is_target, z, 0.0).sum(dim=1)  # -log p_y
    scaled_probs = torch.exp(shifted) * (s / sum_exp)
    grad = torch.where(is_target, scaled_probs - s, scaled_probs)  # s (p - e_y), s in the logits' dtype
    if sample_weight is not None:
        loss, grad = loss * sample_weight, grad * sample_weight.unsqueeze(1)
    return summed_and_scaled(loss, grad, scale)


class LDAMLoss(ClassCountsLoss):
    """LDAM loss with margins from the training class counts; see :func:`ldam_loss`.

    Deferred re-weighting (LDAM-DRW) is a warm-up schedule whose target is
    this loss with ``reweight="effective"``: the same margins plus class
    weights ``class_weights(class_counts, reweight, beta)``.

    Args:
        class_counts: training samples per class, all positive; or set later
            with :meth:`set_class_counts`.
        max_m: margin of the rarest class.
        s: logit scale.
        reweight: ``None`` (no class weights) or a scheme of
            :func:`lit_imbalance.weights.class_weights` (``"inverse"``,
            ``"sqrt"``, ``"effective"``).
        beta: effective-number parameter for ``reweight="effective"``.
        ignore_index: target value that contributes no loss.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        fast_path: ``"auto"``, ``"compiled"``, ``"eager"`` or ``"reference"``; see :func:`ldam_loss`.

    Example:
        >>> loss = LDAMLoss(class_counts=[90, 10], s=1.0)
        >>> loss(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
        tensor(0.3201)
    """

    derived_buffers = ("margins", "class_weight")

    def __init__(
        self,
        class_counts: Sequence[int] | Tensor | None = None,
        max_m: float = 0.5,
        s: float = 30.0,
        reweight: str | None = None,
        beta: float = 0.9999,
        ignore_index: int = -100,
        reduction: str = "mean",
        fast_path: str = "auto",
    ) -> None:
        super().__init__()
        self.max_m = check_positive("max_m", max_m)
        self.s = check_positive("s", s)
        self.reweight = check_choice("reweight", reweight, (None, *WEIGHT_SCHEMES))
        self.beta = check_in_unit_interval("beta", beta, open_right=True)
        self.ignore_index = ignore_index
        self.reduction = check_reduction(reduction)
        self.fast_path = check_choice("fast_path", fast_path, FAST_PATHS)
        if class_counts is not None:
            self.set_class_counts(class_counts)

    def statistics(self, class_counts: Tensor) -> Mapping[str, Tensor]:
        statistics = {"margins": ldam_margins(class_counts, self.max_m)}
        if self.reweight is not None:
            statistics["class_weight"] = class_weights(class_counts, self.reweight, self.beta)
        return statistics

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits = check_logits(logits)
        self.require_class_counts(logits.shape[1])
        return ldam_loss(logits, target, self.margins, self.s, self.class_weight, self.ignore_index, self.reduction,
                         self.fast_path)

    def extra_repr(self) -> str:
        return f"max_m={self.max_m}, s={self.s}, reweight={self.reweight!r}"
