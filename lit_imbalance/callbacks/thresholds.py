"""Decision-threshold tuning after training: choose on validation outputs, test at the choice."""

from __future__ import annotations

import logging
from collections.abc import Sequence
import lightning as L
from lightning.pytorch.callbacks import Callback

from lit_imbalance._checks import check_choice, check_in_unit_interval, fail
from lit_imbalance.callbacks.calibration import check_posthoc_model
from lit_imbalance.outputs import validation_outputs
from lit_imbalance.metrics import THRESHOLD
from lit_imbalance.thresholds import F1_RULES, THRESHOLD_METHODS, check_cost_matrix, choose_threshold

log = logging.getLogger(__name__)


class ThresholdTuning(Callback):
    """Choose the decision threshold of a binary or multi-label model on validation outputs.

    At ``on_test_start`` (after the checkpoint to test is loaded), the model's
    validation probabilities give the threshold of ``method``
    (:mod:`lit_imbalance.thresholds`; one per label for multi-label tasks), which
    the model records (:meth:`~lit_imbalance.ImbalanceMixin.set_decision_threshold`,
    a buffer saved in later checkpoints) and uses from then on: the ``test/*``
    metrics are at the chosen threshold, ``test/default_threshold/*`` at 0.5,
    ``threshold/value`` (``threshold/<label>``) records it, and ``predict_step``
    of the bundled models predicts with it.

    Args:
        method: ``"f1"`` (largest F1 of the positive class), ``"recall_at_precision"``
            (largest recall with precision ``>= min_precision``) or ``"cost"``
            (smallest total cost under ``cost_matrix``).
        min_precision: the precision to reach, for ``"recall_at_precision"``.
        cost_matrix: ``[[tn, fp], [fn, tp]]`` costs (row = truth, column = decision), for ``"cost"``.
        f1_rule: for ``"f1"``, ``"one_se"`` (the middle of the near-best thresholds) or
            ``"argmax"``, see :func:`~lit_imbalance.thresholds.best_f1_threshold`.

    Usage::

        trainer = L.Trainer(callbacks=[ThresholdTuning("f1")])
        trainer.fit(model, datamodule)
        trainer.test(model, datamodule)  # threshold/value, test/f1 at it, test/default_threshold/f1 at 0.5
    """

    def __init__(
        self,
        method: str = "f1",
        min_precision: float | None = None,
        cost_matrix: Sequence[Sequence[float]] | None = None,
        f1_rule: str = "one_se",
    ) -> None:
        self.method = check_choice("method", method, THRESHOLD_METHODS)
        self.f1_rule = check_choice("f1_rule", f1_rule, F1_RULES)
        if method == "recall_at_precision":
            if min_precision is None:
                fail("min_precision", "a float in [0, 1] for method='recall_at_precision'", None)
            check_in_unit_interval("min_precision", min_precision)  # type: ignore[arg-type]
        if method == "cost":
            if cost_matrix is None:
                fail("cost_matrix", "a 2x2 matrix [[tn, fp], [fn, tp]] for method='cost'", None)
            check_cost_matrix(cost_matrix)  # type: ignore[arg-type]
        self.min_precision = min_precision
        self.cost_matrix = cost_matrix
        self.threshold: float | list[float] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        check_posthoc_model(pl_module, "threshold", "set_decision_threshold")
        task = getattr(pl_module, "imbalance_task", None)
        if task == "multiclass":
            # Before training: a multiclass model's decision is its top class, there is no cut to tune.
            fail("threshold", f"none for task='multiclass' (a decision threshold needs a binary or multi-label "
                 "task: model.task=binary|multilabel, or threshold=none)", self.method)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        outputs = validation_outputs(trainer, pl_module, "threshold")
        targets = outputs.targets
        scores = outputs.logits.reshape(targets.shape).float().sigmoid()
        arguments = dict(min_precision=self.min_precision, cost_matrix=self.cost_matrix, f1_rule=self.f1_rule)
        if scores.ndim == 1:
            self.threshold = choose_threshold(self.method, scores, targets, **arguments)
        else:
            self.threshold = [choose_threshold(self.method, scores[:, label], targets[:, label], **arguments)
                              for label in range(scores.shape[1])]
        log.info("Decision threshold by %s on validation: %s (default %s)", self.method, self.threshold, THRESHOLD)
        pl_module.set_decision_threshold(self.threshold)  # type: ignore[operator]
