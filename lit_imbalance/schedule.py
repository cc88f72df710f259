"""Loss warm-up: train with a start loss first, then move to the configured loss.

Losses built for the tail (focal, LDAM, re-weighted CE) learn poor features
when they are used from the first step: the rare classes' large weights or
margins dominate before the representation exists. The remedy of the
literature is a schedule: plain cross-entropy (or the unweighted loss) first,
the imbalance loss later. Deferred re-weighting (DRW, Cao et al. 2019,
"LDAM-DRW") is the same schedule whose target is the re-weighted loss.

The schedule is a function of the trainer's progress (epoch or optimizer
step), which Lightning restores on resume; the progress the schedule last saw
is also kept in its ``state_dict`` (it is an ``nn.Module``, so it travels in
the model's checkpoint, and its losses follow ``.to(device)``). The factor is
read from a Python copy of that progress, never from the buffers: reading a
device tensor on every training step would make the host wait for the GPU.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import Tensor, nn

from lit_imbalance._checks import check_choice, check_in_unit_interval, fail
from lit_imbalance.losses._common import per_class
from lit_imbalance.losses._fused_softmax import is_soft_target
from lit_imbalance.weights import WEIGHT_SCHEMES, class_weights

WarmupMode = Literal["switch", "blend"]
WARMUP_MODES = ("switch", "blend")


def warmup_factor(progress: int, length: int, mode: WarmupMode = "switch") -> float:
    """Weight of the target loss after ``progress`` of ``length`` warm-up epochs or steps.

    ``switch`` jumps from 0 to 1 when the warm-up is over; ``blend`` rises
    linearly, ``progress / length``. Both are 1 from ``progress == length`` on,
    and a warm-up of length 0 is no warm-up.

    Example:
        >>> [warmup_factor(epoch, 4, "switch") for epoch in range(6)]
        [0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
        >>> [warmup_factor(epoch, 4, "blend") for epoch in range(6)]
        [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    """
    if progress >= length:
        return 1.0
    return 0.0 if mode == "switch" else progress / length


def _check_length(name: str, value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        fail(name, "a non-negative integer or None", value)
    return value


def reweighted_copy(loss: nn.Module, scheme: str, beta: float) -> nn.Module:
    """A copy of ``loss`` with class weights ``class_weights(counts, scheme, beta)``, for DRW.

    A loss with its own ``reweight`` option (the library's count-driven losses,
    e.g. :class:`~lit_imbalance.losses.LDAMLoss`) is copied with that option
    set, so it applies the weights the way its paper does. Any other loss with a
    ``reduction`` that accepts ``"none"`` is wrapped in :class:`ClassWeightedLoss`.

    Example:
        >>> reweighted_copy(nn.CrossEntropyLoss(), "inverse", 0.9999)
        ClassWeightedLoss(
          scheme='inverse', reduction='mean'
          (loss): CrossEntropyLoss()
        )
        >>> reweighted_copy(nn.Flatten(), "inverse", 0.9999)
        Traceback (most recent call last):
        ...
        TypeError: Expected argument `loss` to be a loss with a `reweight` option or a `reduction` (per-sample losses) for deferred re-weighting, but got 'Flatten'.
    """
    if hasattr(loss, "reweight"):
        weighted = copy.deepcopy(loss)
        weighted.reweight, weighted.beta = scheme, beta
        return weighted
    if getattr(loss, "reduction", None) not in ("mean", "sum"):
        fail(
            "loss",
            "a loss with a `reweight` option or a `reduction` (per-sample losses) for deferred re-weighting",
            type(loss).__name__,
            exc=TypeError,
        )
    return ClassWeightedLoss(loss, scheme, beta)


class ClassWeightedLoss(nn.Module):
    r"""Any per-sample loss re-weighted by class: :math:`\sum_i w_{y_i} \ell_i / \sum_i w_{y_i}`.

    The weighted mean is PyTorch's convention for ``CrossEntropyLoss(weight=...)``
    (``reduction="sum"`` gives :math:`\sum_i w_{y_i} \ell_i`). The weights come
    from :func:`lit_imbalance.weights.class_weights` when the class counts
    arrive (:meth:`set_class_counts`); they are a non-persistent buffer,
    recomputed every fit. Samples whose target is the loss's ``ignore_index``
    weigh nothing.

    Args:
        loss: a loss with a ``reduction`` attribute; a copy computes per-sample losses.
        scheme: ``"inverse"``, ``"sqrt"`` or ``"effective"``.
        beta: the effective-number ``beta``.

    Example:
        >>> weighted = ClassWeightedLoss(nn.CrossEntropyLoss(), "inverse", 0.9999)
        >>> weighted.set_class_counts(torch.tensor([30, 10]))
        >>> logits, y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]]), torch.tensor([0, 1, 1])
        >>> torch.allclose(weighted(logits, y), nn.functional.cross_entropy(logits, y, weight=weighted.class_weight))
        True
    """

    class_weight: Tensor | None

    def __init__(self, loss: nn.Module, scheme: str, beta: float) -> None:
        super().__init__()
        self.scheme = check_choice("scheme", scheme, WEIGHT_SCHEMES)
        self.beta = check_in_unit_interval("beta", beta, open_right=True)
        self.reduction = check_choice("reduction", getattr(loss, "reduction", None), ("mean", "sum"))
        self.loss = copy.deepcopy(loss)
        self.loss.reduction = "none"
        self.register_buffer("class_weight", None, persistent=False)

    def set_class_counts(self, class_counts: Tensor) -> None:
        if callable(getattr(self.loss, "set_class_counts", None)):
            self.loss.set_class_counts(class_counts)
        device = self.class_weight.device if self.class_weight is not None else torch.as_tensor(class_counts).device
        self.class_weight = class_weights(class_counts, scheme=self.scheme, beta=self.beta).to(device)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.class_weight is None:
            fail("class_counts", "set (set_class_counts) before the first re-weighted loss", None, RuntimeError)
        if is_soft_target(logits, target):
            # The weights inside the target: a loss linear in it (those that take soft targets
            # are) gives sum_c q_c w_c loss(e_c), the mix of the re-weighted hard-label losses.
            target = target * per_class(self.class_weight, target)
            per_sample, weight = self.loss(logits, target), target.sum(dim=1)
        else:
            per_sample = self.loss(logits, target)
            if per_sample.shape != target.shape:
                fail("target", f"one class per per-sample loss {tuple(per_sample.shape)}", f"shape {tuple(target.shape)}")
            valid = target != getattr(self.loss, "ignore_index", -100)
            classes = torch.where(valid, target, torch.zeros_like(target)).long()
            weight = self.class_weight.to(per_sample.dtype)[classes] * valid
            per_sample = weight * per_sample
        total = per_sample.sum()
        return total / weight.sum().clamp_min(torch.finfo(weight.dtype).tiny) if self.reduction == "mean" else total

    def extra_repr(self) -> str:
        return f"scheme={self.scheme!r}, reduction={self.reduction!r}"


class LossWarmup(nn.Module):
    """Move from a start loss to the target loss after ``epochs`` or ``steps``.

    With the factor ``f`` of :func:`warmup_factor` the loss is
    ``(1 - f) * start(logits, y) + f * target(logits, y)``; at ``f = 0`` or
    ``f = 1`` only one of the two is computed. Progress is counted in epochs
    (``epochs``) or optimizer steps (``steps``, Lightning's ``global_step``),
    one of the two; call :meth:`advance` before the loss (the
    :class:`~lit_imbalance.mixin.ImbalanceMixin` does, every training batch).

    Deferred re-weighting (DRW) is ``reweight="effective"``: the target is a
    copy of the target loss with class weights from
    :func:`lit_imbalance.weights.class_weights` (``scheme=reweight``,
    ``beta``), computed when the class counts arrive
    (:meth:`set_class_counts`); see :func:`reweighted_copy` for which losses
    qualify. The start loss then defaults to the *unweighted* target loss
    instead of cross-entropy, as in LDAM-DRW.

    Args:
        epochs: warm-up length in epochs (0 = none). Exclusive with ``steps``.
        steps: warm-up length in optimizer steps. Exclusive with ``epochs``.
        mode: ``"switch"`` (a hard switch at the end) or ``"blend"`` (linear).
        start: the warm-up loss; plain cross-entropy when ``None`` (the unweighted
            target when ``reweight`` is set).
        target: the loss after the warm-up; the mixin fills it in with its
            configured loss when ``None``.
        reweight: ``None``, or a :func:`~lit_imbalance.weights.class_weights`
            scheme (``"inverse"``, ``"sqrt"``, ``"effective"``) for DRW.
        beta: the effective-number ``beta`` of ``reweight="effective"``.

    Example:
        >>> warmup = LossWarmup(epochs=2, mode="blend", target=nn.CrossEntropyLoss(label_smoothing=0.2))
        >>> logits, y = torch.tensor([[2.0, 0.0]]), torch.tensor([0])
        >>> warmup.advance(epoch=1, step=10)
        >>> warmup.factor
        0.5
        >>> start, target = nn.CrossEntropyLoss()(logits, y), warmup.target(logits, y)
        >>> torch.allclose(warmup(logits, y), 0.5 * start + 0.5 * target)
        True
    """

    def __init__(
        self,
        epochs: int | None = None,
        steps: int | None = None,
        mode: WarmupMode = "switch",
        start: nn.Module | None = None,
        target: nn.Module | None = None,
        reweight: str | None = None,
        beta: float = 0.9999,
    ) -> None:
        super().__init__()
        _check_length("epochs", epochs)
        _check_length("steps", steps)
        if epochs is not None and steps is not None:
            fail("steps", f"None when epochs={epochs} is given (warm up by epochs or by steps, not both)", steps)
        self.by_steps = steps is not None
        self.length = steps if steps is not None else (epochs or 0)
        self.mode = check_choice("mode", mode, WARMUP_MODES)
        self.reweight = check_choice("reweight", reweight, (None, *WEIGHT_SCHEMES))
        self.beta = check_in_unit_interval("beta", beta, open_right=True)
        for name, loss in (("start", start), ("target", target)):
            if loss is not None and not isinstance(loss, nn.Module):
                fail(name, "an nn.Module loss or None", loss, exc=TypeError)
        self.start = start
        self.target: nn.Module | None = None
        if target is not None:
            self.set_target(target)
        # The buffers carry the progress in checkpoints; the factor reads the Python mirror
        # (`_progress`), kept equal to them by `advance` and by every `load_state_dict`.
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self._progress = (0, 0)
        self.register_load_state_dict_post_hook(_restore_progress)

    @property
    def is_noop(self) -> bool:
        """True when the schedule changes nothing: no warm-up and no re-weighting."""
        return self.length == 0 and self.reweight is None

    def set_target(self, target: nn.Module, default_start: nn.Module | None = None) -> LossWarmup:
        """Set the loss to move to (once); with ``reweight``, a copy of it gets the class weights.

        Args:
            target: the loss after the warm-up.
            default_start: the start loss when none was given and there is no
                re-weighting (cross-entropy when ``None``; the mixin passes
                ``BCEWithLogitsLoss`` for binary and multi-label tasks).
        """
        if self.target is not None:
            fail("target", "set once (the schedule already has a target loss)", type(target).__name__)
        if self.start is None:
            if self.reweight is not None:
                self.start = target
            else:
                self.start = default_start if default_start is not None else nn.CrossEntropyLoss()
        # DRW: the unweighted loss stays the start loss, so the weighted one is a copy.
        self.target = reweighted_copy(target, self.reweight, self.beta) if self.reweight is not None else target
        return self

    def set_class_counts(self, class_counts: Tensor) -> None:
        """Hand the training class counts to both losses (the DRW target derives its weights from them)."""
        for loss in {id(m): m for m in (self.start, self.target) if m is not None}.values():
            if callable(getattr(loss, "set_class_counts", None)):
                loss.set_class_counts(class_counts)

    def advance(self, epoch: int, step: int) -> None:
        """Record the trainer's progress: the current epoch and the optimizer steps taken."""
        progress = (int(epoch), int(step))
        if progress != self._progress:
            # Buffers written only on a change: one fill_ per epoch (and step), no host read.
            if progress[0] != self._progress[0]:
                self.epoch.fill_(progress[0])
            if progress[1] != self._progress[1]:
                self.step.fill_(progress[1])
            self._progress = progress

    @property
    def progress(self) -> tuple[int, int]:
        """The recorded ``(epoch, step)``, as Python ints (what :attr:`factor` is computed from)."""
        return self._progress

    @property
    def factor(self) -> float:
        """Weight of the target loss at the recorded progress, in ``[0, 1]``."""
        epoch, step = self._progress
        return warmup_factor(step if self.by_steps else epoch, self.length, self.mode)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.start is None or self.target is None:
            fail("target", "set before the first loss (pass it or use the mixin's configured loss)", None)
        factor = self.factor
        if factor >= 1.0:
            return self.target(logits, target)
        if factor <= 0.0:
            return self.start(logits, target)
        return (1.0 - factor) * self.start(logits, target) + factor * self.target(logits, target)

    def extra_repr(self) -> str:
        unit = "steps" if self.by_steps else "epochs"
        return f"{unit}={self.length}, mode={self.mode!r}, reweight={self.reweight!r}"


def _restore_progress(module: LossWarmup, incompatible_keys: object) -> None:
    """``load_state_dict`` post-hook: the Python mirror takes the progress the loaded buffers carry.

    A module-level function, not a bound method, so the hook survives pickling
    (``ddp_spawn``) and ``copy.deepcopy``. Reads the buffers once per load, not per step.
    """
    module._progress = (int(module.epoch), int(module.step))


def loss_warmup(
    epochs: int | None = None,
    steps: int | None = None,
    mode: WarmupMode = "switch",
    start: nn.Module | None = None,
    target: nn.Module | None = None,
    reweight: str | None = None,
    beta: float = 0.9999,
) -> LossWarmup | None:
    """A :class:`LossWarmup`, or ``None`` when it would change nothing (no length, no re-weighting).

    What ``conf/warmup/`` builds: ``warmup.epochs=3`` asks for a schedule, the
    default asks for none and gets no object. The arguments are validated either way.

    Example:
        >>> loss_warmup() is None, type(loss_warmup(epochs=3)).__name__
        (True, 'LossWarmup')
    """
    warmup = LossWarmup(epochs, steps, mode, start, target, reweight, beta)
    return None if warmup.is_noop and target is None else warmup
