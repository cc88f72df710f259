"""Gradient harmonizing classification loss (GHM-C, Li, Liu & Wang, 2019)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor, nn

from lit_imbalance._checks import check_choice, check_in_unit_interval, check_positive_int
from lit_imbalance.losses._closed_form import (
    FAST_PATHS,
    ClosedFormLoss,
    bce_kernel,
    kernel_path,
    reduction_extras,
    run_kernel,
)
from lit_imbalance.losses._common import (
    SIGMOID_REDUCTIONS,
    binary_targets,
    check_logits,
    check_reduction,
    weighted_bce,
)


def ghmc_loss(
    logits: Tensor,
    target: Tensor,
    bins: int = 10,
    ignore_index: int = -100,
    reduction: str = "mean",
    fast_path: str = "auto",
) -> Tensor:
    r"""GHM-C: binary cross-entropy re-weighted by the inverse density of gradient norms.

    The gradient norm of BCE w.r.t. a logit is :math:`g = |\sigma(x) - t|`.
    Split :math:`[0, 1]` into ``bins`` equal bins; an element in a bin holding
    a fraction :math:`f_b` of the elements that count gets the weight
    :math:`\beta = 1 / (f_b\, n)`, with :math:`n` the number of non-empty bins:

    .. math:: \mathrm{GHM\text{-}C}(x, t) = \beta(g)\,\mathrm{BCE}(x, t).

    The many easy examples (small :math:`g`) and the few outliers (:math:`g`
    near 1) are both down-weighted. The weights carry no gradient. Everything
    is computed with tensor ops (``scatter_add``, ``where``), without
    ``.item()`` or branching on tensor values, so the forward never waits for
    the device. This stateless form uses the batch's own bin fractions; the
    module adds the paper's moving average.

    Args:
        logits: ``(N, C)`` or ``(N, C, d1, ...)`` (or any shape with same-shape targets).
        target: same shape as ``logits``, or integer class indices ``(N, d1, ...)``
            one-hot encoded along dim 1 (``ignore_index`` rows masked).
        bins: number of gradient-norm bins.
        ignore_index: class index whose rows are ignored (class-index targets only).
        reduction: ``"mean"`` (over the elements that count, as in the paper),
            ``"sum"``, ``"none"`` or ``"positives"``.
        fast_path: ``"auto"`` (from ``COMPILE_MIN_ELEMENTS`` elements the bin counts, then
            the weighted loss and its closed-form gradient, in two compiled passes; below
            that BCE's own weighted kernel), ``"compiled"``, ``"eager"`` (the closed-form
            kernels uncompiled) or ``"reference"`` (BCE's weighted kernel; also what targets
            that require grad, and more than ``MAX_FAST_PATH_BINS`` bins, get). All give the
            same values up to rounding.

    Example:
        >>> logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
        >>> ghmc_loss(logits, torch.tensor([0, 1]), bins=10)
        tensor(0.3657)
    """
    logits = check_logits(logits, min_ndim=1)
    check_positive_int("bins", bins)
    check_reduction(reduction, SIGMOID_REDUCTIONS)
    check_choice("fast_path", fast_path, FAST_PATHS)
    targets, valid = binary_targets(logits, target, ignore_index)
    loss, _ = _ghmc(logits, targets, valid, bins, None, 0.0, reduction, fast_path)
    return loss


#: Up to this many bins the fast path finds an element's bin weight by comparisons, not a gather.
MAX_FAST_PATH_BINS = 32


def _ghmc(
    logits: Tensor,
    targets: Tensor,
    valid: Tensor | None,
    bins: int,
    running_fractions: Tensor | None,
    momentum: float,
    reduction: str,
    fast_path: str = "auto",
) -> tuple[Tensor, Tensor]:
    """GHM-C loss and the bin fractions it used (the moving average when ``running_fractions`` is given)."""
    use_kernel, compile_kernel = kernel_path(fast_path, logits, targets)
    use_kernel = use_kernel and bins <= MAX_FAST_PATH_BINS
    if use_kernel:
        histogram_kernel, loss_kernel = _ghmc_kernels(bins)
        # int32 counts measured half the time of int64 ones, and are exact below 2^31 elements.
        count_dtype = torch.int32 if logits.numel() < 2**31 else torch.int64
        counts = run_kernel(histogram_kernel, compile_kernel, logits.detach(), targets, (), valid,
                            count_dtype).to(logits.dtype)
    else:
        # In place on one fresh buffer: g = |sigmoid(x) - t|, then g * bins, then its floor as an index.
        scaled_norm = torch.sigmoid(logits.detach()).sub_(targets.detach()).abs_().mul_(bins)
        bin_index = scaled_norm.long().clamp_(max=bins - 1)  # floor; g == 1 joins the last bin
        del scaled_norm
        counted = None if valid is None else valid.expand_as(logits).flatten().to(logits.dtype)
        if torch.compiler.is_compiling() or logits.device.type != "cpu":
            counts = logits.new_zeros(bins).scatter_add_(
                0, bin_index.flatten(), torch.ones_like(logits).flatten() if counted is None else counted
            )
        else:  # bincount is one cache-friendly pass on the CPU; elsewhere its output size is a host sync
            counts = torch.bincount(bin_index.flatten(), weights=counted, minlength=bins).to(logits.dtype)
    occupied = counts > 0
    fractions = counts / counts.sum().clamp_min(1.0)
    if running_fractions is not None:
        # Moving average over the bins this batch occupies; a bin's first visit starts it at the batch value.
        running = running_fractions.to(fractions)
        averaged = torch.where(running > 0, momentum * running + (1 - momentum) * fractions, fractions)
        fractions = torch.where(occupied, averaged, running)
    bin_weight = torch.where(occupied, (fractions * occupied.sum()).reciprocal(), 0.0)
    if use_kernel:
        element_weight, scale = reduction_extras(reduction, logits, valid, targets)
        loss = ClosedFormLoss.apply(loss_kernel, compile_kernel, logits, targets, (), bin_weight, element_weight, scale)
        return loss, fractions
    weight = bin_weight.take(bin_index)
    if valid is not None:
        weight = weight.masked_fill_(~valid, 0.0)
    return weighted_bce(logits, targets, weight, reduction, valid), fractions


@functools.cache
def _ghmc_kernels(bins: int) -> tuple[Callable[..., Tensor], Callable[..., tuple[Tensor, Tensor]]]:
    """The fast path's two passes for ``bins`` bins: the bin counts, then the loss and its gradient.

    An element is in bin ``b`` when ``b <= |sigmoid(x) - t| * bins < b + 1`` (``g == 1`` in
    the last bin), so both passes compare the scaled norm with ``1 .. bins - 1``: the
    counts are differences of at-least counts, and the weight is the last bin's that the
    comparisons pass. Unrolled over a constant ``bins``, one kernel per bin count: no
    gather, which Inductor's CPU code bounds-checks per element, and no bin index in memory.
    """
    # Floats, and ints only made while tracing: Dynamo turns a closed-over int into a symbolic size,
    # and Inductor's CPU code for the comparisons with it measured 15x slower.
    scale_by = float(bins)
    edges = tuple(float(edge) for edge in range(1, bins))

    def ghmc_histogram(x: Tensor, t: Tensor, scalars: tuple[()], valid: Tensor | None,
                       count_dtype: torch.dtype) -> Tensor:
        scaled_norm = (torch.sigmoid(x) - t).abs() * scale_by
        at_least = [scaled_norm >= edge for edge in edges]
        if valid is not None:
            at_least = [mask & valid for mask in at_least]
            total = valid.expand_as(x).sum(dtype=count_dtype)
        else:
            total = torch.full((), x.numel(), dtype=count_dtype, device=x.device)
        cumulative = torch.stack([total, *(mask.sum(dtype=count_dtype) for mask in at_least), torch.zeros_like(total)])
        return cumulative[:-1] - cumulative[1:]

    def ghmc_loss_kernel(x: Tensor, t: Tensor, scalars: tuple[()], bin_weight: Tensor, element_weight: Tensor | None,
                         scale: Tensor | None) -> tuple[Tensor, Tensor]:
        scaled_norm = (torch.sigmoid(x) - t).abs() * scale_by
        weight = bin_weight[0].expand_as(x)
        for index, edge in enumerate(edges, start=1):
            weight = torch.where(scaled_norm >= edge, bin_weight[index], weight)
        return bce_kernel(x, t, scalars, weight if element_weight is None else weight * element_weight, scale)

    return ghmc_histogram, ghmc_loss_kernel


class GHMCLoss(nn.Module):
    """GHM-C loss with the paper's moving average of bin fractions; see :func:`ghmc_loss`.

    With ``momentum > 0`` each bin's fraction is an exponential moving average
    over batches, kept in the buffer ``bin_fractions`` (saved in checkpoints)
    and updated only in training mode, so validation never moves it. A bin
    seen for the first time starts at the batch's fraction (mmdetection starts
    the average at zero, which inflates the first weights by ``1/(1-momentum)``).
    Averaging fractions rather than raw counts makes the estimate independent
    of the batch size (it equals mmdetection's when the batch size is fixed).

    Args:
        bins: number of gradient-norm bins.
        momentum: moving-average momentum in ``[0, 1)``; 0 uses each batch alone.
        ignore_index: class index whose rows are ignored (class-index targets only).
        reduction: ``"mean"``, ``"sum"``, ``"none"`` or ``"positives"``.
        fast_path: ``"auto"``, ``"compiled"``, ``"eager"`` or ``"reference"``; see :func:`ghmc_loss`.

    Example:
        >>> loss = GHMCLoss(bins=10, momentum=0.75)
        >>> loss(torch.tensor([[2.0, -1.0], [0.5, 3.0]]), torch.tensor([0, 1]))
        tensor(0.3657)
    """

    needs_class_counts = False
    # One independent sigmoid per logit: the bias prior is logit(pi_c), not log(pi_c).
    sigmoid_outputs = True

    def __init__(
        self, bins: int = 10, momentum: float = 0.0, ignore_index: int = -100, reduction: str = "mean",
        fast_path: str = "auto",
    ) -> None:
        super().__init__()
        self.bins = check_positive_int("bins", bins)
        self.momentum = check_in_unit_interval("momentum", momentum, open_right=True)
        self.ignore_index = ignore_index
        self.reduction = check_reduction(reduction, SIGMOID_REDUCTIONS)
        self.fast_path = check_choice("fast_path", fast_path, FAST_PATHS)
        self.register_buffer("bin_fractions", torch.zeros(bins))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits = check_logits(logits, min_ndim=1)
        targets, valid = binary_targets(logits, target, self.ignore_index)
        running = self.bin_fractions if self.momentum > 0 else None
        loss, fractions = _ghmc(logits, targets, valid, self.bins, running, self.momentum, self.reduction,
                                self.fast_path)
        if self.training and running is not None:
            self.bin_fractions.copy_(fractions)
        return loss

    def extra_repr(self) -> str:
        return f"bins={self.bins}, momentum={self.momentum}"
