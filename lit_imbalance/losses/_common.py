"""Pieces every loss shares, one helper each.

* input checks: :func:`check_logits`, :func:`class_index_target`, :func:`binary_targets`;
* fp32 upcast: :func:`upcast`;
* reduction: :func:`denominator` and :func:`reduce_loss`;
* the focal modulating factor: :func:`focal_modulation`;
* class statistics held as buffers: :class:`ClassCountsLoss`.

Label range checks cost one fused comparison over the targets. On CPU tensors
an out-of-range label raises a ``ValueError`` naming the value (there is no
device to wait for); on accelerators and under ``torch.compile`` the check is
an asynchronous device assertion, so no loss forces a host synchronisation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from lit_imbalance._checks import check_choice, check_in_unit_interval, check_non_negative, fail
from lit_imbalance.weights import as_class_counts

REDUCTIONS = ("mean", "sum", "none")
# Sigmoid (per-element) losses may also divide by the number of positive targets.
SIGMOID_REDUCTIONS = (*REDUCTIONS, "positives")
# Smallest normal float32: clamping 1 - p_t to it keeps powers and quotients finite.
TINY = torch.finfo(torch.float32).tiny


def check_reduction(reduction: str, choices: Sequence[str] = REDUCTIONS) -> str:
    """Return ``reduction`` if it is one of ``choices``."""
    return check_choice("reduction", reduction, choices)


def check_gamma(gamma: float, name: str = "gamma") -> float:
    """Return a focusing parameter as a float if it is ``>= 0``."""
    return check_non_negative(name, gamma)


def check_alpha(alpha: float | None) -> float | None:
    """Sigmoid-focal ``alpha``: ``None`` or negative disables it (torchvision), else ``[0, 1]``."""
    if alpha is None or (isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and alpha < 0):
        return None
    return check_in_unit_interval("alpha", alpha)


def as_float_tensor(value: Any, name: str) -> Tensor:
    """A tensor (or a possibly nested sequence, e.g. a Hydra ``ListConfig``) as a finite float32 tensor."""
    if not isinstance(value, Tensor):
        value = nested_list(value)
    try:
        tensor = torch.as_tensor(value, dtype=torch.float32).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        fail(name, "a number or a (nested) sequence of numbers", value)
    if not torch.isfinite(tensor).all():
        fail(name, "finite numbers", tensor.tolist())
    return tensor


def nested_list(value: Any) -> Any:
    """Plain nested lists from any nested sequence (tuples, ``ListConfig``), leaving scalars alone."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return value
    return [nested_list(item) for item in value]


def upcast(tensor: Tensor) -> Tensor:
    """Half-precision floats (fp16, bf16) as float32; float32 and float64 unchanged.

    Losses compute and reduce in at least fp32 even under autocast: autocast only
    lowers the precision of matmul-like ops, which no loss here uses, so casting
    the inputs once is enough.
    """
    if tensor.is_floating_point() and torch.finfo(tensor.dtype).bits < 32:
        return tensor.float()
    return tensor


def check_logits(logits: Tensor, min_ndim: int = 2) -> Tensor:
    """Validate logits and return them upcast to at least float32."""
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        got = logits.dtype if isinstance(logits, Tensor) else type(logits).__name__
        fail("logits", "a floating-point tensor", got)
    if logits.ndim < min_ndim:
        shape = "(N, C) or (N, C, d1, ...)" if min_ndim == 2 else "at least 1-D"
        fail("logits", f"a tensor of shape {shape}", f"shape {tuple(logits.shape)}")
    return upcast(logits)


def per_class(values: Tensor, like: Tensor) -> Tensor:
    """Reshape a ``(C,)`` vector so it broadcasts along dim 1 of ``like`` (``(N, C, d1, ...)``)."""
    return values.to(device=like.device, dtype=like.dtype).view(1, -1, *([1] * (like.ndim - 2)))


def check_class_vector(values: Tensor, num_classes: int, name: str) -> None:
    """Raise unless ``values`` has one entry per class."""
    if values.shape != (num_classes,):
        fail(name, f"{num_classes} values (one per class of the logits)", values.tolist())


def check_label_range(target: Tensor, valid: Tensor, num_classes: int, ignore_index: int) -> Tensor:
    """Every non-ignored label must lie in ``0..num_classes-1``: one fused check, see the module docstring.

    Returns:
        The target with ignored entries replaced by 0 (safe to index with).
    """
    safe_target = torch.where(valid, target, 0)
    if safe_target.numel() == 0:
        return safe_target
    # Three passes over the labels (ne, where, aminmax), not six: on a loaded machine each
    # parallel pass over a large batch can cost a scheduler time slice.
    low, high = torch.aminmax(safe_target)
    in_range = (low >= 0) & (high < num_classes)
    expected = f"class indices in 0..{num_classes - 1} (or ignore_index={ignore_index})"
    if target.device.type == "cpu" and not torch.compiler.is_compiling():
        if not in_range:
            wrong = target[valid & ((target < 0) | (target >= num_classes))]
            fail("target", expected, wrong[0].item())
    else:
        torch._assert_async(in_range, f"Expected argument `target` to be {expected}.")
    return safe_target


def class_index_target(logits: Tensor, target: Tensor, ignore_index: int) -> tuple[Tensor, Tensor]:
    """Validate integer class indices for ``(N, C, d1, ...)`` logits.

    Returns:
        ``(safe_target, valid)``: the target with ignored entries replaced by 0
        (safe to gather or scatter with) and the boolean mask of entries that count.
    """
    safe_target, valid = class_index_target_or_all(logits, target, ignore_index)
    return safe_target, torch.ones_like(safe_target, dtype=torch.bool) if valid is None else valid


def class_index_target_or_all(logits: Tensor, target: Tensor, ignore_index: int) -> tuple[Tensor, Tensor | None]:
    """:func:`class_index_target`, with ``valid=None`` when every entry counts.

    Only a CPU tensor tells that for free (one ``aminmax``, read without a
    device to wait for); elsewhere the mask is always built. Kernels that get
    ``None`` skip the masking passes.
    """
    expected = logits.shape[:1] + logits.shape[2:]
    if not isinstance(target, Tensor) or target.shape != expected:
        got = f"shape {tuple(target.shape)}" if isinstance(target, Tensor) else type(target).__name__
        fail("target", f"class indices of shape {tuple(expected)} for logits of shape {tuple(logits.shape)}", got)
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        fail("target", "integer class indices", f"dtype {target.dtype}")
    num_classes = logits.shape[1]
    if target.device.type == "cpu" and target.numel() > 0 and not torch.compiler.is_compiling():
        low, high = (int(bound) for bound in torch.aminmax(target))
        if 0 <= low and high < num_classes and not low <= ignore_index <= high:
            return target, None
    valid = target != ignore_index
    return check_label_range(target, valid, num_classes, ignore_index), valid


def binary_targets(logits: Tensor, target: Tensor, ignore_index: int) -> tuple[Tensor, Tensor | None]:
    """Per-element targets for a sigmoid loss, in the dtype of ``logits``.

    Accepts either

    * targets of the same shape as ``logits`` (binary 0/1 or soft in ``[0, 1]``,
      any dtype), used as they are (no ignore mask); or
    * integer class indices of shape ``(N, d1, ...)`` for ``(N, C, d1, ...)``
      logits, one-hot encoded along dim 1; entries equal to ``ignore_index``
      mask their whole row. With a single logit (``C == 1``) the labels are read
      as binary 0/1 targets instead.

    Returns:
        ``(targets, valid)``: float targets shaped like ``logits`` and a boolean
        mask broadcastable to them (``None`` when every element counts).
    """
    if not isinstance(target, Tensor):
        fail("target", "a tensor", type(target).__name__)
    if target.shape == logits.shape:
        return target.to(logits.dtype), None
    if logits.ndim >= 2 and target.shape == logits.shape[:1] + logits.shape[2:] and not target.is_floating_point():
        if logits.shape[1] == 1:
            valid = target != ignore_index
            check_label_range(target, valid, 2, ignore_index)
            return (target == 1).unsqueeze(1).to(logits.dtype), valid.unsqueeze(1)
        safe_target, valid = class_index_target(logits, target, ignore_index)
        one_hot = torch.zeros_like(logits).scatter_(1, safe_target.unsqueeze(1), 1.0)
        return one_hot, valid.unsqueeze(1)
    fail(
        "target",
        f"a tensor of the logits' shape {tuple(logits.shape)}, or integer class indices of shape "
        f"{tuple(logits.shape[:1] + logits.shape[2:])}",
        f"a {target.dtype} tensor of shape {tuple(target.shape)}",
    )
    raise AssertionError  # unreachable: fail() raises


def mask(loss: Tensor, valid: Tensor | None) -> Tensor:
    """Zero the loss (and its gradient) where ``valid`` is false."""
    return loss if valid is None else loss.masked_fill(~valid, 0.0)


def num_positives(targets: Tensor, valid: Tensor | None) -> Tensor:
    """``max(1, #positives)``, averaged over DDP ranks when training under torch.distributed.

    Soft targets count by their mass. The average (not the local count) keeps
    every rank's loss on the same scale, as in detection codebases that
    normalise a focal loss by the number of foreground anchors. Only with
    autograd enabled: evaluation loaders may give the ranks different numbers
    of batches (every sample counted once), and an all-reduce per batch would
    then pair with another rank's unrelated collective and hang or mix values.
    """
    count = mask(targets.detach(), valid).sum()
    if torch.is_grad_enabled() and dist.is_available() and dist.is_initialized():
        count = count.clone()
        dist.all_reduce(count)
        count = count / dist.get_world_size()
    return count.clamp_min(1.0)


def denominator(
    reduction: str,
    loss_like: Tensor,
    valid: Tensor | None = None,
    weight: Tensor | None = None,
    targets: Tensor | None = None,
) -> Tensor | float:
    """What a reduction divides the summed loss by.

    * ``"sum"``: 1;
    * ``"mean"``: ``weight.sum()`` when a per-element ``weight`` is given
      (PyTorch's weighted mean), else the number of elements that count
      (``valid`` may broadcast, e.g. ``(N, 1)`` against ``(N, C)``);
    * ``"positives"``: :func:`num_positives` of ``targets``.

    A batch where nothing counts divides by a tiny positive number, so its
    (zero) loss stays 0 instead of becoming ``0/0``.
    """
    if reduction == "sum":
        return 1.0
    if reduction == "positives":
        return num_positives(targets, valid)  # type: ignore[arg-type]
    if weight is not None:
        total = weight.sum(dtype=loss_like.dtype)
    elif valid is None:
        return float(loss_like.numel())
    else:
        # count_nonzero: a bool .sum() first widens every entry (to int64, or here to the float dtype).
        total = torch.count_nonzero(valid).to(loss_like.dtype) * (loss_like.numel() // max(valid.numel(), 1))
    return total.clamp_min(TINY)


def weighted_bce(logits: Tensor, targets: Tensor, weight: Tensor, reduction: str,
                 valid: Tensor | None = None) -> Tensor:
    """BCE-with-logits with per-element ``weight`` (zero where an element does not count), reduced.

    The weights enter BCE's own kernel, so loss, weighting, reduction and gradient are
    one library call; ``"mean"`` divides by the elements that count (``valid``), not by
    the weights (see :func:`denominator`).
    """
    if reduction == "none":
        return F.binary_cross_entropy_with_logits(logits, targets, weight=weight, reduction="none")
    summed = F.binary_cross_entropy_with_logits(logits, targets, weight=weight, reduction="sum")
    return summed / denominator(reduction, logits, valid, targets=targets)


def reduce_loss(
    loss: Tensor,
    reduction: str,
    valid: Tensor | None = None,
    weight: Tensor | None = None,
    targets: Tensor | None = None,
) -> Tensor:
    """Reduce an element-wise loss (already zero where ignored); see :func:`denominator`."""
    if reduction == "none":
        return loss
    return loss.sum() / denominator(reduction, loss, valid, weight, targets)


def focal_modulation(one_minus_pt: Tensor, gamma: float | Tensor) -> Tensor:
    r"""The focal modulating factor :math:`(1 - p_t)^\gamma`.

    ``1 - p_t`` is clamped to the smallest normal float32 first: the derivative
    :math:`\gamma (1 - p_t)^{\gamma - 1}` is infinite at :math:`p_t = 1` for
    :math:`\gamma < 1`, and autograd would multiply that infinity by the zero
    derivative of :math:`p_t`. After the clamp the factor is off by at most
    ``TINY ** gamma`` and every gradient is finite; ``gamma=0`` gives exactly 1.

    Example:
        >>> focal_modulation(torch.tensor([0.0, 0.5]), 2.0)
        tensor([0.0000, 0.2500])
    """
    return one_minus_pt.clamp_min(TINY).pow(gamma)


class ClassCountsLoss(nn.Module):
    """Base of the losses driven by training class counts.

    The counts are a persistent int64 buffer ``class_counts`` (so they travel
    in ``state_dict`` and checkpoints, and never get cast by ``.half()``); what
    a loss derives from them (weights, log prior, margins) lives in
    non-persistent buffers recomputed by :meth:`set_class_counts`. All of them
    follow ``.to(device)``.

    Subclasses list their derived buffers in ``derived_buffers``, compute them
    in :meth:`statistics`, and call :meth:`set_class_counts` at the end of
    ``__init__`` when given counts (once the options it depends on are set).
    """

    needs_class_counts: bool = True
    derived_buffers: tuple[str, ...] = ()
    class_counts: Tensor | None

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("class_counts", None)
        for name in self.derived_buffers:
            self.register_buffer(name, None, persistent=False)

    def set_class_counts(self, class_counts: Sequence[float] | Tensor) -> None:
        """Store the training samples per class (whole numbers, shape ``(C,)``) and derive statistics."""
        counts = as_class_counts(class_counts)
        if not torch.equal(counts, counts.round()):
            fail("class_counts", "whole numbers of samples per class", counts.tolist())
        device = self.class_counts.device if self.class_counts is not None else torch.device("cpu")
        derived = self.statistics(counts)
        self.class_counts = counts.to(device=device, dtype=torch.int64)
        for name, value in derived.items():
            setattr(self, name, value.to(device))

    def statistics(self, class_counts: Tensor) -> Mapping[str, Tensor]:
        """Derived per-class tensors, by buffer name, from validated float64 counts."""
        raise NotImplementedError

    def require_class_counts(self, num_classes: int) -> None:
        """Raise a clear error if counts were never given or do not match the logits."""
        if self.class_counts is None:
            fail(
                "class_counts",
                f"given to {type(self).__name__}(class_counts=...) or set with set_class_counts(...) before the "
                "first forward (ImbalanceMixin does it in setup('fit'))",
                None,
                RuntimeError,
            )
        if self.class_counts.numel() != num_classes:
            fail("class_counts", f"{num_classes} counts (one per class of the logits)", self.class_counts.tolist())

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # A fresh loss has no counts yet: adopt the checkpoint's so the buffer exists to be loaded into.
        counts = state_dict.get(prefix + "class_counts")
        if counts is not None:
            self.set_class_counts(counts)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)  # type: ignore[arg-type]
