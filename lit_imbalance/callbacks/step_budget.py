"""A training budget with a floor in optimiser steps: small data sets still get enough updates."""

from __future__ import annotations

import logging
import math

import lightning as L
from lightning.pytorch.callbacks import Callback

from lit_imbalance._checks import check_positive_int, fail

log = logging.getLogger(__name__)


def epochs_for_steps(min_steps: int, batches_per_epoch: int, accumulate_grad_batches: int = 1) -> int:
    """The number of epochs whose optimiser steps reach ``min_steps``.

    Example:
        >>> epochs_for_steps(1000, batches_per_epoch=3)  # 145 samples in batches of 64
        334
        >>> epochs_for_steps(1000, batches_per_epoch=48, accumulate_grad_batches=2)
        42
    """
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / accumulate_grad_batches))
    return math.ceil(min_steps / steps_per_epoch)


class MinimumSteps(Callback):
    """Train for at least ``min_steps`` optimiser steps, extending ``max_epochs`` when an epoch is short.

    A budget in epochs alone starves small data: 60 epochs of 49 samples in
    batches of 64 are 60 updates. ``Trainer(min_steps=...)`` does not help, since
    Lightning stops at ``max_epochs`` first. This callback raises the fit loop's
    ``max_epochs`` at the start of training, once the number of batches per epoch
    (per rank, under DDP) is known, to the first epoch count that makes
    ``min_steps`` steps; a larger ``max_epochs`` stays, and ``max_steps`` still caps.

    An LR scheduler was built for the configured epochs, so a fit with one that
    would need extending is refused before the first step.

    Args:
        min_steps: the floor on optimiser steps.

    Example:
        >>> MinimumSteps(min_steps=1000).min_steps
        1000
    """

    def __init__(self, min_steps: int = 1000) -> None:
        self.min_steps = check_positive_int("min_steps", min_steps)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        batches = trainer.num_training_batches
        if trainer.max_epochs in (None, -1) or not math.isfinite(batches) or batches == 0:
            return
        needed = epochs_for_steps(self.min_steps, int(batches), trainer.accumulate_grad_batches)
        if needed <= trainer.max_epochs:
            return
        if trainer.lr_scheduler_configs:
            fail("min_steps", f"reachable in trainer.max_epochs={trainer.max_epochs} when an LR scheduler is "
                 f"configured (its horizon is those epochs; {needed} epochs would be needed; raise "
                 "trainer.max_epochs or use scheduler=none)", self.min_steps)
        log.info("MinimumSteps: %d batches per epoch, so max_epochs %d -> %d for at least %d optimiser steps",
                 batches, trainer.max_epochs, needed, self.min_steps)
        trainer.fit_loop.max_epochs = needed
