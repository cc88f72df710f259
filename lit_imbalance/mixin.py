"""ImbalanceMixin: make any LightningModule imbalance-aware with one call.

The mixin owns what a classifier on imbalanced data needs and what is easy to
get subtly wrong by hand: the class statistics (found once per fit, without a
pass over the inputs) and everything fed from them — the loss
(``set_class_counts``), an optional warm-up / DRW schedule, the bias-prior
initialisation of the classifier head, post-hoc logit adjustment — and
per-class metrics that are synced across ranks by torchmetrics.

It relies on the LightningModule hooks ``setup``, ``on_validation_epoch_end``
and ``on_test_epoch_end``: a subclass that overrides one of them must call
``super()`` so the mixin's part still runs, and ``ImbalanceMixin`` must come
before ``LightningModule`` in the bases.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import torch
from lightning.fabric.utilities.warnings import PossibleUserWarning
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from lit_imbalance._checks import check_choice, check_non_negative, check_positive_int, fail
from lit_imbalance.data.labels import LABEL_ATTRIBUTES, dataset_labels
from lit_imbalance.data.labels import class_counts as count_classes
from lit_imbalance.losses.logit_adjusted import LogitAdjustedLoss
from lit_imbalance.metrics import TASKS, ImbalanceMetrics
from lit_imbalance.priors import adjust_logits, init_bias_prior, prior_logits
from lit_imbalance.schedule import LossWarmup

EVAL_STAGES = ("val", "test")
Task = Literal["multiclass", "binary", "multilabel"]

# Lightning asks for sync_dist=True on every epoch-level value logged under DDP; the mixin's
# metrics are already reduced across ranks by torchmetrics, so that advice is noise for them.
warnings.filterwarnings(
    "ignore",
    message=r"It is recommended to use `self.log\('(val|test)/(adjusted/)?(acc|balanced_acc|macro_f1|recall/|support/"
    r"|many_recall|medium_recall|few_recall|auroc|average_precision)",
    category=PossibleUserWarning,
)


class ImbalanceMixin:
    """Imbalance-aware loss, class statistics, bias prior and per-class metrics for a LightningModule.

    Put it before ``LightningModule`` in the bases, call
    :meth:`configure_imbalance` at the end of ``__init__`` and return
    :meth:`imbalance_step` from the step methods::

        class Model(ImbalanceMixin, L.LightningModule):
            def __init__(self):
                super().__init__()
                self.backbone = nn.Sequential(nn.Linear(64, 32), nn.ReLU())
                self.head = nn.Linear(32, 10)
                self.configure_imbalance(loss=FocalLoss(gamma=2.0), num_classes=10, head=self.head,
                                         warmup=LossWarmup(epochs=3))

            def forward(self, x):
                return self.head(self.backbone(x))

            def training_step(self, batch, batch_idx):
                x, y = batch
                return self.imbalance_step("train", self(x), y)

            def validation_step(self, batch, batch_idx):
                x, y = batch
                self.imbalance_step("val", self(x), y)

    Logged keys (``<stage>`` is ``val`` or ``test``): ``<stage>/loss``,
    ``<stage>/acc``, ``<stage>/balanced_acc``, ``<stage>/macro_f1``,
    ``<stage>/recall/<class>``, ``<stage>/support/<class>``,
    ``<stage>/{many,medium,few}_recall`` (by training count), for binary and
    multi-label tasks also ``<stage>/auroc`` and ``<stage>/average_precision``;
    with ``posthoc_tau`` the same keys again under ``<stage>/adjusted/`` for the
    adjusted logits; ``train/loss`` and, with a warm-up, ``train/warmup_factor``.
    """

    imbalance_loss: nn.Module
    imbalance_metrics: nn.ModuleDict
    class_counts: Tensor
    num_train_samples: Tensor
    bias_prior_applied: Tensor

    def configure_imbalance(
        self,
        loss: nn.Module | None = None,
        num_classes: int | None = None,
        task: Task = "multiclass",
        head: nn.Module | str | None = None,
        warmup: LossWarmup | None = None,
        bias_prior: bool = True,
        prior: Sequence[float] | Tensor | float | None = None,
        class_names: Sequence[str] | None = None,
        class_counts: Sequence[int] | Tensor | None = None,
        num_samples: int | None = None,
        posthoc_tau: float | None = None,
        many_threshold: int = 100,
        few_threshold: int = 20,
    ) -> None:
        """Attach the loss, the schedule, the class statistics and the metrics.

        Args:
            loss: the training loss, ``loss(logits, target)``; ``None`` gives plain
                cross-entropy (multiclass) or ``BCEWithLogitsLoss`` (binary,
                multi-label). A loss with ``set_class_counts`` receives the
                training class counts once per fit, before the first step.
            num_classes: number of classes ``C`` (multiclass), labels ``L``
                (multi-label); 2 or ``None`` for binary.
            task: ``"multiclass"`` (logits ``(N, C)``, class indices ``(N,)``),
                ``"binary"`` (one logit ``(N,)``/``(N, 1)``, targets 0/1) or
                ``"multilabel"`` (logits ``(N, L)``, multi-hot targets ``(N, L)``).
                Binary and multi-label losses receive float targets.
            head: the classifier layer whose bias gets the prior: the module, its
                attribute path (``"classifier.2"``), or ``None`` to find the only
                ``nn.Linear`` with ``C`` outputs (1 for binary).
            warmup: a :class:`~lit_imbalance.schedule.LossWarmup` moving from a
                start loss to ``loss``; a schedule of length 0 without
                re-weighting is no warm-up.
            bias_prior: initialise the head's bias to the class prior at the
                start of the first fit (``b_c = log pi_c``; sigmoid outputs
                ``b = -log((1 - pi) / pi)``), see :func:`lit_imbalance.priors.prior_logits`.
                Logit-adjusted losses, which add ``tau * log pi`` themselves, get
                ``(1 - tau) * log pi``; sigmoid losses on multiclass targets (one
                sigmoid per class) get ``-log((1 - pi_c) / pi_c)`` (see :meth:`initial_bias`).
            prior: the prior for the bias and the post-hoc adjustment instead of
                the one estimated from the class counts.
            class_names: names used in per-class metric keys (default ``"0".."C-1"``).
            class_counts: training samples per class (multi-label: positives per
                label, with ``num_samples``); found from the training data when ``None``.
            num_samples: number of training samples, for given multi-label counts.
            posthoc_tau: when set, validation/test also report metrics of the
                adjusted logits ``logits - tau * prior_logits`` under
                ``<stage>/adjusted/``, and :meth:`adjust_logits` applies it (use it
                in ``predict_step``).
            many_threshold: classes with more training samples count as many-shot.
            few_threshold: classes with fewer training samples count as few-shot.
        """
        if not isinstance(self, L.LightningModule):
            fail("self", "a LightningModule (class Model(ImbalanceMixin, L.LightningModule))", type(self).__name__, TypeError)
        mro = type(self).__mro__
        if mro.index(ImbalanceMixin) > mro.index(L.LightningModule):
            # LightningModule's own (empty) hooks would shadow the mixin's.
            fail("bases", "ImbalanceMixin listed before LightningModule", [c.__name__ for c in type(self).__bases__], TypeError)
        self.imbalance_task = check_choice("task", task, TASKS)
        if task == "binary":
            if num_classes not in (None, 2):
                fail("num_classes", "2 or None for task='binary' (one logit: negative vs positive)", num_classes)
            num_classes = 2
        elif num_classes is None:
            fail("num_classes", f"a positive integer for task={task!r}", None)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.num_outputs = 1 if task == "binary" else num_classes
        if posthoc_tau is not None:
            check_non_negative("posthoc_tau", posthoc_tau)
        self.posthoc_tau = posthoc_tau
        if not isinstance(bias_prior, bool):
            fail("bias_prior", "a bool", bias_prior, TypeError)
        self.bias_prior = bias_prior
        self.prior = prior
        if prior is not None:
            prior_logits(prior=prior, task=task)  # validate now, not at the first fit
        if head is not None and not isinstance(head, (nn.Module, str)):
            fail("head", "an nn.Module, an attribute path or None", head, TypeError)
        # A list, so that nn.Module does not register the head a second time.
        self._imbalance_head = [head]

        default_loss: nn.Module = nn.CrossEntropyLoss() if task == "multiclass" else nn.BCEWithLogitsLoss()
        if warmup is not None and not isinstance(warmup, LossWarmup):
            fail("warmup", "a LossWarmup or None", type(warmup).__name__, TypeError)
        if warmup is not None and warmup.target is not None:
            if loss is not None:
                fail("loss", "None when the warm-up already has a target loss", type(loss).__name__)
            loss = warmup.target if warmup.is_noop else warmup
        elif warmup is not None and not warmup.is_noop:
            loss = warmup.set_target(loss if loss is not None else default_loss, default_start=default_loss)
        self.imbalance_loss = loss if loss is not None else default_loss

        metric_args = dict(class_names=class_names, many_threshold=many_threshold, few_threshold=few_threshold, task=task)
        stages = [*EVAL_STAGES, *(f"{s}_adjusted" for s in EVAL_STAGES if posthoc_tau is not None)]
        self.imbalance_metrics = nn.ModuleDict({stage: ImbalanceMetrics(num_classes, **metric_args) for stage in stages})
        # Buffers, so the statistics a model was trained with travel in its checkpoint.
        self.register_buffer("class_counts", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("num_train_samples", torch.zeros((), dtype=torch.long))
        # Restored from a checkpoint as True, so a fine-tuning fit keeps the trained bias.
        self.register_buffer("bias_prior_applied", torch.zeros((), dtype=torch.bool))
        self.last_confusion: dict[str, Tensor] = {}
        self._counts_ready = False
        self._given_class_counts: tuple[Tensor, int] | None = None
        if class_counts is not None:
            self._given_class_counts = self._validated_counts(class_counts, num_samples)

    # --- class statistics -------------------------------------------------------------

    @property
    def loss_warmup(self) -> LossWarmup | None:
        """The warm-up schedule, when one is configured."""
        return self.imbalance_loss if isinstance(self.imbalance_loss, LossWarmup) else None

    def setup(self, stage: str) -> None:
        super().setup(stage)  # type: ignore[misc]
        # Fresh metric states in this process: ddp_spawn hands the workers the module's
        # tensors in shared memory and un-shares only parameters and buffers, so the
        # ranks would otherwise add into one confusion matrix.
        for metrics in self.imbalance_metrics.values():
            metrics.reset()
        if stage == "fit":
            self.apply_class_counts(*self.find_class_counts())
            # Lightning restores a checkpoint (fit(ckpt_path=...)) after setup, so a resumed
            # run gets its trained bias back; on_fit_start would run after the restore.
            if self.bias_prior and not bool(self.bias_prior_applied):
                init_bias_prior(self.classifier_head(), self.initial_bias())
                self.bias_prior_applied.fill_(True)
        elif not self._counts_ready and self._trainer is not None:
            # Evaluating a model that was not fitted in this process: the loss (and the
            # post-hoc prior, until a checkpoint restores the trained counts) need statistics.
            found = self.find_class_counts(required=False)
            if found is not None:
                self.apply_class_counts(*found)

    def find_class_counts(self, required: bool = True) -> tuple[Tensor, int] | None:
        """Training class counts and number of samples, without touching the inputs.

        In order: the counts given to :meth:`configure_imbalance`; the
        datamodule's ``train_class_counts`` or ``train_labels``; the labels of the
        training dataset (``dataset.targets``/``labels``/``y``, a
        ``TensorDataset``'s last tensor, through ``Subset``/``ConcatDataset``),
        taken from the datamodule's ``train_dataset`` or from the loader the fit
        was given (also without a datamodule).
        """
        if self._given_class_counts is not None:
            return self._given_class_counts
        trainer = self.trainer  # type: ignore[attr-defined]
        datamodule = getattr(trainer, "datamodule", None)
        if self.imbalance_task != "multilabel":
            counts = getattr(datamodule, "train_class_counts", None)
            if counts is not None:
                return self._validated_counts(counts)
        labels = getattr(datamodule, "train_labels", None)
        if labels is None:
            dataset = train_dataset(trainer)
            if dataset is not None:
                labels = label_matrix(dataset) if self.imbalance_task == "multilabel" else dataset_labels(dataset)
        if labels is None:
            if not required:
                return None
            fail(
                "class_counts",
                "given to configure_imbalance, or found in the training data (a datamodule with "
                "`train_class_counts`/`train_labels`, or a train dataset with `targets`/`labels`)",
                None,
            )
        labels = torch.as_tensor(labels)
        if self.imbalance_task == "multilabel":
            if labels.ndim != 2 or labels.shape[1] != self.num_classes:
                fail("train labels", f"a multi-hot (N, {self.num_classes}) matrix", f"shape {tuple(labels.shape)}")
            return self._validated_counts(labels.long().sum(0), labels.shape[0])
        return self._validated_counts(count_classes(labels, self.num_classes))

    def _validated_counts(self, class_counts: Sequence[int] | Tensor, num_samples: int | None = None) -> tuple[Tensor, int]:
        counts = count_tensor(class_counts, self.num_classes)
        if self.imbalance_task != "multilabel":
            return counts, int(counts.sum())
        if num_samples is None or num_samples < int(counts.max()):
            fail("num_samples", "the number of training samples (multi-label counts are positives per label)", num_samples)
        return counts, int(num_samples)

    def apply_class_counts(self, class_counts: Sequence[int] | Tensor, num_samples: int | None = None) -> None:
        """Hand the training class counts to the loss (and its schedule) and the shot-group metrics."""
        counts, num_samples = self._validated_counts(class_counts, num_samples)
        self.class_counts.copy_(counts)
        self.num_train_samples.fill_(num_samples)
        if callable(getattr(self.imbalance_loss, "set_class_counts", None)):
            self.imbalance_loss.set_class_counts(counts.to(self.class_counts.device))
        for metrics in self.imbalance_metrics.values():
            metrics.set_class_counts(counts)
        self._counts_ready = True

    # --- prior and head -----------------------------------------------------------------

    def imbalance_prior_logits(self) -> Tensor:
        """The logits of the training prior (given ``prior`` or class counts), see :func:`prior_logits`."""
        if self.prior is not None:
            return prior_logits(prior=self.prior, task=self.imbalance_task)
        if int(self.class_counts.sum()) == 0:
            fail("class_counts", "known (fit the model, or pass class_counts or prior) before the prior is used", 0)
        return prior_logits(
            self.class_counts.cpu(), task=self.imbalance_task, num_samples=int(self.num_train_samples)
        ).to(self.class_counts.device)

    def initial_bias(self) -> Tensor:
        """The bias prior: the prior logits, less what the first training loss adds to the logits itself.

        Logit-adjusted losses (balanced softmax is ``tau = 1``) train
        ``logits + tau * log pi``; the model predicts the prior when *that* sum is
        ``log pi``, i.e. with a bias of ``(1 - tau) * log pi``. (The full ``log pi``
        on top cost 1.6 points of balanced accuracy with balanced softmax on
        digits-LT, 5 seeds.) With a warm-up, the loss of the first step counts.
        """
        bias = self.imbalance_prior_logits()
        warmup, first_loss = self.loss_warmup, self.imbalance_loss
        if warmup is not None:
            first_loss = warmup.start if warmup.length > 0 else warmup.target
        if isinstance(first_loss, LogitAdjustedLoss):
            bias = bias * (1.0 - first_loss.tau)
        elif self.imbalance_task == "multiclass" and trains_sigmoid_outputs(first_loss):
            # One-vs-rest sigmoids (sigmoid focal, ASL, ...): sigmoid(b_c) = pi_c, b_c = -log((1 - pi_c) / pi_c).
            if self.prior is not None:
                return prior_logits(prior=self.prior, task="multilabel")
            counts = self.class_counts.cpu()
            bias = prior_logits(counts, task="multilabel", num_samples=int(self.num_train_samples))
            bias = bias.to(self.class_counts.device)
        return bias

    def adjust_logits(self, logits: Tensor) -> Tensor:
        """Post-hoc adjusted logits ``logits - posthoc_tau * prior_logits``; unchanged without ``posthoc_tau``."""
        if self.posthoc_tau is None:
            return logits
        # adjust_logits adds tau * prior along dim 1: a negative tau removes it.
        if logits.ndim == 1:  # binary logits (N,)
            return adjust_logits(logits.unsqueeze(1), self.imbalance_prior_logits(), -self.posthoc_tau).squeeze(1)
        return adjust_logits(logits, self.imbalance_prior_logits(), -self.posthoc_tau)

    def classifier_head(self) -> nn.Module:
        """The layer that gets the bias prior: given, or the only ``nn.Linear`` with ``C`` outputs."""
        head = self._imbalance_head[0]
        modules = dict(self.named_modules())  # type: ignore[attr-defined]
        if isinstance(head, str):
            if head not in modules:
                fail("head", "the attribute path of a submodule", head)
            return modules[head]
        if head is not None:
            if not any(module is head for module in modules.values()):
                fail("head", "a submodule of the model", type(head).__name__)
            return head
        candidates = [
            name for name, module in modules.items()
            if isinstance(module, nn.Linear) and module.out_features == self.num_outputs
        ]
        if len(candidates) != 1:
            found = f"layers {candidates}" if candidates else "none"
            fail(
                "head",
                f"given to configure_imbalance (looked for the only nn.Linear with {self.num_outputs} outputs; "
                "or pass bias_prior=False)",
                found,
            )
        return modules[candidates[0]]

    # --- steps and epochs ---------------------------------------------------------------

    def imbalance_step(self, stage: str, logits: Tensor, target: Tensor) -> Tensor:
        """Loss of a batch, logged as ``<stage>/loss``; val/test batches also update the metrics.

        Args:
            stage: ``"train"``, ``"val"`` or ``"test"``.
            logits: model outputs, see ``task`` in :meth:`configure_imbalance`.
            target: class indices (multiclass), 0/1 (binary) or multi-hot (multi-label).

        Returns:
            The loss (of the warm-up schedule's current mix), ready to be returned
            from ``training_step``.
        """
        trainer = self._trainer  # type: ignore[attr-defined]
        is_train = stage == "train"
        if is_train and trainer is not None and not self._counts_ready:
            raise RuntimeError(
                "ImbalanceMixin.setup('fit') did not run, so the loss has no class counts: if your model "
                "overrides `setup`, call `super().setup(stage)` in it."
            )
        # Losses reduce in float32 even under mixed precision.
        logits = logits.float()
        warmup = self.loss_warmup
        if is_train and warmup is not None and trainer is not None:
            warmup.advance(epoch=trainer.current_epoch, step=trainer.global_step)
            self.log(  # type: ignore[attr-defined]
                "train/warmup_factor", warmup.factor, on_step=warmup.by_steps, on_epoch=not warmup.by_steps,
                batch_size=target.shape[0],
            )
        loss = self.imbalance_loss(*self._loss_inputs(logits, target))
        self.log(  # type: ignore[attr-defined]
            f"{stage}/loss", loss, on_step=is_train, on_epoch=True, prog_bar=is_train,
            sync_dist=not is_train, batch_size=target.shape[0],
        )
        if stage in EVAL_STAGES:
            logits = logits.detach()
            self.imbalance_metrics[stage].update(logits, target)
            if self.posthoc_tau is not None:
                self.imbalance_metrics[f"{stage}_adjusted"].update(self.adjust_logits(logits), target)
        return loss

    def _loss_inputs(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        if self.imbalance_task == "multiclass":
            return logits, target
        # Sigmoid losses take float targets of the logits' shape; binary logits may be (N, 1).
        return logits.reshape(target.shape), target.to(logits.dtype)

    def on_validation_epoch_end(self) -> None:
        self.log_imbalance_metrics("val")
        super().on_validation_epoch_end()  # type: ignore[misc]

    def on_test_epoch_end(self) -> None:
        self.log_imbalance_metrics("test")
        super().on_test_epoch_end()  # type: ignore[misc]

    def log_imbalance_metrics(self, stage: str) -> dict[str, Tensor]:
        """Compute (synced across ranks), log and reset the metrics of ``stage`` (and its adjusted twin)."""
        values: dict[str, Tensor] = {}
        for key, prefix in ((stage, f"{stage}/"), (f"{stage}_adjusted", f"{stage}/adjusted/")):
            if key not in self.imbalance_metrics:
                continue
            metrics = self.imbalance_metrics[key]
            # From the buffer, which a checkpoint restore may have replaced since setup.
            metrics.set_class_counts(self.class_counts)
            values.update({prefix + name: value for name, value in metrics.compute().items()})
            # Kept for callbacks that draw the confusion matrix after the epoch (plots, reports).
            self.last_confusion[key] = metrics.confusion_matrix().detach().cpu()
            metrics.reset()
        headline = f"{stage}/balanced_acc"
        # Already reduced across ranks by torchmetrics: no second sync.
        for name, value in values.items():
            self.log(name, value, sync_dist=False, prog_bar=name == headline)  # type: ignore[attr-defined]
        return values


def trains_sigmoid_outputs(loss: nn.Module) -> bool:
    """Whether ``loss`` reads every logit as an independent sigmoid rather than one softmax over the classes."""
    return bool(getattr(loss, "sigmoid_outputs", isinstance(loss, nn.BCEWithLogitsLoss)))


def count_tensor(class_counts: Sequence[int] | Tensor, num_classes: int) -> Tensor:
    """Class counts as an int64 tensor of length ``num_classes``, or a clear error."""
    counts = torch.as_tensor(class_counts).detach().cpu()
    if counts.ndim != 1 or counts.numel() != num_classes or (counts < 0).any():
        fail("class_counts", f"{num_classes} non-negative counts (one per class)", counts.tolist())
    return counts.to(torch.long)


def train_dataset(trainer: L.Trainer) -> Dataset | None:
    """The dataset of the loader ``trainer.fit`` trains on, available from ``setup("fit")`` on.

    A datamodule's ``train_dataset`` attribute is used when it has one.
    Otherwise Lightning's fit loop knows where its train loader comes from (a
    datamodule, the LightningModule's ``train_dataloader`` or the loader passed
    to ``fit``): asking that source builds the ``DataLoader`` object without
    iterating it. (The public ``trainer.fit_loop.setup_data()`` would set up the
    loop's iterator before a checkpoint restores its state.)
    """
    datamodule = getattr(trainer, "datamodule", None)
    dataset = getattr(datamodule, "train_dataset", None)
    if dataset is not None:
        return dataset
    source = getattr(trainer.fit_loop, "_data_source", None)
    if source is None or source.instance is None or not source.is_defined():
        return None
    loader: Any = source.dataloader()
    dataset = getattr(loader, "dataset", None)
    if dataset is None:
        fail("train_dataloaders", "one DataLoader (pass class_counts to configure_imbalance otherwise)", type(loader).__name__)
    return dataset


def label_matrix(dataset: Dataset) -> Tensor:
    """The multi-hot ``(N, L)`` labels of a dataset: its ``targets``/``labels``/``y``, or a TensorDataset's last tensor."""
    found = (getattr(dataset, attribute, None) for attribute in LABEL_ATTRIBUTES)
    labels = next((labels for labels in found if labels is not None), None)
    if labels is None and isinstance(dataset, TensorDataset):
        labels = dataset.tensors[-1]
    if labels is None:
        fail("dataset", "a dataset with a `targets` multi-hot label matrix (or pass class_counts)", type(dataset).__name__)
    return torch.as_tensor(labels)
