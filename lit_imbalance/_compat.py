"""Every use of a private Lightning attribute, in one place, each checked by ``tests/test_compat.py``.

Checked against Lightning 2.4 to 2.6 (``lightning`` 2.6.6 installed when this
was written). When Lightning changes one of these, the test fails loudly,
naming the attribute, instead of the library silently doing the wrong thing.
"""

from __future__ import annotations

import subprocess
from typing import Any

import lightning as L
from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher  # private: the `ddp_spawn` launcher
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher  # private: the `ddp` re-launcher
from torch.utils.data import Dataset


def fit_train_dataset(trainer: L.Trainer) -> Dataset | None:
    """The dataset of the loader ``trainer.fit`` was given (or the module's ``train_dataloader``), before it runs.

    Why private: a loader passed as ``trainer.fit(model, train_dataloaders=...)``
    is public only once the fit loop has set it up (``trainer.train_dataloader``
    in ``on_train_start``), which is after the sanity check and never happens
    with ``max_epochs=0``. The fit loop's ``_data_source`` builds the
    ``DataLoader`` object without iterating it or touching the loop's state.
    """
    source = getattr(trainer.fit_loop, "_data_source", None)
    if source is None or source.instance is None or not source.is_defined():
        return None
    loader: Any = source.dataloader()
    return getattr(loader, "dataset", None) if loader is not None else None


def script_relaunches(trainer: L.Trainer) -> bool:
    """Whether the trainer's strategy starts DDP ranks by re-running ``sys.argv`` (``strategy=ddp``).

    Why private: the launcher class is the only sign of it; torchrun and
    SLURM start every rank themselves (``creates_processes_externally``).
    """
    launcher = getattr(trainer.strategy, "launcher", None)
    return isinstance(launcher, _SubprocessScriptLauncher) and not launcher.cluster_environment.creates_processes_externally


def spawns_processes(trainer: L.Trainer) -> bool:
    """Whether the trainer's strategy starts its ranks with ``multiprocessing`` (``ddp_spawn``), even one.

    Why private: as for :func:`script_relaunches`, the launcher class is the only sign of it.
    """
    return isinstance(getattr(trainer.strategy, "launcher", None), _MultiProcessingLauncher)


def take_relaunched_children(trainer: L.Trainer) -> list[subprocess.Popen]:
    """The re-launched rank processes, taken out of the launcher's watch list.

    Why private: ``procs`` is where ``_SubprocessScriptLauncher`` keeps them, and
    its observer thread kills the main process when one of them exits non-zero;
    emptying the list ends that watch, so one failed sweep job cannot end the sweep.
    """
    launcher = trainer.strategy.launcher
    children = list(launcher.procs)  # type: ignore[union-attr]
    launcher.procs.clear()  # type: ignore[union-attr]
    return children


def calibration_samples(metric: Any) -> tuple[Any, Any]:
    """The ``(confidences, accuracies)`` a torchmetrics ``*CalibrationError`` has accumulated, concatenated.

    torchmetrics keeps them as the metric's list states ``confidences`` and
    ``accuracies`` (torchmetrics 1.x) and offers no public accessor; the
    reliability diagram bins the same samples the ECE was computed from.
    """
    from torchmetrics.utilities.data import dim_zero_cat

    return dim_zero_cat(metric.confidences), dim_zero_cat(metric.accuracies)
