"""The small interface through which callbacks talk to an imbalance-aware model.

:class:`~lit_imbalance.ImbalanceMixin` implements it; any LightningModule that
provides these members works with the library's callbacks too.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

from lit_imbalance.metrics import EvaluationSummary


@runtime_checkable
class ImbalanceAware(Protocol):
    """What the plots, hard negative mining and the metrics writer read from a model.

    Attributes:
        class_counts: training samples (multi-label: positives) per class of this fit.
        class_names: the display name of every class.
    """

    class_counts: Tensor
    class_names: list[str]

    def evaluation_summary(self, stage: str) -> EvaluationSummary | None:
        """The synced confusion matrix, class names and counts of ``stage``'s last epoch, if any."""

    def refresh_class_counts(self) -> None:
        """Find the training class counts again (the training set changed) and hand them on."""
