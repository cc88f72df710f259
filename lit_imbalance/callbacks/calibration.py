"""Temperature scaling after training: fit ``T`` on validation outputs, report calibrated test metrics."""

from __future__ import annotations

import logging
import lightning as L
from lightning.pytorch.callbacks import Callback

from lit_imbalance._checks import check_positive_int, fail
from lit_imbalance.calibration import fit_temperature, negative_log_likelihood
from lit_imbalance.outputs import validation_outputs

log = logging.getLogger(__name__)


def check_posthoc_model(pl_module: L.LightningModule, key: str, method: str) -> None:
    """Fail before training when ``pl_module`` cannot hold the choice (no :class:`~lit_imbalance.ImbalanceMixin`)."""
    if not callable(getattr(pl_module, method, None)):
        fail(key, f"used with a model that has `{method}` (an ImbalanceMixin model)", type(pl_module).__name__)


class TemperatureScaling(Callback):
    """Fit a temperature on validation outputs when the test starts (Guo et al. 2017).

    At ``on_test_start``, after Lightning has loaded the checkpoint to test, the
    model's validation logits (:func:`~lit_imbalance.outputs.collect_outputs`
    over the datamodule's ``val_dataloader``) give ``T``
    (:func:`~lit_imbalance.calibration.fit_temperature`), which the model records
    (:meth:`~lit_imbalance.ImbalanceMixin.set_temperature`, a buffer saved in later
    checkpoints). The test then logs ``calibration/temperature``, ``test/nll`` and
    ``test/calibrated/*`` (``ece``, ``nll``, ...) beside the uncalibrated
    ``test/ece``; a shared ``T`` changes no decision, only the confidences.

    Args:
        max_iter: L-BFGS iterations of the fit.

    Usage::

        trainer = L.Trainer(callbacks=[TemperatureScaling()])
        trainer.fit(model, datamodule)
        trainer.test(model, datamodule)  # test/calibrated/ece, calibration/temperature
    """

    def __init__(self, max_iter: int = 100) -> None:
        self.max_iter = check_positive_int("max_iter", max_iter)
        self.temperature: float | None = None
        self.validation_nll: dict[str, float] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        check_posthoc_model(pl_module, "calibration", "set_temperature")

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        outputs = validation_outputs(trainer, pl_module, "calibration")
        task = getattr(pl_module, "imbalance_task", "multiclass")
        logits = outputs.logits.reshape(outputs.targets.shape) if task != "multiclass" else outputs.logits
        self.temperature = fit_temperature(logits, outputs.targets, task=task, max_iter=self.max_iter)
        self.validation_nll = {
            "before": float(negative_log_likelihood(logits.double(), outputs.targets, task)),
            "after": float(negative_log_likelihood(logits.double() / self.temperature, outputs.targets, task)),
        }
        log.info("Temperature scaling: T = %.4f (validation NLL %.4f -> %.4f)", self.temperature,
                 self.validation_nll["before"], self.validation_nll["after"])
        pl_module.set_temperature(self.temperature)  # type: ignore[operator]
