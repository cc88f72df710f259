r"""One fused kernel for the whole softmax family: loss and closed-form gradient, eager ops only.

Every softmax loss of the catalogue is one case of

.. math::
    z = s\,(x + b - \Delta_y e_y), \qquad
    \ell(x, y) = w\;\kappa\;(1 - p_y)^\gamma\,(-\log p_y), \qquad p = \mathrm{softmax}(z),

with a per-class logit shift :math:`b` (logit adjustment :math:`\tau \log\pi`,
balanced softmax :math:`\log\pi`), a per-class margin :math:`\Delta` taken off
the target logit only and a scale :math:`s` (LDAM), a per-sample weight
:math:`w` (class weights :math:`w_{y}`: weighted CE, class-balanced, DRW,
focal :math:`\alpha`; and any per-sample weights, e.g. weighting by the
predicted class), an expected-cost weight :math:`\kappa = \sum_j \bar p_j K_{yj}`
without gradient (cost-sensitive) and the focal modulation :math:`\gamma`.

The gradient is CE's, scaled per sample. With :math:`L = -\log p_y` and
:math:`q = 1 - p_y`:

.. math::
    \frac{\partial \ell}{\partial x} = s\, w\,\kappa\, q^\gamma
    \Big(1 + \gamma\, p_y \frac{L}{q}\Big)\,(p - e_y),

where :math:`L / q \in [1, \infty)` only grows like :math:`L` while
:math:`p_y = e^{-L}` falls faster, so the factor stays bounded as
:math:`q \to 0` (where the chain rule through :math:`q^\gamma` would multiply
an infinity by zero) and as :math:`p_y \to 0`.

Why it is fast: the forward is one ``log_softmax`` (written in place over the
shifted logits when there is a shift) plus O(N) work on the target column,
read and written through flat indices (``index_select`` / ``index_put_``; a
``gather`` or ``scatter_add`` along dim 1 costs as much as a full pass on the
CPU). Backward is one ``exp`` of the saved log-probabilities and one in-place
row scaling. That is fewer full passes and fewer ``(N, C)`` buffers than
``F.cross_entropy`` itself, whose backward materialises a one-hot gradient
before the ``log_softmax`` backward. No ``torch.compile``: nothing here needs
it, so the stale-hyper-parameter hazard of compiled graphs cannot arise.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from lit_imbalance._checks import check_bool, check_positive, fail
from lit_imbalance.losses._common import (
    TINY,
    check_class_vector,
    check_gamma,
    check_logits,
    check_reduction,
    class_index_target_or_all,
    denominator,
    focal_modulation,
    per_class,
    upcast,
)


def fused_softmax_loss(
    logits: Tensor,
    target: Tensor,
    *,
    logit_shift: Tensor | None = None,
    target_margin: Tensor | None = None,
    scale: float = 1.0,
    class_weight: Tensor | None = None,
    sample_weight: Tensor | None = None,
    cost: Tensor | None = None,
    gamma: float = 0.0,
    weighted_mean: bool = False,
    reduction: str = "mean",
    ignore_index: int = -100,
) -> Tensor:
    r"""Softmax cross-entropy with every re-weighting and logit adjustment of the catalogue, fused.

    Computes :math:`\ell = w\,\kappa\,(1 - p_y)^\gamma (-\log p_y)` on
    :math:`z = s (x + b - \Delta_y e_y)` (see the module docstring) and its
    gradient in one pass; backward only scales the saved log-probabilities.
    Computed in fp32 for fp16/bf16 logits (fp64 stays fp64). The
    hyper-parameter tensors carry no gradient.

    Args:
        logits: ``(N, C)`` or ``(N, C, d1, ...)``.
        target: class indices ``(N,)`` or ``(N, d1, ...)``.
        logit_shift: ``(C,)`` per-class shift :math:`b` added to every logit
            before the softmax (e.g. :math:`\tau \log \pi`).
        target_margin: ``(C,)`` margins :math:`\Delta`; :math:`\Delta_y` is
            subtracted from the target logit only.
        scale: :math:`s > 0`, applied after shift and margin.
        class_weight: ``(C,)`` non-negative weights; sample ``i`` gets :math:`w_{y_i}`.
        sample_weight: non-negative weights shaped like ``target``, multiplied in.
        cost: the expected-cost weight :math:`\kappa`, without gradient: a
            ``(C, C)`` matrix ``cost[true, predicted]`` gives
            :math:`\sum_j \bar p_j K_{yj}`; a ``(C,)`` vector :math:`a` (the
            matrix :math:`a_y` off the diagonal, 0 on it) gives
            :math:`a_y (1 - \bar p_y)` in O(N).
        gamma: focal :math:`\gamma \ge 0`; 0 gives (weighted) cross-entropy.
        weighted_mean: ``"mean"`` divides by the sum of :math:`w` over the
            non-ignored samples (``F.cross_entropy``'s convention for class
            weights) instead of their number.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per sample, shaped like ``target``).
        ignore_index: target value that contributes no loss and no gradient.

    Returns:
        The loss, fp32 (fp64 for fp64 logits).

    Example:
        >>> import torch.nn.functional as F
        >>> x, y = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), torch.tensor([0, 2])
        >>> fused_softmax_loss(x, y), F.cross_entropy(x, y)
        (tensor(0.8606), tensor(0.8606))
        >>> fused_softmax_loss(x, y, gamma=2.0)   # softmax focal loss
        tensor(0.4838)
        >>> fused_softmax_loss(x, y, logit_shift=torch.tensor([0.0, 0.0, 1.0]))  # == CE on shifted logits
        tensor(0.5508)
        >>> F.cross_entropy(x + torch.tensor([0.0, 0.0, 1.0]), y)
        tensor(0.5508)
    """
    logits = check_logits(logits)
    check_reduction(reduction)
    gamma = check_gamma(gamma)
    scale = check_positive("scale", scale)
    check_bool("weighted_mean", weighted_mean)
    if is_soft_target(logits, target):
        if target_margin is not None or cost is not None or gamma != 0.0 or sample_weight is not None:
            # A margin, a cost row or a focal factor belongs to one true class; a mixed label has two.
            fail("target", "class indices for a loss with margins, costs or focal modulation (soft, mixed targets "
                 "have no single true class)", f"soft targets of shape {tuple(target.shape)}")
        return soft_target_cross_entropy(logits, target, logit_shift=logit_shift, scale=scale,
                                         class_weight=class_weight, weighted_mean=weighted_mean, reduction=reduction)
    safe_target, valid = class_index_target_or_all(logits, target, ignore_index)
    num_classes = logits.shape[1]
    shift = hyper_parameter_vector(logit_shift, "logit_shift", logits)
    margin = hyper_parameter_vector(target_margin, "target_margin", logits)
    weights = hyper_parameter_vector(class_weight, "class_weight", logits)
    if sample_weight is not None:
        if not isinstance(sample_weight, Tensor) or sample_weight.shape != target.shape or sample_weight.requires_grad:
            fail("sample_weight", f"a tensor without gradient of the target's shape {tuple(target.shape)}", sample_weight)
        sample_weight = sample_weight.to(device=logits.device, dtype=logits.dtype)
    weight = per_sample_weight(weights, safe_target, valid, logits.dtype, sample_weight)
    if cost is not None:
        if not isinstance(cost, Tensor) or cost.requires_grad or cost.shape not in {
            (num_classes,),
            (num_classes, num_classes),
        }:
            fail("cost", f"a ({num_classes},) or ({num_classes}, {num_classes}) tensor without gradient", cost)
        cost = cost.to(device=logits.device, dtype=logits.dtype)
    return _FusedSoftmaxFunction.apply(
        logits, safe_target, weight, valid, weighted_mean, shift, margin, scale, cost, gamma, reduction
    )


def hyper_parameter_vector(values: Tensor | None, name: str, logits: Tensor) -> Tensor | None:
    """``values`` checked as one entry per class without gradient, on the logits' device and dtype (``None`` kept)."""
    if values is None:
        return None
    if not isinstance(values, Tensor) or values.requires_grad:
        fail(name, "a tensor without gradient (a hyper-parameter)", values)
    check_class_vector(values, logits.shape[1], name)
    return values.to(device=logits.device, dtype=logits.dtype)


def per_sample_weight(class_weight: Tensor | None, target: Tensor, valid: Tensor | None, dtype: torch.dtype,
                      sample_weight: Tensor | None = None) -> Tensor | None:
    """The per-sample weight :math:`w`: the target's class weight times the sample weight, 0 where ignored.

    ``None`` when every sample weighs 1, so that plain CE runs no per-sample pass at all.
    """
    weight = None if class_weight is None else class_weight[target]
    if sample_weight is not None:
        weight = sample_weight if weight is None else weight * sample_weight
    if valid is not None:
        weight = valid.to(dtype) if weight is None else torch.where(valid, weight, 0.0)
    return weight


def is_soft_target(logits: Tensor, target: Tensor) -> bool:
    """Whether ``target`` is a distribution over the classes (mixup, label smoothing): float, the logits' shape."""
    return target.is_floating_point() and target.shape == logits.shape


def soft_target_cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    logit_shift: Tensor | None = None,
    scale: float = 1.0,
    class_weight: Tensor | None = None,
    weighted_mean: bool = False,
    reduction: str = "mean",
) -> Tensor:
    r"""Cross-entropy against soft targets :math:`q`: :math:`-\sum_c q_c w_c \log \mathrm{softmax}(s(x + b))_c`.

    Linear in the target (the weighted mean divides by :math:`\sum_n \sum_c q_{nc} w_c`),
    so a mixed label :math:`\lambda e_i + (1 - \lambda) e_j` gives exactly
    :math:`\lambda \ell(x, i) + (1 - \lambda) \ell(x, j)` of the hard-label loss:
    this is how mixup, remix and label smoothing meet CE, weighted CE,
    class-balanced, logit-adjusted and balanced-softmax losses. One-hot targets
    give the hard-label values. Autograd, in fp32 (fp64 stays fp64).

    Example:
        >>> import torch.nn.functional as F
        >>> x, q = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.7, 0.3, 0.0]])
        >>> bool(torch.isclose(soft_target_cross_entropy(x, q),
        ...                    0.7 * F.cross_entropy(x, torch.tensor([0])) + 0.3 * F.cross_entropy(x, torch.tensor([1]))))
        True
    """
    z = upcast(logits)
    target = target.to(z.dtype)
    if logit_shift is not None:
        z = z + per_class(logit_shift, z)
    log_probs = torch.log_softmax(z * scale, dim=1)
    weight = None
    if class_weight is not None:
        # Linear in the target: sum_c q_c w_c (-log p_c), the weights inside the sum.
        target = target * per_class(class_weight, z)
        weight = target.sum(dim=1)
    loss = -(target * log_probs).sum(dim=1)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if weight is not None and weighted_mean:
        return loss.sum() / weight.sum().clamp_min(torch.finfo(z.dtype).tiny)
    return loss.mean()


#: Scaled logits (LDAM's s = 30) spread a row over hundreds of units, so most of exp(z - max) lands in
#: the subnormal range, where the CPU runs exp() and products ~20-30x slower (``torch.log_softmax``
#: and the backward's ``exp(log p)`` included). Raising every logit to at least its row's maximum plus
#: this floor (sqrt of the smallest normal float, in log space) keeps every exp() normal, and every
#: p times a per-sample factor too. It moves the log-sum-exp by at most C * exp(floor), relative
#: (1e-15 for 8,142 classes in fp32, far below the dtype's precision).
SUBNORMAL_FREE_FLOOR = {dtype: 0.5 * math.log(torch.finfo(dtype).tiny) for dtype in (torch.float32, torch.float64)}


def log_softmax_without_subnormals_(z: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """``log_softmax(z, dim=1)`` in place over ``z`` with no subnormal ``exp()``, and the exact target entries.

    Entries more than ``-SUBNORMAL_FREE_FLOOR`` below their row's maximum are
    raised to it first (see :data:`SUBNORMAL_FREE_FLOOR`), so the returned
    log-probabilities are floored there; the target entries (flat positions
    ``index``) are returned apart, with their true values, so a target logit
    far below the row's maximum still gets its true loss.

    Returns:
        ``(log_probs, log_p_target)``: the floored log-probabilities (``z``
        itself) and the flat ``(numel(index),)`` true log-probabilities of the targets.

    Example:
        >>> z = torch.tensor([[0.0, -30.0, -300.0]])
        >>> log_probs, log_p_target = log_softmax_without_subnormals_(z.clone(), torch.tensor([2]))
        >>> torch.allclose(log_p_target, torch.log_softmax(z, 1)[0, 2:]), float(log_probs.min()) > -44.0
        (True, True)
    """
    target_logit = z.view(-1).index_select(0, index)
    lowest = z.amax(dim=1, keepdim=True).add_(SUBNORMAL_FREE_FLOOR[z.dtype])
    # One extra pass; then torch's own log_softmax, in place (a row is read before it is written).
    log_probs = torch.log_softmax(z.clamp_min_(lowest), 1, out=z)
    # The target's log p is its own logit minus the (floored) log-sum-exp: undo its raise, if any.
    # lowest is (N, 1, d1, ...): flattened, it is in the targets' order.
    raised_by = lowest.view(-1).sub(target_logit).clamp_min_(0.0)
    return log_probs, log_probs.view(-1).index_select(0, index).sub_(raised_by)


def flat_target_index(shape: torch.Size, target: Tensor) -> Tensor:
    """Positions of ``logits[n, target[n, ...], ...]`` in the flattened contiguous ``(N, C, d1, ...)`` logits."""
    num_classes = shape[1]
    inner = math.prod(shape[2:])
    if inner == 1:
        return torch.arange(0, target.numel() * num_classes, num_classes, device=target.device).add_(target)
    position = torch.arange(target.numel(), device=target.device)
    # n * C * D + y * D + d, with position = n * D + d.
    return (position // inner).mul_((num_classes - 1) * inner).add_(position).add_(target.reshape(-1), alpha=inner)


def _expected_cost(cost: Tensor, log_probs: Tensor, target: Tensor, log_p_target: Tensor) -> Tensor:
    """The cost weight :math:`\\kappa` from the (detached) probabilities; see :func:`fused_softmax_loss`."""
    if cost.ndim == 1:
        return cost[target].mul_(torch.expm1(log_p_target)).neg_()  # a_y (1 - p_y)
    # cost[y] per sample, along dim 1 like the logits: one extra pass, only for a full cost matrix.
    rows = cost[target].movedim(-1, 1)
    return torch.linalg.vecdot(log_probs.exp(), rows, dim=1)


class _FusedSoftmaxFunction(torch.autograd.Function):
    """Forward: log-softmax and the per-sample gradient factor; backward: ``exp`` and one row scaling."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        logits: Tensor,
        target: Tensor,
        weight: Tensor | None,
        valid: Tensor | None,
        weighted_mean: bool,
        shift: Tensor | None,
        margin: Tensor | None,
        scale: float,
        cost: Tensor | None,
        gamma: float,
        reduction: str,
    ) -> Tensor:
        x = logits.contiguous()
        index = flat_target_index(x.shape, target)
        log_p_target = None  # set here only when the log-softmax already gives it
        if shift is None and margin is None and scale == 1.0:
            log_probs = torch.log_softmax(x, 1)
        else:
            if shift is not None:
                z = torch.add(per_class(shift * scale, x), x, alpha=scale)  # s b + s x, one pass
            else:
                z = x * scale
            if margin is not None:
                z.view(-1).index_add_(0, index, margin[target].reshape(-1), alpha=-scale)
            if scale != 1.0 and z.dtype in SUBNORMAL_FREE_FLOOR:
                log_probs, log_p_target = log_softmax_without_subnormals_(z, index)
                log_p_target = log_p_target.view_as(target)
            else:
                # In place over z: a row is read before it is written, and z is ours, so no second buffer.
                log_probs = torch.log_softmax(z, 1, out=z)
        if log_p_target is None:
            log_p_target = log_probs.view(-1).index_select(0, index).view_as(target)  # log p_y <= 0
        factor = weight  # the loss's per-sample factor (None: 1); nothing below writes into weight
        if cost is not None:
            expected_cost = _expected_cost(cost, log_probs, target, log_p_target)
            factor = expected_cost if factor is None else factor * expected_cost
        grad_factor = factor
        if gamma > 0:
            one_minus_p = torch.expm1(log_p_target).neg_()
            modulation = focal_modulation(one_minus_p, gamma)
            factor = modulation if factor is None else factor * modulation
            # d/dx of q^gamma L is q^gamma (1 + gamma p_y L / q)(p - e_y); q clamped as in focal_modulation.
            chain = torch.exp(log_p_target).mul_(log_p_target).div_(one_minus_p.clamp_min_(TINY))
            grad_factor = chain.mul_(-gamma).add_(1.0).mul_(factor)
        if reduction == "none":
            loss = log_p_target.neg() if factor is None else torch.mul(log_p_target, factor).neg_()
            ctx.multiplier = scale
        else:
            if factor is None:
                summed = log_p_target.sum()
            else:
                summed = torch.dot(log_p_target.reshape(-1), factor.reshape(-1))
            total = denominator(reduction, log_p_target, valid, weight if weighted_mean else None)
            loss = summed.neg_() / total
            ctx.multiplier = scale / total
        ctx.save_for_backward(log_probs, index, grad_factor)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        log_probs, index, grad_factor = ctx.saved_tensors  # type: ignore[attr-defined]
        row = grad_output * ctx.multiplier  # type: ignore[attr-defined]
        if grad_factor is not None:
            row = grad_factor * row
        # exp() makes a new buffer, so backward can run again on a retained graph (gradcheck does).
        grad = torch.exp(log_probs)
        if row.ndim == 0:  # a reduced loss without per-sample factors: one scalar for every row
            grad.mul_(row)
            row = row.expand(index.shape)
        else:
            grad.mul_(row.unsqueeze(1))
        grad.view(-1).index_add_(0, index, row.reshape(-1), alpha=-1)  # - e_y
        return (grad, *[None] * 10)
