"""LossWarmup: factors per epoch/step, DRW weights, argument errors, and resume mid-warm-up."""

from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn
from torch.utils.data import SequentialSampler

from lit_imbalance.app import build
from lit_imbalance.data import DigitsLTDataModule
from lit_imbalance.losses import FocalLoss, LDAMLoss
from lit_imbalance.models import MLPClassifier
from lit_imbalance.schedule import LossWarmup
from lit_imbalance.weights import class_weights
from tests.test_mixin import single_thread  # noqa: F401  (autouse fixture)

QUIET = dict(logger=False, enable_progress_bar=False, enable_model_summary=False)


class FactorRecorder(Callback):
    """The logged train/warmup_factor after every epoch and the schedule's factor at every batch."""

    def __init__(self) -> None:
        self.per_epoch: list[float] = []
        self.per_batch: list[tuple[int, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # global_step has already advanced: record the step the loss was computed at.
        self.per_batch.append((trainer.global_step - 1, pl_module.loss_warmup.factor))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.per_epoch.append(float(trainer.callback_metrics["train/warmup_factor"]))


def digits(batch_size: int = 64) -> DigitsLTDataModule:
    # In order, so that an interrupted and an uninterrupted run see the same batches.
    return DigitsLTDataModule(batch_size=batch_size, sampler=lambda labels: SequentialSampler(labels))


def model_with(warmup: LossWarmup, seed: int = 0) -> MLPClassifier:
    torch.manual_seed(seed)
    return MLPClassifier(64, 10, loss=nn.CrossEntropyLoss(label_smoothing=0.3), dropout=0.0, warmup=warmup)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("switch", [0.0, 0.0, 0.0, 1.0, 1.0]), ("blend", [0.0, 1 / 3, 2 / 3, 1.0, 1.0])],
)
def test_logged_factor_per_epoch(mode: str, expected: list[float]) -> None:
    recorder = FactorRecorder()
    model = model_with(LossWarmup(epochs=3, mode=mode))
    L.Trainer(max_epochs=5, callbacks=[recorder], enable_checkpointing=False, **QUIET).fit(model, digits())
    assert recorder.per_epoch == pytest.approx(expected)


def test_factor_per_step_blend() -> None:
    recorder = FactorRecorder()
    model = model_with(LossWarmup(steps=6, mode="blend"))
    # 287 training samples in batches of 64: 5 steps per epoch.
    L.Trainer(max_epochs=2, callbacks=[recorder], enable_checkpointing=False, **QUIET).fit(model, digits())
    assert [step for step, _ in recorder.per_batch] == list(range(10))
    assert [factor for _, factor in recorder.per_batch] == pytest.approx([min(1.0, s / 6) for s in range(10)])


def test_loss_follows_the_factor() -> None:
    start, target = nn.CrossEntropyLoss(), nn.CrossEntropyLoss(label_smoothing=0.5)
    warmup = LossWarmup(steps=4, mode="blend", start=start, target=target)
    logits, y = torch.tensor([[3.0, -1.0, 0.0], [0.0, 2.0, 1.0]]), torch.tensor([0, 2])
    values = []
    for step in (0, 1, 4):
        warmup.advance(epoch=0, step=step)
        values.append(warmup(logits, y))
    assert values[0] == start(logits, y)
    assert torch.allclose(values[1], 0.75 * start(logits, y) + 0.25 * target(logits, y))
    assert values[2] == target(logits, y)


def test_drw_reweights_only_after_the_switch() -> None:
    counts = torch.tensor([500, 50, 5])
    warmup = LossWarmup(epochs=2, reweight="effective", beta=0.999, target=nn.CrossEntropyLoss())
    warmup.set_class_counts(counts)
    logits, y = torch.randn(12, 3, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2] * 4)
    weights = class_weights(counts, scheme="effective", beta=0.999)
    warmup.advance(epoch=1, step=0)
    assert torch.allclose(warmup(logits, y), nn.functional.cross_entropy(logits, y))
    warmup.advance(epoch=2, step=0)
    assert torch.allclose(warmup(logits, y), nn.functional.cross_entropy(logits, y, weight=weights))
    # The weights are recomputed from the counts every fit, so they are not checkpoint state.
    assert set(warmup.state_dict()) == {"epoch", "step"}


def test_drw_uses_a_losses_own_reweight_option() -> None:
    counts = torch.tensor([500, 50, 5])
    warmup = LossWarmup(epochs=1, reweight="effective", beta=0.999, target=LDAMLoss(s=1.0))
    warmup.set_class_counts(counts)
    logits, y = torch.randn(12, 3, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2] * 4)
    warmup.advance(epoch=0, step=0)
    assert torch.allclose(warmup(logits, y), LDAMLoss(counts, s=1.0)(logits, y))
    warmup.advance(epoch=1, step=0)
    assert torch.allclose(warmup(logits, y), LDAMLoss(counts, s=1.0, reweight="effective", beta=0.999)(logits, y))


def test_drw_weights_any_per_sample_loss_and_skips_ignored_targets() -> None:
    counts = torch.tensor([90, 10])
    warmup = LossWarmup(epochs=0, reweight="inverse", target=FocalLoss(gamma=2.0))
    warmup.set_class_counts(counts)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, -3.0]])
    y = torch.tensor([0, 1, 1, -100])
    per_sample = FocalLoss(gamma=2.0, reduction="none")(logits, y)[:3]
    w = class_weights(counts, scheme="inverse")[y[:3]]
    assert torch.allclose(warmup(logits, y), (w * per_sample).sum() / w.sum())


def test_drw_needs_a_loss_that_can_be_weighted() -> None:
    with pytest.raises(TypeError, match=r"`loss`.*`reweight` option or a `reduction`.*Flatten"):
        LossWarmup(epochs=1, reweight="inverse", target=nn.Flatten())


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"epochs": 2, "steps": 10}, r"`steps` to be None when epochs=2"),
        ({"epochs": -1}, r"`epochs` to be a non-negative integer or None, but got -1"),
        ({"steps": 2.5}, r"`steps` to be a non-negative integer"),
        ({"epochs": 1, "mode": "cosine"}, r"`mode` to be one of 'switch', 'blend', but got 'cosine'"),
        ({"epochs": 1, "reweight": "balanced"}, r"`reweight` to be one of None, 'inverse'"),
        ({"epochs": 1, "beta": 1.0}, r"`beta` to be a float in \[0, 1\)"),
    ],
)
def test_arguments_are_validated_in_init(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        LossWarmup(**kwargs)


def test_state_dict_round_trip() -> None:
    warmup = LossWarmup(epochs=4, mode="blend", target=nn.CrossEntropyLoss())
    warmup.advance(epoch=3, step=42)
    restored = LossWarmup(epochs=4, mode="blend", target=nn.CrossEntropyLoss())
    restored.load_state_dict(warmup.state_dict())
    assert (int(restored.epoch), int(restored.step), restored.factor) == (3, 42, 0.75)


def test_factor_reads_the_python_mirror_not_the_buffers_and_loading_restores_it() -> None:
    # On a GPU, int(buffer) every step would sync the host: the factor must not read the buffers.
    warmup = LossWarmup(epochs=4, mode="blend", target=nn.CrossEntropyLoss())
    warmup.advance(epoch=1, step=7)
    warmup.epoch.fill_(3)  # behind the schedule's back
    assert warmup.factor == 0.25 and warmup.progress == (1, 7)
    steps = LossWarmup(steps=10, mode="blend", target=nn.CrossEntropyLoss())
    steps.advance(epoch=0, step=4)
    steps.step.fill_(9)
    assert steps.factor == pytest.approx(0.4)
    # The buffers still carry the progress: a fresh schedule (a resumed model) picks it up on load.
    warmup.advance(epoch=3, step=42)
    assert (int(warmup.epoch), int(warmup.step)) == (3, 42)
    restored = LossWarmup(epochs=4, mode="blend", target=nn.CrossEntropyLoss())
    assert restored.factor == 0.0
    restored.load_state_dict(warmup.state_dict())
    assert restored.progress == (3, 42) and restored.factor == 0.75
    # ...also when it is loaded as part of a whole model (the checkpoint path), and in a deep copy.
    model, resumed = model_with(LossWarmup(epochs=4, mode="blend")), model_with(LossWarmup(epochs=4, mode="blend"))
    model.loss_warmup.advance(epoch=2, step=10)
    resumed.load_state_dict(model.state_dict())
    assert resumed.loss_warmup.factor == 0.5
    copied = copy.deepcopy(resumed)
    copied.loss_warmup.load_state_dict({"epoch": torch.tensor(1), "step": torch.tensor(5)})
    assert copied.loss_warmup.factor == 0.25 and resumed.loss_warmup.factor == 0.5


def test_resume_from_mid_warmup_checkpoint_continues_the_schedule(tmp_path: Path) -> None:
    def fit(max_epochs: int, ckpt_path: str | None = None) -> tuple[MLPClassifier, FactorRecorder]:
        L.seed_everything(0)
        recorder = FactorRecorder()
        checkpoints = ModelCheckpoint(dirpath=tmp_path, filename="epoch{epoch}", save_top_k=-1, auto_insert_metric_name=False)
        model = model_with(LossWarmup(epochs=4, mode="blend"))
        trainer = L.Trainer(max_epochs=max_epochs, callbacks=[recorder, checkpoints], deterministic=True, **QUIET)
        trainer.fit(model, digits(), ckpt_path=ckpt_path)
        return model, recorder

    uninterrupted, full = fit(6)
    interrupted, _ = fit(2)  # stops in the middle of the warm-up (factor 1/4 in its last epoch)
    resumed, rest = fit(6, ckpt_path=str(tmp_path / "epoch1.ckpt"))
    assert full.per_epoch == pytest.approx([0, 0.25, 0.5, 0.75, 1, 1])
    assert rest.per_epoch == pytest.approx(full.per_epoch[2:])
    for (name, expected), actual in zip(uninterrupted.state_dict().items(), resumed.state_dict().values()):
        # equal_nan: post-hoc buffers (temperature, ...) are NaN until chosen, in both runs.
        assert torch.allclose(expected.float(), actual.float(), atol=1e-6, equal_nan=True), name
    assert not torch.equal(interrupted.head.weight, uninterrupted.head.weight)


@pytest.mark.parametrize(
    ("overrides", "start", "target", "length", "reweight"),
    [
        ((), None, "CrossEntropyLoss", 0, None),  # python train.py: no warm-up at all
        (("loss=focal", "warmup.epochs=3"), "CrossEntropyLoss", "FocalLoss", 3, None),
        (("loss=focal", "warmup=blend"), "CrossEntropyLoss", "FocalLoss", 5, None),
        (("loss=ldam", "warmup=drw"), "LDAMLoss", "LDAMLoss", 20, "effective"),
        (("loss=ce", "warmup=drw"), "CrossEntropyLoss", "ClassWeightedLoss", 20, "effective"),
    ],
)
def test_warmup_configs_build_the_schedule(train_cfg, overrides, start, target, length, reweight) -> None:
    _, model, _ = build(train_cfg(*overrides))
    warmup = model.loss_warmup
    if start is None:
        assert warmup is None and type(model.imbalance_loss).__name__ == target
        return
    assert (type(warmup.start).__name__, type(warmup.target).__name__) == (start, target)
    assert (warmup.length, warmup.by_steps, warmup.reweight) == (length, False, reweight)
    if reweight is not None:
        assert getattr(warmup.target, "reweight", getattr(warmup.target, "scheme", None)) == reweight


def test_a_second_fit_logs_the_epoch_factor_again() -> None:
    # The factor is logged once per epoch (its first step); a new fit starts again at epoch 0.
    model = model_with(LossWarmup(epochs=3, mode="blend"))
    for _ in range(2):
        recorder = FactorRecorder()
        L.Trainer(max_epochs=2, callbacks=[recorder], enable_checkpointing=False, **QUIET).fit(model, digits())
        assert recorder.per_epoch == pytest.approx([0.0, 1 / 3])
