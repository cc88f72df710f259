"""Losses computed with their closed-form gradient together, eagerly or through ``torch.compile``.

A kernel is a function ``kernel(x, t, scalars, *extras) -> (loss, grad)``: the loss
(summed and scaled when the last extra, ``scale``, is given) and its derivative with
respect to the logits ``x``. Unreduced, the loss is element-wise (shaped like
``x``), or per sample (``(N,)`` for ``(N, C)`` logits) for a softmax kernel.
:class:`ClosedFormLoss` saves only that gradient for backward, where autograd
through the formula keeps several input-sized tensors.
:func:`run_kernel` runs the kernel compiled when asked and possible, which fuses the
element-wise work and the reduction into one loop, and eagerly otherwise.

The ``scalars`` (``gamma``, ``alpha``, ``clip``, ...) enter a compiled kernel as 0-d
tensors, never as Python floats. Dynamo turns a float that changes between calls into
a symbolic input after the first recompile, and Inductor's AOTAutograd cache (on disk
too) can then hand back the graph compiled for an earlier value: a gamma sweep in one
process trained on the first job's gamma (pytorch #194976, #197889). A tensor is a
graph input by construction, so one graph serves every value and nothing
value-dependent is baked in; only ``None`` scalars and absent extras change the graph,
and Dynamo guards those exactly.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from lit_imbalance.losses._common import denominator

Kernel = Callable[..., tuple[Tensor, Tensor]]

#: ``fast_path`` of the closed-form losses: compiled from COMPILE_MIN_ELEMENTS elements ("auto"),
#: never ("eager"), always ("compiled"), or the loss's reference path ("reference": autograd
#: through the formula, or for LDAM the eager fused softmax kernel).
FAST_PATHS = ("auto", "compiled", "eager", "reference")
# Below this many elements compiling does not pay for itself (and tests stay compile-free).
COMPILE_MIN_ELEMENTS = 1 << 20


def reduction_extras(reduction: str, logits: Tensor, valid: Tensor | None,
                     targets: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """``(element_weight, scale)`` for a kernel: the ignore mask as weights, and 1 / the reduction's denominator.

    ``scale`` is ``None`` for ``reduction="none"`` (the kernel then returns element-wise losses).
    """
    element_weight = None if valid is None else valid.to(logits.dtype)
    return element_weight, reduction_scale(reduction, logits, valid, targets)


def reduction_scale(reduction: str, logits: Tensor, valid: Tensor | None, targets: Tensor,
                    weight: Tensor | None = None) -> Tensor | None:
    """1 / the reduction's denominator as a 0-d tensor (``None`` for ``reduction="none"``); see ``denominator``."""
    if reduction == "none":
        return None
    total = denominator(reduction, logits, valid, weight, targets=targets)
    return 1.0 / torch.as_tensor(total, dtype=logits.dtype, device=logits.device)


def summed_and_scaled(loss: Tensor, grad: Tensor, scale: Tensor | None) -> tuple[Tensor, Tensor]:
    """A kernel's ending: element-wise ``(loss, grad)`` as they are, or with ``scale``, the loss summed and both scaled.

    Inside the kernel, so ``torch.compile`` fuses the reduction into the element-wise loop.
    """
    if scale is None:
        return loss, grad
    return loss.sum() * scale, grad.mul_(scale)


def bce_kernel(x: Tensor, t: Tensor, scalars: Sequence[Tensor | float | None], element_weight: Tensor | None,
               scale: Tensor | None) -> tuple[Tensor, Tensor]:
    r"""Weighted BCE-with-logits and its derivative :math:`w\,(\sigma(x) - t)` in one pass (``scalars`` unused).

    :math:`\max(x, 0) - x t + \log(1 + e^{-|x|})` is BCE in log space, finite for any
    finite logit; it is the ending of the kernels that re-weight BCE (GHM-C, OHEM).
    """
    decay = torch.exp(-x.abs())  # in (0, 1]: no overflow, and shared by the loss and sigmoid(x)
    loss = x.clamp_min(0) - x * t + torch.log1p(decay)
    grad = torch.where(x >= 0, 1.0, decay) / (1 + decay) - t  # sigmoid(x) from e^-|x|, one exp for both
    if element_weight is not None:
        loss, grad = loss * element_weight, grad * element_weight
    return summed_and_scaled(loss, grad, scale)


def should_compile(fast_path: str, logits: Tensor) -> bool:
    """Whether ``fast_path`` (``"auto"``, ``"compiled"``, ``"eager"``) compiles a kernel on ``logits``."""
    return not torch.compiler.is_compiling() and (
        fast_path == "compiled" or (fast_path == "auto" and logits.numel() >= COMPILE_MIN_ELEMENTS)
    )


def kernel_path(fast_path: str, logits: Tensor, targets: Tensor) -> tuple[bool, bool]:
    """``(use the closed-form kernel, compile it)`` for a loss whose ``"auto"`` keeps its reference path below
    ``COMPILE_MIN_ELEMENTS`` (uncompiled, the kernel is no faster there); targets that require grad keep it always.
    """
    compile_kernel = should_compile(fast_path, logits)
    return (compile_kernel or fast_path == "eager") and not targets.requires_grad, compile_kernel


@functools.cache
def compiled(kernel: Kernel) -> Kernel:
    """``kernel`` compiled, made at first use: ``torch.compile`` imports Inductor (about 1 s)."""
    return torch.compile(kernel, dynamic=True)


# Holds the error once torch.compile has failed (no C++ compiler, unsupported device): eager from then on.
_compile_failed: list[BaseException] = []


def run_kernel(kernel: Kernel, use_compiled: bool, x: Tensor, t: Tensor, scalars: Sequence[float | None],
               *extras: Tensor | None) -> tuple[Tensor, Tensor]:
    """``kernel(x, t, scalars, *extras)``, compiled when asked and possible (scalars then as 0-d tensors)."""
    if use_compiled and not _compile_failed:
        try:
            # torch.full: made on the input's device, without a host-to-device copy.
            as_tensors = tuple(None if value is None else torch.full((), value, dtype=x.dtype, device=x.device)
                               for value in scalars)
            return compiled(kernel)(x, t, as_tensors, *extras)
        except Exception as error:  # stay correct, just slower
            _compile_failed.append(error)
            warnings.warn(
                f"torch.compile of the {kernel.__name__} kernel failed ({type(error).__name__}: {error}); "
                "using the eager kernel from now on.",
                stacklevel=4,
            )
    return kernel(x, t, tuple(scalars), *extras)


class ClosedFormLoss(torch.autograd.Function):
    """Forward computes the loss and its gradient in one pass; backward only scales the saved gradient.

    ``ClosedFormLoss.apply(kernel, use_compiled, x, t, scalars, *extras)``; ``t`` and the
    extras must not require grad (the gradient is with respect to ``x`` only).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        kernel: Kernel,
        use_compiled: bool,
        x: Tensor,
        t: Tensor,
        scalars: Sequence[float | None],
        *extras: Tensor | None,
    ) -> Tensor:
        loss, grad = run_kernel(kernel, use_compiled, x, t, scalars, *extras)
        ctx.save_for_backward(grad)
        ctx.extra_count = len(extras)  # type: ignore[attr-defined]
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        (grad,) = ctx.saved_tensors  # type: ignore[attr-defined]
        nothing = (None, None, *([None] * ctx.extra_count))  # type: ignore[attr-defined]
        if grad_output.device.type == "cpu" and grad_output.numel() == 1 and grad_output.item() == 1.0:
            # loss.backward() of the loss itself: the saved gradient is the answer, and multiplying by 1
            # would be a full pass (a fifth of the kernel's memory traffic). Autograd only writes into
            # an incoming gradient it holds the one reference to (accumulation, .grad), so while the
            # graph is retained (the ctx still holds it) it copies, and a second backward sees it intact.
            # A caller who changes autograd.grad's result in place and then backpropagates through the
            # retained graph again gets autograd's "modified by an inplace operation" error, never a
            # silently wrong gradient (the saved tensor's version counter catches it; tested).
            return (None, None, grad, *nothing)
        if 0 < grad_output.ndim == grad.ndim - 1:  # (a 0-d upstream of a reduced 1-D loss broadcasts as it is)
            # A softmax kernel's unreduced losses are per sample, (N,): each scales its row of (N, C).
            grad_output = grad_output.unsqueeze(1)
        # Out of place: backward may run again on a retained graph (gradcheck does).
        return (None, None, grad * grad_output, *nothing)
