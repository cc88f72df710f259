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
the model's checkpoint, and its losses follow ``.to(device)``).
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import Tensor, nn

from lit_imbalance._checks import check_choice, check_in_unit_interval, fail
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
    """A copy of ``loss`` that applies class weights ``class_weights(counts, scheme, beta)``.

    Three kinds of losses can be re-weighted: the library's count-driven losses
    with a ``reweight`` option (e.g. :class:`~lit_imbalance.losses.LDAMLoss`),
    which derive the weights themselves in ``set_class_counts``; losses with a
    ``set_class_weights`` method; and torch-style losses with a ``weight``
    buffer (``nn.CrossEntropyLoss``), which get the weights from
    :meth:`LossWarmup.set_class_counts`.

    Example:
        >>> weighted = reweighted_copy(nn.CrossEntropyLoss(), "inverse", 0.9999)
        >>> weighted is not None, weighted.weight is None
        (True, True)
        >>> reweighted_copy(nn.MSELoss(), "inverse", 0.9999)
        Traceback (most recent call last):
        ...
        TypeError: Expected argument `loss` to be a loss that takes class weights (a `reweight` option, a `set_class_weights` method or a torch-style `weight` buffer) for deferred re-weighting, but got 'MSELoss'.
    """
    weight = getattr(loss, "weight", None)
    takes_weights = (
        hasattr(loss, "reweight")
        or callable(getattr(loss, "set_class_weights", None))
        or (hasattr(loss, "weight") and "weight" not in loss._parameters and (weight is None or isinstance(weight, Tensor)))
    )
    if not takes_weights:
        fail(
            "loss",
            "a loss that takes class weights (a `reweight` option, a `set_class_weights` method or a torch-style "
            "`weight` buffer) for deferred re-weighting",
            type(loss).__name__,
            exc=TypeError,
        )
    copy_ = copy.deepcopy(loss)
    if hasattr(copy_, "reweight"):
        copy_.reweight, copy_.beta = scheme, beta
    return copy_


def set_class_weights(loss: nn.Module, weights: Tensor) -> None:
    """Give a copy made by :func:`reweighted_copy` its class weights (unless it derives them itself).

    The weights are a non-persistent buffer: they are recomputed from the class
    counts every fit, so they do not change the checkpoint's keys.

    Example:
        >>> loss = nn.CrossEntropyLoss()
        >>> set_class_weights(loss, torch.tensor([1.0, 3.0]))
        >>> loss.weight, "weight" in loss.state_dict()
        (tensor([1., 3.]), False)
    """
    if hasattr(loss, "reweight"):
        return
    if callable(getattr(loss, "set_class_weights", None)):
        loss.set_class_weights(weights)
        return
    device = loss.weight.device if isinstance(loss.weight, Tensor) else weights.device
    loss.register_buffer("weight", weights.to(device), persistent=False)


class LossWarmup(nn.Module):
    """Move from a start loss to the target loss after ``epochs`` or ``steps``.

    With the factor ``f`` of :func:`warmup_factor` the loss is
    ``(1 - f) * start(logits, y) + f * target(logits, y)``; at ``f = 0`` or
    ``f = 1`` only one of the two is computed. Progress is counted in epochs
    (``epochs``) or optimizer steps (``steps``, Lightning's ``global_step``),
    one of the two; call :meth:`advance` before the loss (the
    :class:`~lit_imbalance.mixin.ImbalanceMixin` does, every training batch).

    Deferred re-weighting (DRW) is ``reweight="effective"``: the target is the
    target loss with class weights from
    :func:`lit_imbalance.weights.class_weights` (``scheme=reweight``,
    ``beta``), computed when the class counts arrive
    (:meth:`set_class_counts`), and the start loss defaults to the *unweighted*
    target loss instead of cross-entropy, as in LDAM-DRW.

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
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

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
        """Hand the training class counts to both losses and derive the DRW class weights."""
        for loss in {id(m): m for m in (self.start, self.target) if m is not None}.values():
            if callable(getattr(loss, "set_class_counts", None)):
                loss.set_class_counts(class_counts)
        if self.reweight is not None and self.target is not None:
            set_class_weights(self.target, class_weights(class_counts, scheme=self.reweight, beta=self.beta))

    def advance(self, epoch: int, step: int) -> None:
        """Record the trainer's progress: the current epoch and the optimizer steps taken."""
        self.epoch.fill_(int(epoch))
        self.step.fill_(int(step))

    @property
    def factor(self) -> float:
        """Weight of the target loss at the recorded progress, in ``[0, 1]``."""
        progress = int(self.step) if self.by_steps else int(self.epoch)
        return warmup_factor(progress, self.length, self.mode)

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
