"""ImbalanceMixin: make any LightningModule imbalance-aware with one call.

The mixin is a thin facade: the work is done by parts that are usable alone,
in any LightningModule or in plain PyTorch, and the mixin only wires them into
Lightning's hooks:

- :class:`~lit_imbalance.criterion.ImbalanceCriterion`: the loss, its warm-up /
  DRW schedule, the training class counts and the prior they imply;
- :class:`~lit_imbalance.metrics.ImbalanceMetrics`: per-class metrics, a
  torchmetrics ``Metric`` synced across ranks;
- :mod:`lit_imbalance.counts`: where a fit's class counts come from;
- :func:`~lit_imbalance.heads.find_classifier_head` and
  :func:`~lit_imbalance.priors.init_bias_prior`: the bias prior.

It relies on the LightningModule hooks ``setup``, ``on_fit_start``,
``on_validation_epoch_end`` and ``on_test_epoch_end``: a subclass that
overrides one of them must call ``super()`` so the mixin's part still runs,
and ``ImbalanceMixin`` must come before ``LightningModule`` in the bases.

Callbacks talk to the model through the small interface documented on the
class (``class_counts``, ``evaluation_summary``, ``refresh_class_counts``),
not through its internals.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import lightning as L
import torch
from torch import Tensor, nn

from lit_imbalance import _compat
from lit_imbalance._checks import check_bool, check_non_negative, fail
from lit_imbalance.counts import ClassCounts, datamodule_class_counts, dataset_class_counts
from lit_imbalance.criterion import ImbalanceCriterion, check_soft_targets, count_tensor
from lit_imbalance.heads import find_classifier_head
from lit_imbalance.metrics import THRESHOLD, EvaluationSummary, ImbalanceMetrics, check_thresholds
from lit_imbalance.mixing import BatchMixer
from lit_imbalance.outputs import validation_outputs
from lit_imbalance.priors import TAU_GRID, init_bias_prior, tune_posthoc_tau
from lit_imbalance.schedule import LossWarmup
from lit_imbalance.tasks import Task, num_outputs, resolve_num_classes

EVAL_STAGES = ("val", "test")
#: Extra metric sets of a stage, logged under ``<stage>/<view>/``: post-hoc adjusted logits, temperature-scaled
#: logits, and (when a decision threshold was chosen) the default threshold 0.5 for comparison.
EVAL_VIEWS = ("adjusted", "calibrated", "default_threshold")
#: Post-hoc choices kept as buffers (in checkpoints); NaN means "not chosen".
POSTHOC_BUFFERS = ("calibration_temperature", "decision_threshold", "tuned_posthoc_tau")
log = logging.getLogger(__name__)


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

            def configure_optimizers(self):
                return torch.optim.AdamW(self.parameters(), lr=1e-3)

    Logged keys (``<stage>`` is ``val`` or ``test``): ``<stage>/loss``,
    ``<stage>/acc``, ``<stage>/balanced_acc``, ``<stage>/macro_f1``,
    ``<stage>/recall/<class>``, ``<stage>/support/<class>``,
    ``<stage>/{many,medium,few}_recall`` (by training count), for binary and
    multi-label tasks also ``<stage>/auroc`` and ``<stage>/average_precision``;
    with ``posthoc_tau`` the same keys again under ``<stage>/adjusted/`` for the
    adjusted logits; ``train/loss`` and, with a warm-up, ``train/warmup_factor``.
    Every stage also logs ``<stage>/ece`` (binary: also ``precision`` and ``f1``
    of the positive class).

    Post-hoc choices made on validation outputs after training (by the
    :class:`~lit_imbalance.callbacks.TemperatureScaling` and
    :class:`~lit_imbalance.callbacks.ThresholdTuning` callbacks at
    ``on_test_start``, and by ``posthoc_tau="tune"`` itself) are buffers saved in
    checkpoints, and the test reports them: ``calibration/temperature`` with
    ``test/nll`` and ``test/calibrated/*`` (``ece``, ``nll``, ...) for the logits
    divided by it; ``threshold/value`` (multi-label: ``threshold/<label>``) with
    the ``test/*`` keys at the chosen threshold and ``test/default_threshold/*``
    at 0.5; ``posthoc_tau`` with ``test/adjusted/*``.

    The interface for callbacks:

    - :attr:`class_counts`: the training samples per class of this fit;
    - :meth:`evaluation_summary`: the synced confusion matrix, class names and
      counts of the last validation or test epoch;
    - :meth:`refresh_class_counts`: find the counts again (the training set changed);
    - :meth:`set_temperature`, :meth:`set_decision_threshold`, :meth:`set_posthoc_tau`:
      record a post-hoc choice.
    """

    imbalance_criterion: ImbalanceCriterion
    imbalance_metrics: nn.ModuleDict
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
        posthoc_tau: float | str | None = None,
        many_threshold: int = 100,
        few_threshold: int = 20,
        mixup: BatchMixer | None = None,
    ) -> None:
        """Attach the criterion, the class statistics and the metrics.

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
                attribute path (``"classifier.2"``), or ``None`` to find it
                (:func:`~lit_imbalance.heads.find_classifier_head`).
            warmup: a :class:`~lit_imbalance.schedule.LossWarmup` moving from a
                start loss to ``loss``; a schedule of length 0 without
                re-weighting is no warm-up.
            bias_prior: initialise the head's bias to the class prior at the
                start of the first fit (``b_c = log pi_c``; sigmoid outputs
                ``b = -log((1 - pi) / pi)``), see
                :meth:`~lit_imbalance.criterion.ImbalanceCriterion.initial_bias`.
            prior: the prior for the bias and the post-hoc adjustment instead of
                the one estimated from the class counts.
            class_names: names used in per-class metric keys (default ``"0".."C-1"``).
            class_counts: training samples per class (multi-label: positives per
                label, with ``num_samples``); found from the training data when ``None``.
            num_samples: number of training samples, for given multi-label counts.
            posthoc_tau: when set, validation/test also report metrics of the
                adjusted logits ``logits - tau * prior_logits`` under
                ``<stage>/adjusted/``, and :meth:`adjust_logits` applies it (use it
                in ``predict_step``). ``"tune"`` (multiclass): at the start of each
                test, the tau of :data:`~lit_imbalance.priors.TAU_GRID` with the best
                validation balanced accuracy (the datamodule's ``val_dataloader``);
                only the test reports ``adjusted`` keys then.
            many_threshold: classes with more training samples count as many-shot.
            few_threshold: classes with fewer training samples count as few-shot.
            mixup: a :class:`~lit_imbalance.mixing.BatchMixer` (mixup, remix,
                label-aware smoothing) that :meth:`mix_batch` applies to training
                batches; the loss must accept the soft targets it makes
                (checked now, see :func:`~lit_imbalance.criterion.check_soft_targets`).
        """
        if not isinstance(self, L.LightningModule):
            fail("self", "a LightningModule (class Model(ImbalanceMixin, L.LightningModule))", type(self).__name__, TypeError)
        mro = type(self).__mro__
        if mro.index(ImbalanceMixin) > mro.index(L.LightningModule):
            # LightningModule's own (empty) hooks would shadow the mixin's.
            fail("bases", "ImbalanceMixin listed before LightningModule", [c.__name__ for c in type(self).__bases__], TypeError)
        num_classes = resolve_num_classes(task, num_classes)
        if isinstance(posthoc_tau, str):
            if posthoc_tau != "tune":
                fail("posthoc_tau", "a non-negative float, 'tune' or None", posthoc_tau)
            if task != "multiclass":
                fail("posthoc_tau", f"a float or None for task={task!r} ('tune' is for multiclass; binary and "
                     "multi-label decisions are tuned by the threshold group)", posthoc_tau)
        elif posthoc_tau is not None:
            check_non_negative("posthoc_tau", posthoc_tau)
        check_bool("bias_prior", bias_prior, TypeError)
        if head is not None and not isinstance(head, (nn.Module, str)):
            fail("head", "an nn.Module, an attribute path or None", head, TypeError)
        self.imbalance_task = task
        self.num_classes = num_classes
        self.posthoc_tau = posthoc_tau
        self.bias_prior = bias_prior
        # A list, so that nn.Module does not register the head a second time.
        self._imbalance_head = [head]
        self.imbalance_criterion = ImbalanceCriterion(loss, num_classes, task, warmup=warmup, prior=prior)
        if mixup is not None:
            if not isinstance(mixup, BatchMixer):
                fail("mixup", "a lit_imbalance.mixing.BatchMixer or None", type(mixup).__name__, TypeError)
            mixup.check_task(task)
            check_soft_targets(self.imbalance_criterion, "mixup")
        self.imbalance_mixer = mixup

        metric_args = dict(class_names=class_names, many_threshold=many_threshold, few_threshold=few_threshold, task=task)
        self._metric_args = metric_args
        # A tuned tau is known only from the first test on: validation during the fit has no adjusted view.
        adjusted = [] if posthoc_tau is None else ["test_adjusted"] if posthoc_tau == "tune" else ["val_adjusted", "test_adjusted"]
        stages = [*EVAL_STAGES, *adjusted]
        self.imbalance_metrics = nn.ModuleDict({stage: ImbalanceMetrics(num_classes, **metric_args) for stage in stages})
        # Restored from a checkpoint as True, so a resumed or fine-tuning fit keeps the trained bias.
        self.register_buffer("bias_prior_applied", torch.zeros((), dtype=torch.bool))
        # Post-hoc choices, NaN until made; buffers, so a checkpoint written after them carries them.
        self.register_buffer("calibration_temperature", torch.full((), math.nan))
        if task != "multiclass":
            self.register_buffer("decision_threshold", torch.full((num_outputs(task, num_classes),), math.nan))
        if posthoc_tau == "tune":
            self.register_buffer("tuned_posthoc_tau", torch.full((), math.nan))
        # Python copies of the buffers, read by every evaluation step without a device sync; refreshed
        # after every load_state_dict (a module-level function: ddp_spawn pickles the module).
        self._posthoc: dict[str, float | list[float] | None] = {"temperature": None, "threshold": None, "tau": None}
        self.register_load_state_dict_post_hook(_read_loaded_posthoc_buffers)  # type: ignore[attr-defined]
        self._evaluation_summaries: dict[str, EvaluationSummary] = {}
        self._imbalance_setup_ran = False
        # A Python flag, not the counts buffer: reading a device tensor every step would sync the host.
        self._imbalance_counts_applied = False
        self._given_class_counts: ClassCounts | None = None
        # The epoch whose train/warmup_factor is logged already (None: none yet in this fit).
        self._warmup_factor_logged_epoch: int | None = None
        if class_counts is not None:
            counts = count_tensor(class_counts, num_classes)
            # Validated now (multi-label counts need num_samples), not at the first fit.
            self.imbalance_criterion.set_class_counts(counts, num_samples)
            self._given_class_counts = (counts, int(self.imbalance_criterion.num_train_samples))

    # --- the interface for callbacks and users ------------------------------------------

    @property
    def class_counts(self) -> Tensor:
        """Training samples (multi-label: positives) per class of this fit; zeros before it."""
        return self.imbalance_criterion.class_counts

    @property
    def class_names(self) -> list[str]:
        """The display name of every class, as in the per-class metric keys."""
        return list(self.imbalance_metrics["val"].class_names)

    @property
    def num_train_samples(self) -> Tensor:
        """Training samples of this fit (differs from ``class_counts.sum()`` for multi-label data)."""
        return self.imbalance_criterion.num_train_samples

    @property
    def imbalance_loss(self) -> nn.Module:
        """The loss the criterion computes (the warm-up schedule, when there is one)."""
        return self.imbalance_criterion.loss

    @property
    def loss_warmup(self) -> LossWarmup | None:
        """The warm-up schedule, when one is configured."""
        return self.imbalance_criterion.warmup

    def evaluation_summary(self, stage: str) -> EvaluationSummary | None:
        """What the metrics of ``stage`` (``"val"``, ``"test"``, ``"val_adjusted"``, ...) saw in their last epoch."""
        return self._evaluation_summaries.get(stage)

    def refresh_class_counts(self) -> None:
        """Find the training class counts again and hand them on (after the training set changed)."""
        found = self._find_class_counts(self.trainer)  # type: ignore[attr-defined]
        if found is not None:
            self.apply_class_counts(*found)

    def apply_class_counts(self, class_counts: Sequence[int] | Tensor, num_samples: int | None = None) -> None:
        """Hand the training class counts to the criterion (loss, schedule, prior) and the shot-group metrics."""
        self.imbalance_criterion.set_class_counts(class_counts, num_samples)
        for metrics in self.imbalance_metrics.values():
            metrics.set_class_counts(self.imbalance_criterion.class_counts)
        self._imbalance_counts_applied = True

    def classifier_head(self) -> nn.Module:
        """The layer that gets the bias prior: given, or found by :func:`~lit_imbalance.heads.find_classifier_head`."""
        return find_classifier_head(self, num_outputs(self.imbalance_task, self.num_classes),  # type: ignore[arg-type]
                                    self._imbalance_head[0], where="given to configure_imbalance")

    def imbalance_prior_logits(self) -> Tensor:
        """The logits of the training prior, see :meth:`ImbalanceCriterion.prior_logits`."""
        return self.imbalance_criterion.prior_logits()

    def mix_batch(self, x: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """A training batch through the configured ``mixup`` transform (unchanged without one).

        Call it in ``training_step`` before the forward pass:
        ``x, y = self.mix_batch(x, y)``; the soft targets go to :meth:`imbalance_step`.
        """
        if self.imbalance_mixer is None:
            return x, target
        return self.imbalance_mixer(x, target, self.class_counts, self.imbalance_task)

    @property
    def posthoc_tau_value(self) -> float | None:
        """The tau :meth:`adjust_logits` applies: ``posthoc_tau``, the tuned one for ``"tune"`` (None before tuning)."""
        if self.posthoc_tau == "tune":
            return self._posthoc["tau"]  # type: ignore[return-value]
        return self.posthoc_tau  # type: ignore[return-value]

    def adjust_logits(self, logits: Tensor) -> Tensor:
        """Post-hoc adjusted logits ``logits - tau * prior_logits``; unchanged without a tau (see :attr:`posthoc_tau_value`)."""
        tau = self.posthoc_tau_value
        if tau is None:
            return logits
        return self.imbalance_criterion.adjust_logits(logits, tau)

    def calibrated_logits(self, logits: Tensor) -> Tensor:
        """``logits / T`` with the fitted temperature; unchanged before :meth:`set_temperature`."""
        temperature = self._posthoc["temperature"]
        return logits if temperature is None else logits / temperature

    def predict_labels(self, logits: Tensor) -> Tensor:
        """The decisions: the top class of the adjusted logits (multiclass), or ``sigmoid > threshold``.

        The threshold is the chosen one (:meth:`set_decision_threshold`), 0.5 before a choice;
        binary logits ``(N, 1)`` give labels ``(N,)``.
        """
        if self.imbalance_task == "multiclass":
            return self.adjust_logits(logits).argmax(dim=1)
        scores = logits.float().sigmoid()
        if self.imbalance_task == "binary":
            scores = scores.reshape(-1)
        threshold = self._posthoc["threshold"]
        # The rule of ImbalanceMetrics: positive strictly above the threshold (per label for multi-label).
        cut = torch.as_tensor(THRESHOLD if threshold is None else threshold, dtype=scores.dtype, device=scores.device)
        return (scores > cut).long()

    def set_temperature(self, temperature: float) -> None:
        """Record the calibration temperature ``T > 0``: the test reports ``test/calibrated/*`` for ``logits / T``."""
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            fail("temperature", "a positive finite float", temperature)
        self.calibration_temperature.fill_(float(temperature))
        self._read_posthoc_buffers()

    def set_decision_threshold(self, threshold: float | Sequence[float]) -> None:
        """Record the decision threshold (binary: one probability; multi-label: one per label, or one for all)."""
        if self.imbalance_task == "multiclass":
            fail("threshold", "None for task='multiclass' (the top class is predicted)", threshold)
        value = check_thresholds(threshold, self.decision_threshold.numel()).reshape(-1)
        self.decision_threshold.copy_(value.expand_as(self.decision_threshold))
        self._read_posthoc_buffers()

    def set_posthoc_tau(self, tau: float) -> None:
        """Record the tuned tau of ``posthoc_tau="tune"``."""
        if self.posthoc_tau != "tune":
            fail("posthoc_tau", "'tune' to set a tuned tau", self.posthoc_tau)
        self.tuned_posthoc_tau.fill_(check_non_negative("tau", tau))
        self._read_posthoc_buffers()

    def tune_posthoc_tau(self) -> float:
        """Choose tau on the datamodule's validation outputs (best balanced accuracy), record and return it."""
        # Every rank gathers every rank's outputs, so all choose the same tau.
        outputs = validation_outputs(self.trainer, self, "posthoc_tau")  # type: ignore[attr-defined, arg-type]
        tau, scores = tune_posthoc_tau(outputs.logits, outputs.targets, self.imbalance_prior_logits().cpu(), TAU_GRID)
        log.info("posthoc_tau=tune: tau %s (validation balanced accuracy %.4f; %.4f at tau 0)", tau, max(scores), scores[0])
        self.set_posthoc_tau(tau)
        return tau

    def _read_posthoc_buffers(self) -> None:
        """Refresh the Python copies of the post-hoc buffers (once per choice or test, not per step)."""
        temperature = float(self.calibration_temperature)
        self._posthoc["temperature"] = temperature if math.isfinite(temperature) else None
        if self.imbalance_task != "multiclass":
            values = self.decision_threshold.tolist()
            chosen = all(math.isfinite(v) for v in values)
            self._posthoc["threshold"] = (values[0] if self.imbalance_task == "binary" else values) if chosen else None
        if self.posthoc_tau == "tune":
            tau = float(self.tuned_posthoc_tau)
            self._posthoc["tau"] = tau if math.isfinite(tau) else None

    def _prepare_test_views(self) -> None:
        """The test's metric sets for the post-hoc choices made so far."""
        self._read_posthoc_buffers()
        threshold = self._posthoc["threshold"]
        test = self.imbalance_metrics["test"]
        test.set_threshold(THRESHOLD if threshold is None else threshold)
        # The NLL before and after calibration, side by side.
        test.track_nll(self._posthoc["temperature"] is not None)
        wanted = {"calibrated": self._posthoc["temperature"] is not None, "default_threshold": threshold is not None}
        for view, needed in wanted.items():
            key = f"test_{view}"
            if needed and key not in self.imbalance_metrics:
                metrics = ImbalanceMetrics(self.num_classes, nll=view == "calibrated", **self._metric_args)
                self.imbalance_metrics[key] = metrics.to(self.device)  # type: ignore[attr-defined]
                metrics.set_class_counts(self.class_counts)
            elif not needed and key in self.imbalance_metrics:
                del self.imbalance_metrics[key]

    # --- Lightning hooks ----------------------------------------------------------------

    def setup(self, stage: str) -> None:
        super().setup(stage)  # type: ignore[misc]
        # Fresh metric states in this process: ddp_spawn hands the workers the module's
        # tensors in shared memory and un-shares only parameters and buffers, so the
        # ranks would otherwise add into one confusion matrix.
        for metrics in self.imbalance_metrics.values():
            metrics.reset()
        self._imbalance_setup_ran = True
        if stage != "fit" and not self.imbalance_criterion.counts_known:
            # Evaluating a model that was not fitted in this process: the loss (and the
            # post-hoc prior, until a checkpoint restores the trained counts) need statistics.
            found = self._find_class_counts(self.trainer, from_train_loader=False)  # type: ignore[attr-defined]
            if found is not None:
                self.apply_class_counts(*found)

    def on_test_start(self) -> None:
        super().on_test_start()  # type: ignore[misc]
        # After the callbacks' on_test_start (TemperatureScaling, ThresholdTuning) and the checkpoint restore.
        if self.posthoc_tau == "tune":
            self.tune_posthoc_tau()
        self._prepare_test_views()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]
        # Checkpoints written before the post-hoc buffers existed load as "nothing chosen".
        state = checkpoint.get("state_dict", {})
        for name in POSTHOC_BUFFERS:
            if hasattr(self, name):
                state.setdefault(name, getattr(self, name).detach().clone().fill_(math.nan))

    def on_fit_start(self) -> None:
        super().on_fit_start()  # type: ignore[misc]
        if not getattr(self, "_imbalance_setup_ran", False):
            raise RuntimeError(
                "ImbalanceMixin.setup did not run: if your model overrides `setup`, call `super().setup(stage)` in it."
            )
        trainer = self.trainer  # type: ignore[attr-defined]
        # Every fit logs its epochs' warm-up factors afresh (a second fit starts again at epoch 0).
        self._warmup_factor_logged_epoch = None
        found = self._find_class_counts(trainer)
        if found is None:
            fail(
                "class_counts",
                "given to configure_imbalance, or found in the training data (a datamodule with "
                "`train_class_counts`/`train_labels`, or a train dataset with `targets`/`labels`)",
                None,
            )
        self.apply_class_counts(*found)
        absent = [name for name, count in zip(self.class_names, self.class_counts.tolist()) if count == 0]
        if absent and trainer.is_global_zero:
            # A log record, not a Python warning: it also lands in the run's train.log.
            log.warning(
                f"{len(absent)} of {self.num_classes} classes have no training sample: {absent[:20]}"
                f"{' ...' if len(absent) > 20 else ''}. The model cannot learn them; validation scores over "
                "the other classes overstate it (metrics.json: classes_absent_from_train)."
            )
        # Lightning restores a checkpoint's weights and buffers before on_fit_start, so a
        # resumed run has bias_prior_applied set and keeps its trained bias.
        if self.bias_prior and not bool(self.bias_prior_applied):
            init_bias_prior(self.classifier_head(), self.imbalance_criterion.initial_bias())
            self.bias_prior_applied.fill_(True)

    def _find_class_counts(self, trainer: L.Trainer, from_train_loader: bool = True) -> ClassCounts | None:
        if self._given_class_counts is not None:
            return self._given_class_counts
        found = datamodule_class_counts(trainer, self.imbalance_task, self.num_classes)
        if found is None and from_train_loader:
            dataset = _compat.fit_train_dataset(trainer)
            if dataset is not None:
                found = dataset_class_counts(dataset, self.imbalance_task, self.num_classes)
        return found

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
        trainer = attached_trainer(self)  # type: ignore[arg-type]
        criterion = self.imbalance_criterion
        is_train = stage == "train"
        if is_train and trainer is not None:
            if not self._imbalance_counts_applied:
                raise RuntimeError(
                    "ImbalanceMixin.on_fit_start did not run, so the loss has no class counts: if your model "
                    "overrides `setup` or `on_fit_start`, call `super().setup(stage)` / `super().on_fit_start()` in it."
                )
            warmup = criterion.warmup
            if warmup is not None:
                epoch = trainer.current_epoch
                criterion.set_progress(epoch=epoch, step=trainer.global_step)
                # A factor counted in epochs is constant within one: logged at the epoch's first
                # step, its epoch mean is the same value, and the other steps skip a self.log
                # (Lightning's per-call cost was 14% of a small model's training step).
                if warmup.by_steps or self._warmup_factor_logged_epoch != epoch:
                    self.log(  # type: ignore[attr-defined]
                        "train/warmup_factor", warmup.factor, on_step=warmup.by_steps,
                        on_epoch=not warmup.by_steps, batch_size=target.shape[0],
                    )
                    self._warmup_factor_logged_epoch = epoch
        loss = criterion(logits, target)
        self.log(  # type: ignore[attr-defined]
            f"{stage}/loss", loss, on_step=is_train, on_epoch=True, prog_bar=is_train,
            sync_dist=not is_train, batch_size=target.shape[0],
        )
        if stage in EVAL_STAGES:
            logits = logits.detach()
            metrics = self.imbalance_metrics
            metrics[stage].update(logits, target)
            if f"{stage}_adjusted" in metrics and self.posthoc_tau_value is not None:
                metrics[f"{stage}_adjusted"].update(self.adjust_logits(logits), target)
            if f"{stage}_calibrated" in metrics:
                metrics[f"{stage}_calibrated"].update(self.calibrated_logits(logits), target)
            if f"{stage}_default_threshold" in metrics:
                metrics[f"{stage}_default_threshold"].update(logits, target)
        return loss

    def on_validation_epoch_end(self) -> None:
        self.log_imbalance_metrics("val")
        super().on_validation_epoch_end()  # type: ignore[misc]

    def on_test_epoch_end(self) -> None:
        self.log_imbalance_metrics("test")
        super().on_test_epoch_end()  # type: ignore[misc]

    def log_imbalance_metrics(self, stage: str) -> dict[str, Tensor]:
        """Compute (synced across ranks), log and reset the metrics of ``stage`` (and its adjusted twin)."""
        values: dict[str, Tensor] = {}
        for key, prefix in ((stage, f"{stage}/"), *((f"{stage}_{view}", f"{stage}/{view}/") for view in EVAL_VIEWS)):
            # A view that saw no batch (adjusted before a tau was tuned) has nothing to say.
            if key not in self.imbalance_metrics or (key != stage and self.imbalance_metrics[key].update_count == 0):
                continue
            metrics = self.imbalance_metrics[key]
            # From the criterion's buffer, which a checkpoint restore may have replaced since setup.
            metrics.set_class_counts(self.class_counts)
            values.update({prefix + name: value for name, value in metrics.compute().items()})
            self._evaluation_summaries[key] = metrics.summary()
            metrics.reset()
        if stage == "test":
            values.update(self._posthoc_values())
        headline = f"{stage}/balanced_acc"
        for name, value in values.items():
            # Already synced and equal on every rank: their max over ranks is that value,
            # exactly, which is what Lightning's epoch-level sync_dist asks for.
            self.log(name, value, prog_bar=name == headline, sync_dist=True, reduce_fx="max")  # type: ignore[attr-defined]
        return values


    def _posthoc_values(self) -> dict[str, Tensor]:
        """The post-hoc choices the test used, as loggable scalars (they land in metrics.json)."""
        values = {}
        if self._posthoc["temperature"] is not None:
            values["calibration/temperature"] = self._posthoc["temperature"]
        threshold = self._posthoc["threshold"]
        if isinstance(threshold, float):
            values["threshold/value"] = threshold
        elif threshold is not None:
            values.update({f"threshold/{name}": value for name, value in zip(self.class_names, threshold)})
        if self.posthoc_tau == "tune" and self._posthoc["tau"] is not None:
            values["posthoc_tau"] = self._posthoc["tau"]
        return {key: torch.tensor(float(value), device=self.device) for key, value in values.items()}  # type: ignore[attr-defined]


def _read_loaded_posthoc_buffers(module: ImbalanceMixin, incompatible_keys: object) -> None:
    module._read_posthoc_buffers()


def attached_trainer(module: L.LightningModule) -> L.Trainer | None:
    """The trainer ``module`` is attached to, or ``None`` (``module.trainer`` raises when there is none)."""
    try:
        return module.trainer
    except RuntimeError:
        return None
