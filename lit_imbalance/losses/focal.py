"""Focal losses (Lin et al., 2017): sigmoid (binary / multi-label) and softmax (multiclass).

:func:`sigmoid_focal_loss` has the signature and values of
``torchvision.ops.sigmoid_focal_loss`` and is a drop-in replacement. Its fast
path is a custom autograd function that computes the loss and the closed-form
gradient in one pass and saves only the gradient for backward (the textbook
formula keeps about five input-sized tensors for autograd). For inputs of at
least ``COMPILE_MIN_ELEMENTS`` elements the same kernel runs through
``torch.compile``, which fuses it and the reduction into one loop: on 2 CPU
cores and 4M elements, forward+backward takes less than the time of
``F.binary_cross_entropy_with_logits`` (the eager kernel about 3x, the textbook
formula about 5x). ``alpha`` and ``gamma`` are tensor inputs of that one
compiled graph, so a sweep over them in one process never reuses a graph
compiled for other values. Compiling costs a few seconds once per process
(Inductor caches on disk), and falls back to the eager kernel, with one
warning, where it fails.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_imbalance._checks import check_choice, check_in_unit_interval, fail
from lit_imbalance.losses._closed_form import (
    FAST_PATHS,
    ClosedFormLoss,
    reduction_extras,
    should_compile,
    summed_and_scaled,
)
from lit_imbalance.losses._fused_softmax import fused_softmax_loss
from lit_imbalance.losses._common import (
    REDUCTIONS,
    SIGMOID_REDUCTIONS,
    TINY,
    as_float_tensor,
    binary_targets,
    check_alpha,
    check_class_vector,
    check_gamma,
    check_logits,
    check_reduction,
    class_index_target,
    focal_modulation,
    mask,
    per_class,
    reduce_loss,
)


def sigmoid_focal_loss(
    logits: Tensor,
    targets: Tensor,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    reduction: str = "mean",
    pos_weight: float | Sequence[float] | Tensor | None = None,
    ignore_index: int = -100,
    fast_path: str = "auto",
) -> Tensor:
    r"""Sigmoid focal loss for binary and multi-label targets (torchvision semantics).

    With :math:`p = \sigma(x)`, target :math:`t \in [0, 1]` and
    :math:`p_t = p\,t + (1 - p)(1 - t)`:

    .. math::
        \mathrm{FL}(x, t) = \alpha_t\,(1 - p_t)^\gamma\,\mathrm{BCE}(x, t), \qquad
        \alpha_t = \alpha\,t + (1 - \alpha)(1 - t),

    where :math:`\mathrm{BCE}` is binary cross-entropy with logits
    (with ``pos_weight`` :math:`w` scaling its positive term, as in
    ``BCEWithLogitsLoss``). ``alpha`` is the weight of the **positive** targets
    and ``1 - alpha`` that of the negatives: the default 0.25 *down*-weights the
    rare positives, which the modulating factor already emphasises (Lin et al.,
    Table 1a). It is not a per-class weight. Computed in log space and in fp32.

    Args:
        logits: predictions of any shape, e.g. ``(N,)``, ``(N, C)`` or ``(N, C, d1, ...)``.
        targets: same shape as ``logits`` (0/1 or soft labels), or integer class
            indices of shape ``(N, d1, ...)`` for ``(N, C, d1, ...)`` logits,
            one-hot encoded along dim 1 (rows equal to ``ignore_index`` are
            masked out; with ``C == 1`` the indices are read as 0/1 labels).
        alpha: weight of positives in ``[0, 1]``; ``None`` or a negative value disables it.
        gamma: focusing parameter :math:`\gamma \ge 0`; 0 gives (``alpha``-weighted) BCE.
        reduction: ``"none"`` (element-wise, shaped like ``logits``), ``"mean"``
            (over the elements that count), ``"sum"`` or ``"positives"`` (sum
            divided by ``max(1, number of positive targets)``, the count averaged
            across DDP ranks when training under ``torch.distributed``).
        pos_weight: weight of positive targets inside the BCE term: a scalar, or
            one value per class (broadcast along dim 1).
        ignore_index: class index whose rows are ignored (class-index targets only).
        fast_path: ``"auto"`` (default: the fused kernel, compiled for inputs of
            at least ``COMPILE_MIN_ELEMENTS`` = 2**20 elements, eager below, and
            eager inside an outer ``torch.compile``), ``"eager"`` (fused kernel,
            never compiled), ``"compiled"`` (always compiled) or ``"reference"``
            (plain autograd through the formula). The fused kernel needs targets
            and ``pos_weight`` that do not require grad; otherwise the reference
            path runs. All paths give the same values up to float rounding.

    Returns:
        The reduced loss (fp32, or fp64 for fp64 logits), or the element-wise loss for ``"none"``.

    Example:
        >>> logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
        >>> targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> sigmoid_focal_loss(logits, targets)
        tensor(0.0751)
        >>> sigmoid_focal_loss(logits, torch.tensor([0, 1]))   # class indices, one-hot encoded
        tensor(0.0751)
        >>> sigmoid_focal_loss(logits, targets, reduction="positives")
        tensor(0.1503)
    """
    logits = check_logits(logits, min_ndim=1)
    alpha = check_alpha(alpha)
    gamma = check_gamma(gamma)
    check_reduction(reduction, SIGMOID_REDUCTIONS)
    check_choice("fast_path", fast_path, FAST_PATHS)
    weight = None if pos_weight is None else positive_weight(pos_weight, logits)
    targets, valid = binary_targets(logits, targets, ignore_index)
    return _sigmoid_focal(logits, targets, valid, alpha, gamma, weight, reduction, fast_path)


def positive_weight(pos_weight: float | Sequence[float] | Tensor, logits: Tensor) -> Tensor:
    """``pos_weight`` as a positive tensor broadcastable to ``logits`` (per class along dim 1)."""
    weight = pos_weight if isinstance(pos_weight, Tensor) else as_float_tensor(pos_weight, "pos_weight")
    if not (weight > 0).all():
        fail("pos_weight", "positive weights", weight.tolist())
    if weight.numel() == 1:
        return weight.reshape(()).to(device=logits.device, dtype=logits.dtype)
    if logits.ndim < 2:
        fail("pos_weight", "a scalar for logits without a class dimension", weight.tolist())
    check_class_vector(weight.reshape(-1), logits.shape[1], "pos_weight")
    return per_class(weight.reshape(-1), logits)


def _sigmoid_focal(
    logits: Tensor,
    targets: Tensor,
    valid: Tensor | None,
    alpha: float | None,
    gamma: float,
    pos_weight: Tensor | None,
    reduction: str,
    fast_path: str = "auto",
) -> Tensor:
    """Sigmoid focal loss on validated inputs (float targets shaped like ``logits``)."""
    needs_reference = targets.requires_grad or (pos_weight is not None and pos_weight.requires_grad)
    if fast_path == "reference" or needs_reference:
        loss = mask(_sigmoid_focal_reference(logits, targets, alpha, gamma, pos_weight), valid)
        return reduce_loss(loss, reduction, valid, targets=targets)
    element_weight, scale = reduction_extras(reduction, logits, valid, targets)
    return ClosedFormLoss.apply(_fused_kernel, should_compile(fast_path, logits), logits, targets, (alpha, gamma),
                                pos_weight, element_weight, scale)


def _sigmoid_focal_reference(
    x: Tensor, t: Tensor, alpha: float | None, gamma: float, pos_weight: Tensor | None
) -> Tensor:
    """The formula as written, in log space, differentiated by autograd."""
    log_p = F.logsigmoid(x)
    log_one_minus_p = log_p - x  # log(1 - sigmoid(x)) == logsigmoid(-x)
    positive_term = t * log_p if pos_weight is None else pos_weight * t * log_p
    ce = -(positive_term + (1 - t) * log_one_minus_p)
    one_minus_pt = log_p.exp() * (1 - t) + log_one_minus_p.exp() * t
    loss = ce * focal_modulation(one_minus_pt, gamma)
    if alpha is not None:
        loss = loss * (alpha * t + (1 - alpha) * (1 - t))
    return loss


def _log_sigmoid_and_sigmoid(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(log sigmoid(x), sigmoid(x))``.

    Eagerly, the two library kernels; traced by ``torch.compile``, both from one
    ``exp(-|x|)``, which the compiler fuses (one transcendental fewer per element).
    """
    if torch.compiler.is_compiling():
        exp_neg_abs = torch.exp(-x.abs())
        log_p = torch.clamp_max(x, 0) - torch.log1p(exp_neg_abs)
        return log_p, torch.where(x >= 0, 1.0, exp_neg_abs) / (1 + exp_neg_abs)
    return F.logsigmoid(x), torch.sigmoid(x)


def _sigmoid_focal_terms(
    x: Tensor,
    t: Tensor,
    alpha: float | Tensor | None,
    gamma: float | Tensor,
    pos_weight: Tensor | None,
    element_weight: Tensor | None,
) -> tuple[Tensor, Tensor]:
    r"""Element-wise sigmoid focal loss and its derivative w.r.t. ``x``, with few temporaries.

    With :math:`q = 1 - p_t = p(1 - t) + (1 - p)t`, :math:`m = q^\gamma` and
    :math:`\ell = \mathrm{BCE}`: :math:`\partial (\alpha_t m \ell) / \partial x =
    \alpha_t m (\ell' + \gamma \ell\, p(1-p)(1-2t) / q)`. Since
    :math:`p(1-p) \le q`, the quotient stays bounded when :math:`q \to 0`, where
    the textbook chain rule multiplies an infinity by zero.
    """
    log_p, p = _log_sigmoid_and_sigmoid(x)
    ce = torch.addcmul(x, t, x, value=-1)  # (1 - t) x
    if pos_weight is None:
        ce.sub_(log_p)  # BCE = (1 - t) x - log p
        grad = p - t
    else:
        positive_scale = (pos_weight - 1) * t + 1  # 1 + (w - 1) t
        ce.sub_(positive_scale * log_p)
        grad = positive_scale.mul_(p).sub_(pos_weight * t)  # (1 + (w - 1) t) p - w t
    del log_p
    one_minus_2t = torch.mul(t, -2).add_(1)
    one_minus_pt = torch.addcmul(t, p, one_minus_2t)
    focal_grad = torch.addcmul(p, p, p, value=-1)  # p (1 - p)
    del p
    focal_grad.mul_(one_minus_2t).mul_(ce).div_(one_minus_pt.clamp_min(TINY)).mul_(gamma)
    grad.add_(focal_grad)
    del focal_grad
    factor = focal_modulation(one_minus_pt, gamma)
    del one_minus_pt
    if alpha is not None:
        factor.mul_(one_minus_2t.mul_(0.5 - alpha).add_(0.5))  # alpha t + (1 - alpha)(1 - t)
    del one_minus_2t
    if element_weight is not None:
        factor.mul_(element_weight)
    return ce.mul_(factor), grad.mul_(factor)


def _fused_kernel(
    x: Tensor,
    t: Tensor,
    scalars: tuple[float | Tensor | None, float | Tensor],
    pos_weight: Tensor | None,
    element_weight: Tensor | None,
    scale: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """Loss and gradient; with ``scale``, the loss summed and both scaled (eager, or traced by compile).

    ``scalars`` is ``(alpha, gamma)``: 0-d tensors when compiled (see :mod:`._closed_form`).
    """
    alpha, gamma = scalars
    return summed_and_scaled(*_sigmoid_focal_terms(x, t, alpha, gamma, pos_weight, element_weight), scale)


class SigmoidFocalLoss(nn.Module):
    """Sigmoid focal loss; see :func:`sigmoid_focal_loss` for the formula and arguments.

    Example:
        >>> loss = SigmoidFocalLoss(alpha=0.25, gamma=2.0)
        >>> loss(torch.tensor([[2.0, -1.0], [0.5, 3.0]]), torch.tensor([0, 1]))
        tensor(0.0751)
    """

    needs_class_counts = False
    # One independent sigmoid per logit: the bias prior is logit(pi_c), not log(pi_c).
    sigmoid_outputs = True

    def __init__(
        self,
        alpha: float | None = 0.25,
        gamma: float = 2.0,
        reduction: str = "mean",
        pos_weight: float | Sequence[float] | None = None,
        ignore_index: int = -100,
        fast_path: str = "auto",
    ) -> None:
        super().__init__()
        self.alpha = check_alpha(alpha)
        self.gamma = check_gamma(gamma)
        self.reduction = check_reduction(reduction, SIGMOID_REDUCTIONS)
        self.ignore_index = ignore_index
        self.fast_path = check_choice("fast_path", fast_path, FAST_PATHS)
        weight = None if pos_weight is None else as_float_tensor(pos_weight, "pos_weight")
        if weight is not None and not (weight > 0).all():
            fail("pos_weight", "positive weights", weight.tolist())
        self.register_buffer("pos_weight", weight)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return sigmoid_focal_loss(
            logits, target, self.alpha, self.gamma, self.reduction, self.pos_weight, self.ignore_index, self.fast_path
        )

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}, reduction={self.reduction!r}"


def focal_alpha(alpha: float | Sequence[float] | Tensor | None, num_classes: int) -> Tensor | None:
    """Softmax-focal ``alpha`` as a per-class ``(C,)`` tensor: a scalar ``a`` becomes ``[a, 1-a, ..., 1-a]``."""
    if alpha is None:
        return None
    if isinstance(alpha, (int, float)) and not isinstance(alpha, bool):
        value = check_in_unit_interval("alpha", alpha)
        weights = torch.full((num_classes,), 1.0 - value)
        weights[0] = value
        return weights
    weights = as_float_tensor(alpha, "alpha").reshape(-1)
    if ((weights < 0) | (weights > 1)).any():
        fail("alpha", "per-class weights in [0, 1]", weights.tolist())
    check_class_vector(weights, num_classes, "alpha")
    return weights


def softmax_focal_loss(
    logits: Tensor,
    target: Tensor,
    gamma: float = 2.0,
    alpha: float | Sequence[float] | Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int = -100,
) -> Tensor:
    r"""Multiclass (softmax) focal loss.

    With :math:`p_y = \mathrm{softmax}(x)_y` the probability of the true class:

    .. math:: \mathrm{FL}(x, y) = -\alpha_y\,(1 - p_y)^\gamma \log p_y .

    ``gamma=0`` and ``alpha=None`` give cross-entropy exactly. It runs on
    :func:`~lit_imbalance.losses._fused_softmax.fused_softmax_loss`: one
    ``log_softmax`` plus O(N) work for the factor and a closed-form gradient
    (CE's, scaled per sample), so it costs about one ``F.cross_entropy``.

    Args:
        logits: ``(N, C)`` or ``(N, C, d1, ...)``.
        target: class indices, ``(N,)`` or ``(N, d1, ...)``.
        gamma: focusing parameter :math:`\gamma \ge 0`.
        alpha: class weights :math:`\alpha_y`. ``None``: all 1. A list: one
            weight in ``[0, 1]`` per class. A scalar ``a``: the write-ups'
            binary convention carried over, **class 0 gets** ``a`` **and every
            other class** ``1 - a`` (so it suits "class 0 is background"; for
            real per-class weights pass a list).
        reduction: ``"none"`` (per sample, ``(N, d1, ...)``), ``"mean"`` (over the
            non-ignored samples; the ``alpha`` weights do not enter the
            denominator) or ``"sum"``.
        ignore_index: target value that contributes no loss.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
        >>> target = torch.tensor([0, 2])
        >>> softmax_focal_loss(logits, target, gamma=2.0)
        tensor(0.4838)
        >>> softmax_focal_loss(logits, target, gamma=0.0)   # == F.cross_entropy
        tensor(0.8606)
    """
    logits = check_logits(logits)
    gamma = check_gamma(gamma)
    check_reduction(reduction)
    return _softmax_focal(logits, target, gamma, focal_alpha(alpha, logits.shape[1]), ignore_index, reduction)


def _softmax_focal(
    logits: Tensor,
    target: Tensor,
    gamma: float,
    class_weight: Tensor | None,
    ignore_index: int,
    reduction: str,
) -> Tensor:
    """Softmax focal loss on validated options, with any non-negative per-class weights (the fused kernel)."""
    return fused_softmax_loss(
        logits, target, class_weight=class_weight, gamma=gamma, reduction=reduction, ignore_index=ignore_index
    )


class FocalLoss(nn.Module):
    """Multiclass softmax focal loss; see :func:`softmax_focal_loss` (and what a scalar ``alpha`` means there).

    Example:
        >>> loss = FocalLoss(gamma=2.0)
        >>> loss(torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), torch.tensor([0, 2]))
        tensor(0.4838)
    """

    needs_class_counts = False

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | None = None,
        reduction: str = "mean",
        ignore_index: int = -100,
    ) -> None:
        super().__init__()
        self.gamma = check_gamma(gamma)
        self.reduction = check_reduction(reduction, REDUCTIONS)
        self.ignore_index = ignore_index
        self.alpha = alpha
        # A list is validated now (its length once the logits tell C); a scalar expands per call.
        per_class_alpha = None
        if isinstance(alpha, (int, float)):
            check_in_unit_interval("alpha", alpha)
        elif alpha is not None:
            per_class_alpha = as_float_tensor(alpha, "alpha").reshape(-1)
            focal_alpha(per_class_alpha, per_class_alpha.numel())
        self.register_buffer("class_alpha", per_class_alpha)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits = check_logits(logits)
        if self.class_alpha is not None:
            check_class_vector(self.class_alpha, logits.shape[1], "alpha")
            class_weight = self.class_alpha
        else:
            class_weight = focal_alpha(self.alpha, logits.shape[1])  # type: ignore[arg-type]
        return _softmax_focal(logits, target, self.gamma, class_weight, self.ignore_index, self.reduction)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, alpha={self.alpha}, reduction={self.reduction!r}"
