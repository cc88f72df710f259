"""Draw the long-tail pictures of a run into its directory and into wandb."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor

from lit_imbalance._checks import check_choice, fail
from lit_imbalance.interface import ImbalanceAware


class ImbalancePlots(Callback):
    """Save per-class recall over class frequency and the confusion matrix as PNGs (rank 0).

    After testing (and, for ``"val"`` in ``stages``, at the end of fit, from the
    last validation epoch) it reads the module's
    :meth:`~lit_imbalance.interface.ImbalanceAware.evaluation_summary` (the synced
    confusion matrix, class names and training counts), and writes:

    - ``<dirpath>/<stage>_recall_by_frequency.png``: recall per class, classes
      sorted by training count, coloured by many/medium/few shot;
    - ``<dirpath>/<stage>_confusion_matrix.png``: row-normalised (not for
      multi-label, whose matrix is one 2x2 per label);
    - ``<dirpath>/<stage>_reliability.png``: the reliability diagram (accuracy per
      confidence bin against the diagonal, ECE in the title), when the metrics
      saw logits; after temperature scaling also ``<stage>_calibrated_reliability.png``.

    Above :data:`~lit_imbalance.plots.COMPACT_ABOVE_CLASSES` classes the pictures
    keep a fixed size: recall against training count (one point per class) and
    ``<stage>_confusion_summary.png`` (the confusion between many/medium/few
    groups and the most confused class pairs). The per-class numbers still go
    to wandb as a table.

    With a :class:`~lightning.pytorch.loggers.WandbLogger` the same pictures are
    logged as images, with the per-class numbers as a ``wandb.Table``
    (``<stage>/per_class``: class, training count, shot group, recall, support)
    and a ``wandb.plot.bar`` of recall by class.

    Args:
        dirpath: directory of the PNGs.
        stages: ``"test"`` and/or ``"val"``.
        wandb: also log to a wandb logger when the trainer has one.
    """

    def __init__(self, dirpath: str | os.PathLike[str] = "plots", stages: Sequence[str] = ("test",),
                 wandb: bool = True) -> None:
        self.dirpath = Path(dirpath)
        self.stages = tuple(check_choice("stages", stage, ("val", "test")) for stage in stages)
        self.wandb = wandb
        self.saved: dict[str, Path] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Checked before training: a folder that cannot be written would otherwise fail the
        # run at its very end, after the fit and the test had succeeded.
        if trainer.is_global_zero:
            try:
                self.dirpath.mkdir(parents=True, exist_ok=True)
                probe = self.dirpath / f".write-test-{os.getpid()}"
                probe.touch()
                probe.unlink()
            except OSError as error:
                fail("dirpath", f"a writable folder for the plots, or callbacks.plots=null ({error.strerror})",
                     str(self.dirpath))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if "val" in self.stages:
            self.draw(trainer, pl_module, "val")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if "test" in self.stages:
            self.draw(trainer, pl_module, "test")

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> dict[str, Path]:
        """Write (and log) the pictures of ``stage``; returns ``{name: png path}`` (empty off rank 0)."""
        summary = pl_module.evaluation_summary(stage) if isinstance(pl_module, ImbalanceAware) else None
        if not trainer.is_global_zero or summary is None:
            return {}
        from lit_imbalance import plots  # matplotlib is imported only by the rank that draws

        confusion, names, counts = summary.confusion, summary.class_names, summary.class_counts
        thresholds = {"many_threshold": summary.many_threshold, "few_threshold": summary.few_threshold}
        recall, support = plots.class_recall_and_support(confusion)
        if len(names) > plots.COMPACT_ABOVE_CLASSES:
            # Pictures of fixed size: memory and pixels no longer grow with the square of C.
            figures = {"recall_by_frequency": plots.recall_against_frequency(recall, counts, **thresholds)}
            if confusion.ndim == 2:
                figures["confusion_summary"] = plots.compact_confusion(confusion, counts, names, **thresholds)
        else:
            figures = {"recall_by_frequency": plots.recall_by_frequency(recall, counts, names, **thresholds)}
            if confusion.ndim == 2:
                figures["confusion_matrix"] = plots.confusion_matrix(confusion, names)
        if summary.reliability is not None:
            figures["reliability"] = plots.reliability_diagram(summary.reliability)
        calibrated = pl_module.evaluation_summary(f"{stage}_calibrated")
        if calibrated is not None and calibrated.reliability is not None:
            figures["calibrated_reliability"] = plots.reliability_diagram(
                calibrated.reliability, title=f"After temperature scaling (ECE {calibrated.reliability.ece:.4f})"
            )
        saved = {name: plots.save_figure(figure, self.dirpath / f"{stage}_{name}.png")
                 for name, figure in figures.items()}
        self.saved.update({f"{stage}/{name}": path for name, path in saved.items()})
        if self.wandb:
            rows = per_class_rows(names, counts, recall, support, plots.shot_labels(counts, **thresholds))
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    log_to_wandb(logger, stage, saved, rows)
        return saved


def per_class_rows(names: Sequence[str], counts: Tensor, recall: Tensor, support: Tensor,
                   shots: Sequence[str]) -> list[list[Any]]:
    """``[class, train_count, shot, recall, support]`` per class, most frequent class first.

    Example:
        >>> import torch
        >>> per_class_rows(["a", "b"], torch.tensor([2, 9]), torch.tensor([0.5, 1.0]), torch.tensor([4, 4]),
        ...                ["few", "few"])
        [['b', 9, 'few', 1.0, 4], ['a', 2, 'few', 0.5, 4]]
    """
    order = sorted(range(len(names)), key=lambda c: -int(counts[c]))
    return [[names[c], int(counts[c]), shots[c], float(recall[c]), int(support[c])] for c in order]


PER_CLASS_COLUMNS = ["class", "train_count", "shot", "recall", "support"]


def log_to_wandb(logger: WandbLogger, stage: str, pictures: dict[str, Path], rows: list[list[Any]]) -> None:
    """Log the pictures, the per-class table and a recall bar chart to ``logger``'s run."""
    import wandb

    table = wandb.Table(columns=PER_CLASS_COLUMNS, data=rows)
    payload: dict[str, Any] = {f"{stage}/{name}": wandb.Image(str(path)) for name, path in pictures.items()}
    payload[f"{stage}/per_class"] = table
    payload[f"{stage}/per_class_recall"] = wandb.plot.bar(table, "class", "recall",
                                                          title=f"{stage} recall per class")
    logger.experiment.log(payload)
