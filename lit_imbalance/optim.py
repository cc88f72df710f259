"""Learning-rate factors for ``torch.optim.lr_scheduler.LambdaLR`` that a config can build.

A lambda cannot be written in YAML or pickled into a checkpoint; these small
callables can (``LambdaLR.state_dict`` keeps their attributes).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from lit_imbalance._checks import check_positive, fail


class WarmupMultiStep:
    """Linear warm-up, then the lr multiplied by ``gamma`` at every milestone epoch passed.

    The factor at (0-based) epoch ``e`` is ``(e + 1) / warmup_epochs`` during the
    warm-up and ``gamma ** k`` after it, ``k`` the number of milestones ``<= e``:
    the LDAM-DRW schedule is ``WarmupMultiStep(5, [160, 180], 0.01)`` (lr/5 at epoch 0,
    the full lr at epoch 4, lr x 0.01 from 160, x 0.0001 from 180).

    Args:
        warmup_epochs: epochs of linear warm-up (0 for none).
        milestones: increasing epochs at which the lr is multiplied by ``gamma``.
        gamma: the multiplier.

    Example:
        >>> factor = WarmupMultiStep(warmup_epochs=5, milestones=[160, 180], gamma=0.01)
        >>> [round(factor(e), 6) for e in (0, 4, 5, 159, 160, 179, 180, 199)]
        [0.2, 1.0, 1.0, 1.0, 0.01, 0.01, 0.0001, 0.0001]
    """

    def __init__(self, warmup_epochs: int = 5, milestones: Sequence[int] = (160, 180), gamma: float = 0.01) -> None:
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            fail("warmup_epochs", "a non-negative integer", warmup_epochs)
        milestones = list(milestones)
        if any(isinstance(m, bool) or not isinstance(m, int) for m in milestones) or milestones != sorted(set(milestones)):
            fail("milestones", "strictly increasing integer epochs", milestones)
        self.warmup_epochs = warmup_epochs
        self.milestones = milestones
        self.gamma = check_positive("gamma", gamma)

    def __call__(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            return (epoch + 1) / self.warmup_epochs
        return self.gamma ** bisect.bisect_right(self.milestones, epoch)

    def __repr__(self) -> str:
        return f"WarmupMultiStep(warmup_epochs={self.warmup_epochs}, milestones={self.milestones}, gamma={self.gamma})"
