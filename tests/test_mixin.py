"""ImbalanceMixin: class counts, bias prior, checkpoint restore, post-hoc metrics, precision and DDP."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from sklearn.metrics import balanced_accuracy_score
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lit_imbalance import ImbalanceMixin, LossWarmup
from lit_imbalance.app import train
from lit_imbalance.data import DigitsLTDataModule
from lit_imbalance.losses import AsymmetricLoss, ClassBalancedLoss, LogitAdjustedLoss, SigmoidFocalLoss
from lit_imbalance.models import MLPClassifier
from lit_imbalance.priors import prior_logits
from tests.conftest import run_train_py


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny models train faster on one thread, and far faster when other jobs share the cores.

    The other fit-running test modules of the mixin import it (autouse applies per module).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

QUIET = dict(logger=False, enable_progress_bar=False, enable_model_summary=False)
DIGITS_COUNTS = [104, 67, 43, 28, 18, 11, 7, 4, 3, 2]


class CountRecordingLoss(nn.CrossEntropyLoss):
    def __init__(self) -> None:
        super().__init__()
        self.received: list[list[int]] = []

    def set_class_counts(self, class_counts: Tensor) -> None:
        self.received.append(class_counts.tolist())


class TinyModel(ImbalanceMixin, L.LightningModule):
    """An ordinary small LightningModule made imbalance-aware by the mixin."""

    def __init__(self, num_classes: int = 3, task: str = "multiclass", **imbalance) -> None:
        super().__init__()
        num_classes = 2 if task == "binary" else num_classes
        self.body = nn.Linear(4, 8)
        self.head = nn.Linear(8, 1 if task == "binary" else num_classes)
        self.configure_imbalance(num_classes=num_classes, task=task, **imbalance)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.relu(self.body(x)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.imbalance_step("train", self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit_tiny(model: L.LightningModule, labels: Tensor, max_epochs: int = 0) -> L.Trainer:
    """Fit on plain DataLoaders, no datamodule."""
    features = torch.randn(labels.shape[0], 4, generator=torch.Generator().manual_seed(0))
    trainer = L.Trainer(max_epochs=max_epochs, enable_checkpointing=False, **QUIET)
    trainer.fit(model, train_dataloaders=DataLoader(TensorDataset(features, labels), batch_size=16))
    return trainer


# --- the prior ----------------------------------------------------------------------


def test_prior_logits_follow_the_formulas() -> None:
    counts = np.array([60.0, 30.0, 10.0])
    assert prior_logits(counts).numpy() == pytest.approx(np.log(counts / counts.sum()), abs=1e-6)
    pi = 10 / 100
    assert prior_logits([90, 10], task="binary").item() == pytest.approx(-math.log((1 - pi) / pi), abs=1e-6)
    positives, n = np.array([50.0, 5.0, 1.0]), 200
    rates = positives / n
    assert prior_logits(positives, task="multilabel", num_samples=n).numpy() == pytest.approx(
        -np.log((1 - rates) / rates), abs=1e-5
    )
    assert prior_logits(prior=[0.5, 0.25, 0.25]).exp().tolist() == pytest.approx([0.5, 0.25, 0.25])


def test_zero_counts_are_smoothed_to_one_not_minus_infinity() -> None:
    bias = prior_logits([10, 0, 5])
    assert torch.isfinite(bias).all()
    assert bias.softmax(0).tolist() == pytest.approx([10 / 16, 1 / 16, 5 / 16], abs=1e-6)
    # A label that is on for every sample (or none) keeps a finite log-odds too.
    assert torch.isfinite(prior_logits([0, 8], task="multilabel", num_samples=8)).all()
    with pytest.raises(ValueError, match=r"`prior` to be probabilities strictly between 0 and 1"):
        prior_logits(prior=[1.0, 0.0])


def test_bias_prior_makes_the_untrained_model_predict_the_prior() -> None:
    datamodule = DigitsLTDataModule()
    model = MLPClassifier(64, 10)
    L.Trainer(max_epochs=0, **QUIET).fit(model, datamodule)  # runs setup("fit") only
    prior = torch.tensor(DIGITS_COUNTS, dtype=torch.float64) / sum(DIGITS_COUNTS)
    assert model.class_counts.tolist() == DIGITS_COUNTS
    assert model.head.bias.detach().double().softmax(0).numpy() == pytest.approx(prior.numpy(), abs=1e-6)
    inputs = datamodule.splits["train"].x
    model.eval()
    with torch.no_grad():
        # With random last-layer weights the average prediction is close to the prior ...
        mean_prediction = model(inputs).double().softmax(1).mean(0)
        assert 0.5 * (mean_prediction - prior).abs().sum() < 0.05
        # ... and with zero weights every prediction is the prior.
        model.head.weight.zero_()
        assert model(inputs).double().softmax(1).numpy() == pytest.approx(prior.expand(len(inputs), -1).numpy(), abs=1e-6)


def test_binary_counts_and_bias_from_a_plain_dataloader() -> None:
    model = TinyModel(task="binary")
    fit_tiny(model, torch.tensor([0] * 90 + [1] * 10))
    assert model.class_counts.tolist() == [90, 10]
    assert torch.sigmoid(model.head.bias).item() == pytest.approx(0.1, abs=1e-6)


def test_multilabel_counts_from_a_plain_dataloader() -> None:
    labels = torch.zeros(40, 3, dtype=torch.long)
    labels[:20, 0] = 1
    labels[:4, 1] = 1
    labels[10:11, 2] = 1
    model = TinyModel(num_classes=3, task="multilabel")
    fit_tiny(model, labels, max_epochs=1)
    assert model.class_counts.tolist() == [20, 4, 1]
    assert int(model.num_train_samples) == 40
    # Trained one epoch: the bias moved away from the exact prior, but not far.
    assert torch.sigmoid(model.head.bias).tolist() == pytest.approx([0.5, 0.1, 0.025], abs=0.1)


class OwnLoaderModel(TinyModel):
    def train_dataloader(self) -> DataLoader:
        labels = torch.tensor([0] * 5 + [1] * 3 + [2] * 2)
        return DataLoader(TensorDataset(torch.randn(10, 4), labels), batch_size=4)


def test_counts_reach_the_loss_once_per_fit_from_the_modules_own_loader() -> None:
    loss = CountRecordingLoss()
    model = OwnLoaderModel(loss=loss)
    trainer = L.Trainer(max_epochs=1, enable_checkpointing=False, **QUIET)
    trainer.fit(model)
    assert loss.received == [[5, 3, 2]]
    L.Trainer(max_epochs=1, enable_checkpointing=False, **QUIET).fit(model)
    assert loss.received == [[5, 3, 2], [5, 3, 2]]


# --- where the bias is initialised ----------------------------------------------------


class BiasAtTrainStart(Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        self.bias = pl_module.head.bias.detach().clone()


def test_resume_and_refit_keep_the_trained_bias(tmp_path: Path) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="last")
    trained = MLPClassifier(64, 10)
    L.Trainer(max_epochs=2, callbacks=[checkpoint], **QUIET).fit(trained, DigitsLTDataModule())
    saved_bias = torch.load(tmp_path / "last.ckpt", weights_only=False)["state_dict"]["head.bias"]
    prior = prior_logits(DIGITS_COUNTS)
    assert not torch.allclose(saved_bias, prior, atol=1e-3)  # training moved it

    seen = BiasAtTrainStart()
    resumed = MLPClassifier(64, 10)
    L.Trainer(max_epochs=3, callbacks=[seen], enable_checkpointing=False, **QUIET).fit(
        resumed, DigitsLTDataModule(), ckpt_path=tmp_path / "last.ckpt"
    )
    assert torch.equal(seen.bias, saved_bias)

    # A second fit of the same module (e.g. fine-tuning) starts from its trained bias too.
    before = trained.head.bias.detach().clone()
    L.Trainer(max_epochs=1, callbacks=[seen], enable_checkpointing=False, **QUIET).fit(trained, DigitsLTDataModule())
    assert torch.equal(seen.bias, before)


def test_head_is_found_or_the_error_says_what_to_pass() -> None:
    model = TinyModel(num_classes=3)
    assert model.classifier_head() is model.head

    class TwoCandidates(TinyModel):
        def __init__(self) -> None:
            super().__init__(num_classes=8)  # body is Linear(4, 8) too

    with pytest.raises(ValueError, match=r"`head` to be given to configure_imbalance.*but got \"layers \['body', 'head'\]\""):
        TwoCandidates().classifier_head()
    model = TinyModel(num_classes=5)
    model.head = nn.Linear(8, 4)
    with pytest.raises(ValueError, match=r"`head` to be given.*5 outputs.*but got 'none'"):
        model.classifier_head()
    model = TinyModel(num_classes=3, head="head")
    assert model.classifier_head() is model.head


def test_head_without_bias_is_rejected() -> None:
    model = TinyModel(num_classes=3)
    model.head = nn.Linear(8, 3, bias=False)
    with pytest.raises(ValueError, match=r"`head` to be a layer with a bias"):
        fit_tiny(model, torch.tensor([0, 1, 2, 0]))


# --- wiring mistakes are reported ------------------------------------------------------


def test_override_of_setup_without_super_is_reported() -> None:
    class ForgetsSuper(TinyModel):
        def setup(self, stage: str) -> None:
            self.ready = True

    with pytest.raises(RuntimeError, match=r"call `super\(\).setup\(stage\)`"):
        fit_tiny(ForgetsSuper(), torch.tensor([0, 1, 2, 0]), max_epochs=1)


def test_override_with_super_keeps_the_mixin_working() -> None:
    class CallsSuper(TinyModel):
        def setup(self, stage: str) -> None:
            super().setup(stage)
            self.ready = True

    model = CallsSuper()
    fit_tiny(model, torch.tensor([0, 0, 1, 2]), max_epochs=1)
    assert model.ready and model.class_counts.tolist() == [2, 1, 1]


def test_mixin_must_come_before_lightning_module() -> None:
    class WrongOrder(L.LightningModule, ImbalanceMixin):
        def __init__(self) -> None:
            super().__init__()
            self.configure_imbalance(num_classes=2)

    with pytest.raises(TypeError, match=r"ImbalanceMixin listed before LightningModule"):
        WrongOrder()


# --- post-hoc adjustment, precision, DDP ------------------------------------------------


def test_posthoc_adjusted_metrics_match_a_hand_computation(tmp_path: Path) -> None:
    L.seed_everything(0)
    datamodule = DigitsLTDataModule()
    model = MLPClassifier(64, 10, posthoc_tau=1.0)
    trainer = L.Trainer(max_epochs=3, default_root_dir=tmp_path, **QUIET)
    trainer.fit(model, datamodule)
    logged = trainer.test(model, datamodule, verbose=False)[0]
    adjusted = torch.cat(trainer.predict(model, datamodule))  # predict_step returns adjusted logits
    raw = adjusted + prior_logits(DIGITS_COUNTS)
    target = datamodule.splits["test"].y.numpy()
    assert logged["test/balanced_acc"] == pytest.approx(balanced_accuracy_score(target, raw.argmax(1)), abs=1e-6)
    assert logged["test/adjusted/balanced_acc"] == pytest.approx(
        balanced_accuracy_score(target, adjusted.argmax(1)), abs=1e-6
    )
    # Removing the learned prior moves predictions to the tail: few-shot recall goes up.
    assert logged["test/adjusted/few_recall"] > logged["test/few_recall"]
    assert sum(logged[f"test/adjusted/support/{c}"] for c in range(10)) == 500


def test_bf16_mixed_precision_fit_gives_finite_metrics(train_cfg, tmp_path: Path) -> None:
    train(train_cfg("trainer.precision=bf16-mixed", "trainer.max_epochs=8", "warmup.epochs=1"))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    keys = ["test/loss", "test/acc", "test/balanced_acc", "test/macro_f1", "train/loss_epoch"]
    assert all(metrics[key] is not None and math.isfinite(metrics[key]) for key in keys)
    assert metrics["test/balanced_acc"] > 0.3  # ten classes: chance is 0.1


def test_ddp_two_processes_with_warmup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two processes on two cores
    run_dir = tmp_path / "run"
    result = run_train_py(
        "trainer.devices=2", "trainer.accelerator=cpu", "warmup.epochs=1", "trainer.max_epochs=2",
        "logger=none", "trainer.enable_progress_bar=false", run_dir=run_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert sum(metrics[f"test/support/{c}"] for c in range(10)) == 500
    assert metrics["train/warmup_factor"] == 1.0  # the second epoch trains with the configured loss
    assert metrics["train_class_counts"] == DIGITS_COUNTS


def test_logit_adjusted_losses_start_from_their_own_prior() -> None:
    # The loss adds tau * log pi: the model predicts the prior when bias = (1 - tau) * log pi.
    for tau, warmup, expected_scale in [(1.0, None, 0.0), (0.5, None, 0.5), (1.0, LossWarmup(epochs=2), 1.0)]:
        model = TinyModel(num_classes=3, loss=LogitAdjustedLoss(tau=tau), warmup=warmup)
        fit_tiny(model, torch.tensor([0] * 12 + [1] * 6 + [2] * 2))
        expected = expected_scale * prior_logits([12, 6, 2])
        assert torch.allclose(model.head.bias.detach(), expected, atol=1e-6), (tau, warmup)


def test_sigmoid_losses_on_class_indices_start_from_each_class_rate() -> None:
    # One sigmoid per class: the model predicts the prior when sigmoid(b_c) = pi_c, i.e. b_c = logit(pi_c).
    rates = torch.tensor([12 / 20, 6 / 20, 2 / 20])
    for loss in (SigmoidFocalLoss(), AsymmetricLoss(), ClassBalancedLoss(base="sigmoid_focal")):
        model = TinyModel(num_classes=3, loss=loss)
        fit_tiny(model, torch.tensor([0] * 12 + [1] * 6 + [2] * 2))
        assert torch.allclose(torch.sigmoid(model.head.bias.detach()), rates, atol=1e-6), type(loss).__name__
    # A softmax base keeps log pi_c.
    model = TinyModel(num_classes=3, loss=ClassBalancedLoss(base="focal"))
    fit_tiny(model, torch.tensor([0] * 12 + [1] * 6 + [2] * 2))
    assert torch.allclose(model.head.bias.detach().softmax(0), rates, atol=1e-6)
