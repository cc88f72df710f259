"""Decoupled second stages: change only the classifier of a fitted model (Kang et al., 2020).

After stage 1 (any loss, sampler and model), one of:

* :class:`ClassifierRetraining` (``decouple=crt``): re-initialise the head and
  train it alone, backbone frozen, on class-balanced batches;
* :class:`LearnableWeightScaling` (``decouple=lws``): learn one scale per
  class's logit, everything else frozen, on class-balanced batches;
* :class:`TauNormalization` (``decouple=tau_norm``): divide each class's
  weight row by its norm to the power τ, with τ chosen on validation;
* :class:`NearestClassMean` (``decouple=ncm``): replace the head by the class
  means of the training features.

Every stage works on any LightningModule whose head
:func:`~lit_imbalance.callbacks.head_training.classifier_head_of` finds, and
leaves the model's structure as it was (learned scales are folded into the
head), so a stage-2 checkpoint loads into a fresh model of the same config.
The training stages run a Lightning fit on the trainer they are given (DDP
included); the others gather their statistics from every rank.

Example:
    >>> import lightning as L
    >>> from lit_imbalance.data import DigitsLTDataModule
    >>> from lit_imbalance.models import MLPClassifier
    >>> data = DigitsLTDataModule(imbalance_ratio=10)
    >>> model = MLPClassifier(input_dim=64, num_classes=10, hidden_sizes=[16])
    >>> TauNormalization(taus=[0.0, 1.0]).fit(model, data)["decouple/tau"] in (0.0, 1.0)
    True
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader

from lit_imbalance._checks import check_choice, check_non_negative, check_positive_int, fail
from lit_imbalance.callbacks.head_training import FrozenBackbone, MaxNorm, classifier_head_of
from lit_imbalance.decoupling import (
    NCM_METRICS,
    class_means,
    class_weight_rows,
    reset_head_,
    scale_classes_,
    set_nearest_class_means_,
    tau_normalized,
    tau_normalize_,
)
from lit_imbalance.heads import NormedLinear
from lit_imbalance.metrics import balanced_accuracy, best_on_grid
from lit_imbalance.outputs import collect_outputs
from lit_imbalance.priors import TAU_GRID

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
#: How stage-2 batches are drawn: every class equally often, or as the data is (re-weighted by the loss).
STAGE2_SAMPLING = ("class_aware", "instance")


class ClassifierStage:
    """A second stage that changes only the classifier head of a fitted model.

    Subclasses implement :meth:`fit`; ``trains`` says whether it runs a
    Lightning fit (and so needs a trainer, of ``epochs`` epochs in ``train.py``).
    """

    method: ClassVar[str]
    trains: ClassVar[bool] = False
    #: Why the stage cannot work on a NormedLinear head, or None when it can.
    refuses_normed_head: ClassVar[str | None] = None
    epochs: int = 0

    def check(self, model: L.LightningModule) -> nn.Module:
        """Fail in one line, naming ``decouple``, if the stage cannot run on ``model``; its head otherwise.

        ``train.py`` calls it before stage 1, so a stage that cannot run never costs a training run.
        """
        task = getattr(model, "imbalance_task", "multiclass")
        if task != "multiclass":
            fail("decouple", f"none for task={task!r} (the decoupled stages re-balance a multiclass classifier)",
                 self.method)
        head = classifier_head_of(model)
        if self.refuses_normed_head is not None and isinstance(head, NormedLinear):
            fail("decouple", f"a stage for {self.refuses_normed_head}; use crt or ncm", self.method)
        return head

    def fit(self, model: L.LightningModule, datamodule: L.LightningDataModule,
            trainer: L.Trainer | None = None) -> dict[str, Any]:
        """Run the stage on ``model`` in place; returns what it chose, for the run's record."""
        raise NotImplementedError


def split_loader(datamodule: L.LightningDataModule, split: str) -> DataLoader:
    """An unshuffled loader over ``split`` (``"train"`` or ``"val"``), sharded under DDP when the datamodule can."""
    if callable(getattr(datamodule, "evaluation_dataloader", None)):
        return datamodule.evaluation_dataloader(split)
    # Any LightningDataModule: its own loaders (the training one may shuffle; class means do not mind).
    return datamodule.val_dataloader() if split == "val" else datamodule.train_dataloader()


class TauNormalization(ClassifierStage):
    r"""τ-normalisation: :math:`w_c \leftarrow w_c / \|w_c\|^\tau`, τ chosen on validation balanced accuracy.

    The validation features are computed once; every τ of ``taus`` is scored
    on them, and the smallest τ among the best scores wins (the one closest to
    the stage-1 classifier).

    Args:
        taus: the candidates; 0 (the identity) to 2 in steps of 0.1 by default.
    """

    method = "tau_norm"
    refuses_normed_head = "a linear head whose weight norms reach the logits (NormedLinear normalises them)"

    def __init__(self, taus: Sequence[float] = TAU_GRID) -> None:
        if len(taus) == 0:
            fail("decouple.taus", "at least one τ", list(taus))
        self.taus = [check_non_negative("decouple.taus", float(t)) for t in taus]

    def fit(self, model: L.LightningModule, datamodule: L.LightningDataModule,
            trainer: L.Trainer | None = None) -> dict[str, Any]:
        head = self.check(model)
        val = collect_outputs(model, split_loader(datamodule, "val"), head=head)
        rows = class_weight_rows(head).detach().float().cpu()
        bias = head.bias.detach().float().cpu() if getattr(head, "bias", None) is not None else 0.0
        chosen, scores = best_on_grid(self.taus, lambda tau: balanced_accuracy(
            val.features @ tau_normalized(rows, tau).T + bias, val.targets, rows.shape[0]))
        tau_normalize_(head, chosen)
        return {"decouple/tau": chosen, "decouple/val_balanced_acc_at_tau": max(scores)}


class NearestClassMean(ClassifierStage):
    """Nearest-class-mean classifier: the head becomes the class means of the training features.

    Args:
        metric: ``"cosine"`` (Kang et al.'s choice: the most similar mean) or
            ``"euclidean"`` (the nearest mean), see
            :func:`~lit_imbalance.decoupling.nearest_class_mean_parameters`.
    """

    method = "ncm"

    def __init__(self, metric: str = "cosine") -> None:
        self.metric = check_choice("decouple.metric", metric, NCM_METRICS)

    def check(self, model: L.LightningModule) -> nn.Module:
        head = super().check(model)
        if isinstance(head, NormedLinear) and self.metric != "cosine":
            fail("decouple.metric", "'cosine' for a NormedLinear head (it normalises its inputs)", self.metric)
        return head

    def fit(self, model: L.LightningModule, datamodule: L.LightningDataModule,
            trainer: L.Trainer | None = None) -> dict[str, Any]:
        head = self.check(model)
        train = collect_outputs(model, split_loader(datamodule, "train"), head=head)
        means = class_means(train.features, train.targets, class_weight_rows(head).shape[0])
        set_nearest_class_means_(head, means, self.metric)
        return {"decouple/ncm_metric": self.metric}


class _HeadTraining(ClassifierStage):
    """Shared by cRT and LWS: a Lightning fit of a few parameters, the rest frozen.

    Args:
        epochs: stage-2 epochs (``train.py`` builds the stage-2 trainer with them).
        optimizer: builds the optimiser from the trainable parameters (a Hydra
            ``_partial_``); Adam with lr 0.01 when ``None``.
        loss: the stage-2 loss, for a model with
            :class:`~lit_imbalance.mixin.ImbalanceMixin` (it replaces the
            criterion during the stage); plain cross-entropy when ``None``.
        sampling: ``"class_aware"`` (every class equally often, the papers'
            choice) or ``"instance"`` (as the data is; re-weight with ``loss``).
        max_norm: per-class MaxNorm bound on the head during the stage, or ``None``.
        seed: of the class-aware sampler.
    """

    trains = True

    def __init__(self, epochs: int = 10, optimizer: OptimizerFactory | None = None, loss: nn.Module | None = None,
                 sampling: str = "class_aware", max_norm: float | None = None, seed: int = 0) -> None:
        self.epochs = check_positive_int("decouple.epochs", epochs)
        self.optimizer = optimizer if optimizer is not None else functools.partial(torch.optim.Adam, lr=0.01)
        self.loss = loss
        if sampling not in STAGE2_SAMPLING:
            fail("decouple.sampling", f"one of {list(STAGE2_SAMPLING)}", sampling)
        self.sampling = sampling
        self.max_norm = max_norm
        self.seed = seed
        if max_norm is not None:
            MaxNorm(max_norm)  # validates the bound now

    def check(self, model: L.LightningModule) -> nn.Module:
        head = super().check(model)
        if self.max_norm is not None and isinstance(head, NormedLinear):
            fail("decouple.max_norm", "None for a NormedLinear head (it normalises its weights)", self.max_norm)
        return head

    def trainable_modules(self, head: nn.Module) -> list[nn.Module]:
        """Prepare ``head`` for the stage; the modules whose parameters the stage trains."""
        raise NotImplementedError

    def finish(self, head: nn.Module) -> dict[str, Any]:
        """Undo the preparation, keeping what was learned; what to record."""
        return {}

    def fit(self, model: L.LightningModule, datamodule: L.LightningDataModule,
            trainer: L.Trainer | None = None) -> dict[str, Any]:
        if trainer is None:
            fail("trainer", f"a Lightning Trainer for the {self.method} stage (it trains)", None)
        head = self.check(model)
        # Before the head is touched: a stage that is refused leaves the stage-1 classifier as it was.
        check_stage_sampling(datamodule, self.sampling)
        trainable = self.trainable_modules(head)
        callbacks = [FrozenBackbone(trainable)]
        if self.max_norm is not None:
            callbacks.append(MaxNorm(self.max_norm, head=head))
        configure = StageOptimizer(self.optimizer, trainable)
        with (_stage_loss(model, self.loss), _no_mixing(model), _stage_sampling(datamodule, self.sampling, self.seed),
              _optimizer_override(model, configure), _extra_callbacks(trainer, callbacks)):
            trainer.fit(model, datamodule=datamodule)
        return {"decouple/epochs": self.epochs, **self.finish(head)}


class ClassifierRetraining(_HeadTraining):
    """cRT: re-initialise the classifier and re-train it alone on class-balanced batches.

    With ``reinitialize=False`` it fine-tunes the stage-1 classifier instead,
    as the second stage of weight balancing does (with a class-balanced loss and MaxNorm).
    """

    method = "crt"

    def __init__(self, *args: Any, reinitialize: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reinitialize = bool(reinitialize)

    def trainable_modules(self, head: nn.Module) -> list[nn.Module]:
        if self.reinitialize:
            reset_head_(head)
        return [head]


class ClassScales(nn.Module):
    """One learnable scale per class logit (LWS), applied by a forward hook on the head."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.scales = nn.Parameter(torch.ones(num_classes))

    def scale(self, head: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return output * self.scales


class LearnableWeightScaling(_HeadTraining):
    r"""LWS: learn :math:`f_c` in :math:`f_c \cdot (w_c^\top x + b_c)`, everything else frozen; then fold it into the head."""

    method = "lws"
    refuses_normed_head = ("an nn.Linear head (NormedLinear's outputs are cosines, which one scale per class "
                           "cannot fold into)")

    def trainable_modules(self, head: nn.Module) -> list[nn.Module]:
        scales = ClassScales(class_weight_rows(head).shape[0]).to(head.weight.device)
        # A submodule of the head, so the optimiser, DDP and the device moves see it during the stage.
        head.add_module("class_scales", scales)
        self._hook = head.register_forward_hook(scales.scale)
        return [scales]

    def finish(self, head: nn.Module) -> dict[str, Any]:
        scales = head.class_scales.scales.detach()
        self._hook.remove()
        del head.class_scales
        scale_classes_(head, scales)
        return {"decouple/lws_scale_min": float(scales.min()), "decouple/lws_scale_max": float(scales.max())}


@contextlib.contextmanager
def _stage_loss(model: L.LightningModule, loss: nn.Module | None) -> Iterator[None]:
    criterion = getattr(model, "imbalance_criterion", None)
    if criterion is None:
        if loss is not None:
            fail("decouple.loss", "None for a model without ImbalanceMixin (it trains with its own loss)",
                 type(loss).__name__)
        yield
        return
    from lit_imbalance.criterion import ImbalanceCriterion

    stage_criterion = ImbalanceCriterion(loss, criterion.num_classes, criterion.task)
    stage_criterion.to(criterion.class_counts.device)
    model.imbalance_criterion = stage_criterion
    try:
        yield
    finally:
        # The stage-1 criterion (and its buffers) back: the model's structure is what its config builds.
        model.imbalance_criterion = criterion


def check_stage_sampling(datamodule: L.LightningDataModule, sampling: str) -> None:
    """Fail in one line unless ``datamodule`` can serve ``sampling`` (class-aware needs its ``sampler``)."""
    if sampling == "class_aware" and not hasattr(datamodule, "sampler"):
        fail("datamodule", "a LabeledDataModule (its `sampler` sets the stage-2 sampling) for "
             "decouple.sampling='class_aware', or decouple.sampling='instance'", type(datamodule).__name__, TypeError)


class StageOptimizer:
    """The optimiser of a stage: built from the trainable modules' parameters."""

    def __init__(self, optimizer: OptimizerFactory, modules: Sequence[nn.Module]) -> None:
        self.optimizer, self.modules = optimizer, list(modules)

    def configure(self) -> torch.optim.Optimizer:
        """``configure_optimizers`` for a LightningModule without optimiser factories."""
        return self.optimizer([p for module in self.modules for p in module.parameters()])


class TrainableOnly:
    """An optimiser factory that keeps only the parameters left trainable (the frozen backbone's are not).

    A class, not a closure: the model carrying it pickles (``ddp_spawn`` sends the model to its workers).
    """

    def __init__(self, optimizer: OptimizerFactory) -> None:
        self.optimizer = optimizer

    def __call__(self, parameters: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        return self.optimizer([p for p in parameters if p.requires_grad])


@contextlib.contextmanager
def _no_mixing(model: L.LightningModule) -> Iterator[None]:
    # Stage 2 re-balances the classifier on the data itself: stage 1's mixup does not carry over.
    mixer = getattr(model, "imbalance_mixer", None)
    if mixer is not None:
        model.imbalance_mixer = None
    try:
        yield
    finally:
        if mixer is not None:
            model.imbalance_mixer = mixer


@contextlib.contextmanager
def _stage_sampling(datamodule: L.LightningDataModule, sampling: str, seed: int) -> Iterator[None]:
    check_stage_sampling(datamodule, sampling)
    if not hasattr(datamodule, "sampler"):  # instance sampling: any datamodule's own loader, as it is
        yield
        return
    from lit_imbalance.sampling import ClassAwareSampler

    previous = datamodule.sampler
    datamodule.sampler = functools.partial(ClassAwareSampler, seed=seed) if sampling == "class_aware" else None
    try:
        yield
    finally:
        datamodule.sampler = previous


@contextlib.contextmanager
def _optimizer_override(model: L.LightningModule, configure: StageOptimizer) -> Iterator[None]:
    if hasattr(model, "optimizer_factory") and hasattr(model, "scheduler_factory"):
        # A bundled model builds its optimiser from factories: swap them (picklable, so ddp_spawn works).
        saved = model.optimizer_factory, model.scheduler_factory
        model.optimizer_factory, model.scheduler_factory = TrainableOnly(configure.optimizer), None
        try:
            yield
        finally:
            model.optimizer_factory, model.scheduler_factory = saved
        return
    # Any other LightningModule: an instance attribute shadows its configure_optimizers for this fit only.
    model.configure_optimizers = configure.configure  # type: ignore[method-assign]
    try:
        yield
    finally:
        del model.configure_optimizers


@contextlib.contextmanager
def _extra_callbacks(trainer: L.Trainer, callbacks: list[L.Callback]) -> Iterator[None]:
    trainer.callbacks.extend(callbacks)
    try:
        yield
    finally:
        for callback in callbacks:
            trainer.callbacks.remove(callback)
