"""Write a run's final numbers to one flat ``metrics.json``, whatever the logger."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_imbalance.interface import ImbalanceAware
from lit_imbalance.record import Key, Status, read_record, write_record


class MetricsJsonWriter(Callback):
    """Keep ``metrics.json`` up to date with the logged scalars of a run.

    The file is rewritten (atomically) after every validation epoch, at the end
    of fit and of test, and on an exception, so a crash or a kill never loses
    what a run had already measured. It is the flat record of
    :mod:`lit_imbalance.record`: every scalar in ``trainer.callback_metrics``
    (``val/balanced_acc``, ``test/recall/3``, ...), plus the fixed fields
    (:class:`~lit_imbalance.record.Key`). Only global rank 0 writes.

    Args:
        path: where to write the file.
    """

    def __init__(self, path: str | os.PathLike[str] = "metrics.json") -> None:
        self.path = Path(path)
        self.values: dict[str, Any] = {}
        self._fit_started: float | None = None

    def add(self, trainer: L.Trainer, **values: Any) -> None:
        """Merge extra entries into the file (e.g. the sweep objective)."""
        self.values.update(values)
        self._write(trainer)

    def read(self) -> dict[str, Any]:
        """What the file holds now, including what other processes wrote (``ddp_spawn`` workers)."""
        return read_record(self.path)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_started = time.perf_counter()
        # A new fit starts a new record: nothing from an earlier run in this directory survives.
        self.values = {Key.STATUS: Status.RUNNING}
        self._write(trainer, merge=False)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # What a rebalancing sampler promises to show per class and epoch, beside what the data has.
        expected = getattr(getattr(trainer.train_dataloader, "sampler", None), "expected_class_counts", None)
        if expected is not None:
            self.values[Key.SAMPLER_EXPECTED_CLASS_COUNTS] = [round(float(c), 3) for c in expected]
        self._collect(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._collect(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._fit_started is not None:
            self.values[Key.TRAIN_TIME_S] = round(time.perf_counter() - self._fit_started, 3)
        checkpoint = trainer.checkpoint_callback
        best = getattr(checkpoint, "best_model_score", None)
        if best is not None and getattr(checkpoint, "monitor", None):
            self.values[Key.best(checkpoint.monitor)] = float(best)
        self.values[Key.STATUS] = Status.FINISHED
        self._collect(trainer)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.values[Key.STATUS] = Status.FINISHED
        self._collect(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Ctrl-C and SIGTERM (preemption) stop a healthy run: interrupted, not failed.
        stopped = isinstance(exception, (KeyboardInterrupt, SIGTERMException))
        self.values[Key.STATUS] = Status.INTERRUPTED if stopped else Status.FAILED
        self.values[Key.ERROR] = f"{type(exception).__name__}: {exception}"
        self._write(trainer)

    def _collect(self, trainer: L.Trainer) -> None:
        module = trainer.lightning_module
        # Known from the module's own on_fit_start on, which runs after the callbacks' one.
        if isinstance(module, ImbalanceAware) and int(module.class_counts.sum()) > 0:
            counts = [int(c) for c in module.class_counts.tolist()]
            self.values[Key.TRAIN_CLASS_COUNTS] = counts
            self.values[Key.CLASSES_ABSENT_FROM_TRAIN] = [n for n, c in zip(module.class_names, counts) if c == 0]
            for stage in ("val", "test"):
                summary = module.evaluation_summary(stage)
                if summary is not None:
                    self.values[Key.without_support(stage)] = summary.classes_without_support()
        self.values.update(logged_scalars(trainer))
        self._write(trainer)

    def _write(self, trainer: L.Trainer, merge: bool = True) -> None:
        if not trainer.is_global_zero:
            return
        # Merge onto the file: under ddp_spawn the fit ran in a worker whose entries this
        # (main-process) copy of the callback never saw.
        write_record(self.path, {**self.read(), **self.values} if merge else self.values)


def logged_scalars(trainer: L.Trainer, prefix: str = "") -> dict[str, float | None]:
    """Every scalar in ``trainer.callback_metrics`` as a float, keys prefixed with ``prefix``.

    JSON has no NaN: a diverged metric (or a class without support) is ``None``, not dropped.
    """
    values: dict[str, float | None] = {}
    for key, value in trainer.callback_metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (int, float)):
            values[prefix + key] = float(value) if math.isfinite(value) else None
    return values
