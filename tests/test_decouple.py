"""Decoupled second stages and MaxNorm, each against its definition, in Python and through train.py."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException
from torch import nn

from lit_imbalance.app import train
from lit_imbalance.callbacks.head_training import FrozenBackbone, MaxNorm
from lit_imbalance.data import DigitsLTDataModule
from lit_imbalance.decoupling import (
    class_means,
    max_norm_,
    nearest_class_mean_parameters,
    scale_classes_,
    tau_normalize_,
    tau_normalized,
)
from lit_imbalance.heads import NormedLinear
from lit_imbalance.mixin import ImbalanceMixin
from lit_imbalance.models import ImbalanceClassifier, MLPClassifier
from lit_imbalance.outputs import collect_outputs
from lit_imbalance.stage2 import ClassifierRetraining, LearnableWeightScaling, NearestClassMean, TauNormalization
from tests.conftest import run_train_py


def quiet_trainer(**kwargs: object) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, **kwargs)


@pytest.fixture
def digits() -> DigitsLTDataModule:
    return DigitsLTDataModule(imbalance_ratio=10, batch_size=64)


@pytest.fixture
def fitted(digits: DigitsLTDataModule) -> MLPClassifier:
    torch.manual_seed(0)
    model = MLPClassifier(input_dim=64, num_classes=10, hidden_sizes=[32], dropout=0.0)
    quiet_trainer(max_epochs=3).fit(model, datamodule=digits)
    return model


# --- the tensor definitions ------------------------------------------------------------


def test_tau_norm_with_tau_zero_is_the_identity_and_one_gives_unit_rows() -> None:
    torch.manual_seed(0)
    head = nn.Linear(5, 4)
    before = copy.deepcopy(head.state_dict())
    tau_normalize_(head, 0.0)
    assert all(torch.equal(before[k], v) for k, v in head.state_dict().items())
    weight = torch.randn(4, 5) * torch.tensor([[0.1], [1.0], [3.0], [10.0]])
    expected = weight.numpy() / np.linalg.norm(weight.numpy(), axis=1, keepdims=True) ** 0.5
    np.testing.assert_allclose(tau_normalized(weight, 0.5).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(tau_normalized(weight, 1.0).norm(dim=1).numpy(), np.ones(4), rtol=1e-6)


def test_tau_norm_refuses_a_head_that_normalises_its_weights() -> None:
    with pytest.raises(ValueError, match="head.*NormedLinear"):
        tau_normalize_(NormedLinear(4, 3), 1.0)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_ncm_parameters_predict_the_nearest_class_mean(metric: str) -> None:
    rng = np.random.default_rng(0)
    means = rng.normal(size=(5, 8)) * 3
    x = rng.normal(size=(200, 8)) * 3
    weight, bias = nearest_class_mean_parameters(torch.tensor(means, dtype=torch.float64), metric)
    predicted = (torch.tensor(x) @ weight.T + bias).argmax(dim=1).numpy()
    if metric == "euclidean":
        expected = ((x[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    else:
        unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
        expected = (unit(x) @ unit(means).T).argmax(1)
    np.testing.assert_array_equal(predicted, expected)


def test_class_means_match_numpy_and_leave_absent_classes_at_zero() -> None:
    features = torch.randn(50, 3)
    labels = torch.randint(0, 3, (50,))
    means = class_means(features, labels, 4)
    for c in range(3):
        np.testing.assert_allclose(means[c].numpy(), features[labels == c].numpy().mean(0), rtol=1e-5, atol=1e-6)
    assert means[3].abs().sum() == 0


def test_max_norm_bounds_every_row_and_keeps_rows_inside_the_ball() -> None:
    head = nn.Linear(6, 5)
    with torch.no_grad():
        head.weight.mul_(torch.tensor([[0.01], [1.0], [10.0], [100.0], [0.1]]))
    norms = head.weight.detach().norm(dim=1).clone()
    max_norm_(head, 0.5)
    after = head.weight.norm(dim=1)
    assert bool((after <= 0.5 + 1e-6).all())
    inside = norms <= 0.5
    np.testing.assert_allclose(after[inside].detach().numpy(), norms[inside].numpy(), rtol=1e-6)
    np.testing.assert_allclose(after[~inside].detach().numpy(), 0.5, rtol=1e-5)


def test_scale_classes_multiplies_each_logit_by_its_scale() -> None:
    head = nn.Linear(3, 4)
    x = torch.randn(7, 3)
    before = head(x).detach()
    scales = torch.tensor([0.5, 1.0, 2.0, 3.0])
    scale_classes_(head, scales)
    torch.testing.assert_close(head(x).detach(), before * scales)


# --- the stages on a fitted model ------------------------------------------------------


def test_crt_leaves_the_backbone_unchanged_and_retrains_the_head(digits: DigitsLTDataModule) -> None:
    torch.manual_seed(0)
    network = {"backbone": nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2)),
               "head": nn.Linear(32, 10)}
    model = ImbalanceClassifier(network, num_classes=10)
    quiet_trainer(max_epochs=2).fit(model, datamodule=digits)
    backbone = copy.deepcopy(model.backbone.state_dict())
    head = copy.deepcopy(model.head.state_dict())
    ClassifierRetraining(epochs=3).fit(model, digits, quiet_trainer(max_epochs=3))
    # Weights and batch-norm statistics alike: the backbone ran in eval mode, frozen.
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, backbone[key]), key
    assert not torch.equal(model.head.weight, head["weight"])
    assert all(p.requires_grad for p in model.parameters())  # the stage gave the flags back
    assert model.configure_optimizers.__func__ is ImbalanceClassifier.configure_optimizers  # type: ignore[attr-defined]
    assert digits.sampler is None


def test_crt_trains_on_class_balanced_batches(digits: DigitsLTDataModule, fitted: MLPClassifier) -> None:
    seen: list[torch.Tensor] = []

    class Labels(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # type: ignore[no-untyped-def]
            seen.append(batch[1])

    ClassifierRetraining(epochs=1).fit(fitted, digits, quiet_trainer(max_epochs=1, callbacks=[Labels()]))
    counts = torch.bincount(torch.cat(seen), minlength=10)
    assert int(counts.max() - counts.min()) <= 1, counts.tolist()  # the data itself is 10:1


def test_lws_folds_its_scales_into_an_unchanged_structure(digits: DigitsLTDataModule, fitted: MLPClassifier) -> None:
    keys = set(fitted.state_dict())
    x = digits.splits["test"].x
    before = collect_outputs(fitted, [(x, torch.zeros(len(x)))]).logits
    backbone = copy.deepcopy(fitted.backbone.state_dict())
    chosen = LearnableWeightScaling(epochs=2, optimizer=lambda p: torch.optim.SGD(p, lr=0.5)).fit(
        fitted, digits, quiet_trainer(max_epochs=2))
    assert set(fitted.state_dict()) == keys
    assert not fitted.head._forward_hooks
    after = collect_outputs(fitted, [(x, torch.zeros(len(x)))]).logits
    # Each class's logit is its stage-1 logit times one scale, the same for every sample.
    ratio = after / before
    torch.testing.assert_close(ratio, ratio[:1].expand_as(ratio), rtol=1e-3, atol=1e-3)
    assert chosen["decouple/lws_scale_min"] <= float(ratio[0].min()) + 1e-3
    assert all(torch.equal(v, backbone[k]) for k, v in fitted.backbone.state_dict().items())


def test_tau_norm_chooses_tau_on_validation(digits: DigitsLTDataModule, fitted: MLPClassifier) -> None:
    weight = fitted.head.weight.detach().clone()
    val = collect_outputs(fitted, digits.val_dataloader(), head=fitted.head)
    chosen = TauNormalization(taus=[0.0, 0.5, 1.0, 1.5]).fit(fitted, digits)
    from lit_imbalance.metrics import balanced_accuracy

    scores = {t: balanced_accuracy(val.features @ tau_normalized(weight, t).T + fitted.head.bias.detach(), val.targets, 10)
              for t in (0.0, 0.5, 1.0, 1.5)}
    assert chosen["decouple/tau"] == min(t for t, s in scores.items() if s == max(scores.values()))
    torch.testing.assert_close(fitted.head.weight.detach(), tau_normalized(weight, chosen["decouple/tau"]))


def test_ncm_predicts_the_nearest_training_class_mean(digits: DigitsLTDataModule, fitted: MLPClassifier) -> None:
    train = collect_outputs(fitted, digits.evaluation_dataloader("train"), head=fitted.head)
    means = train.features.new_zeros(10, train.features.shape[1])
    for c in range(10):
        means[c] = train.features[train.targets == c].mean(0)
    NearestClassMean(metric="euclidean").fit(fitted, digits)
    test = collect_outputs(fitted, digits.test_dataloader(), head=fitted.head)
    nearest = torch.cdist(test.features, means).argmin(dim=1)
    assert torch.equal(test.logits.argmax(dim=1), nearest)


def test_training_stages_need_a_trainer_and_valid_settings(fitted: MLPClassifier, digits: DigitsLTDataModule) -> None:
    with pytest.raises(ValueError, match="trainer"):
        ClassifierRetraining().fit(fitted, digits)
    with pytest.raises(ValueError, match=r"decouple\.epochs.*0"):
        ClassifierRetraining(epochs=0)
    with pytest.raises(ValueError, match=r"decouple\.sampling.*balanced"):
        LearnableWeightScaling(sampling="balanced")
    with pytest.raises(ValueError, match=r"decouple\.taus.*-1"):
        TauNormalization(taus=[-1.0])


def test_max_norm_callback_keeps_every_class_norm_within_the_bound(digits: DigitsLTDataModule) -> None:
    torch.manual_seed(0)
    model = MLPClassifier(input_dim=64, num_classes=10, hidden_sizes=[32])
    norms: list[torch.Tensor] = []

    class Watch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):  # type: ignore[no-untyped-def]
            norms.append(pl_module.head.weight.detach().norm(dim=1).clone())

    # Watch runs after MaxNorm: what it sees is what the next step starts from.
    quiet_trainer(max_epochs=3, callbacks=[MaxNorm(max_norm=0.3), Watch()]).fit(model, datamodule=digits)
    stacked = torch.stack(norms)
    assert bool((stacked <= 0.3 + 1e-6).all())
    assert float(stacked.max()) > 0.29  # the bound is active, not vacuous


def test_frozen_backbone_callback_alone_trains_only_the_head(digits: DigitsLTDataModule) -> None:
    model = MLPClassifier(input_dim=64, num_classes=10, hidden_sizes=[32], dropout=0.5)
    backbone = copy.deepcopy(model.backbone.state_dict())
    quiet_trainer(max_epochs=1, callbacks=[FrozenBackbone([model.head])]).fit(model, datamodule=digits)
    assert all(torch.equal(v, backbone[k]) for k, v in model.backbone.state_dict().items())


# --- through train.py ------------------------------------------------------------------


@pytest.mark.parametrize("method", ["crt", "lws", "tau_norm", "ncm"])
def test_train_py_decouple_records_stage_one_and_two(method: str, train_cfg, tmp_path: Path) -> None:
    epochs = ["decouple.epochs=1"] if method in ("crt", "lws") else []
    cfg = train_cfg(f"decouple={method}", "trainer.max_epochs=2", *epochs)
    train(cfg)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["decouple/method"] == method
    for key in ("test/balanced_acc", "val/balanced_acc", "test/ece"):
        assert record[f"stage1/{key}"] is not None and record[f"stage2/{key}"] is not None
        assert record[key] == record[f"stage2/{key}"]
    assert record["objective"] == record["stage2/val/balanced_acc"]
    assert (tmp_path / "checkpoints" / "stage2.ckpt").is_file()
    state = torch.load(tmp_path / "checkpoints" / "stage2.ckpt", weights_only=True)["state_dict"]
    assert set(state) >= {"head.weight", "head.bias"} and not any("class_scales" in k for k in state)


def two_stage_ddp_record(run_dir: Path, strategy: str, method: str, epochs: int) -> dict:
    """Run ``train.py decouple=<method>`` on two CPU processes; its metrics.json, checked to be finished."""
    result = run_train_py(
        f"strategy={strategy}", "trainer.devices=2", "trainer.accelerator=cpu", "logger=none",
        f"trainer.max_epochs={epochs}", "trainer.enable_progress_bar=false", f"decouple={method}", "decouple.epochs=1",
        run_dir=run_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["decouple/method"] == method and record["status"] == "finished"
    # Stage 2's test, like stage 1's, sharded without padding and synced: 500 samples once each.
    assert sum(record[f"stage2/test/support/{c}"] for c in range(10)) == 500
    return record


def test_decouple_lws_under_ddp_spawn_starts_from_the_best_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    two_stage_ddp_record(run_dir, "ddp_spawn", "lws", epochs=3)
    # The spawned workers fitted stage 2 (the model pickled with its stage optimiser), and the main process
    # folded the learned scales into a head that started from the best stage-1 checkpoint.
    best = next((run_dir / "checkpoints").glob("epoch*.ckpt"))
    stage1 = torch.load(best, weights_only=True)["state_dict"]["head.weight"]
    stage2 = torch.load(run_dir / "checkpoints" / "stage2.ckpt", weights_only=True)["state_dict"]["head.weight"]
    ratio = stage2 / stage1
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-4, atol=1e-4)  # one scale per class
    assert not torch.allclose(ratio, torch.ones_like(ratio))


def test_a_stage_that_cannot_run_fails_before_stage_one(train_cfg, tmp_path: Path) -> None:
    binary = MLPClassifier(input_dim=8, num_classes=2, task="binary")
    with pytest.raises(ValueError, match=r"`decouple`.*task='binary'.*tau_norm"):
        TauNormalization().check(binary)
    normed = ImbalanceClassifier(nn.Sequential(nn.Linear(8, 4), NormedLinear(4, 3)), num_classes=3, bias_prior=False)
    with pytest.raises(ValueError, match=r"`decouple`.*NormedLinear.*lws"):
        LearnableWeightScaling().check(normed)
    with pytest.raises(ValueError, match=r"`decouple\.metric`.*euclidean"):
        NearestClassMean(metric="euclidean").check(normed)
    # Through train.py: the stage is built and checked before stage 1 trains.
    with pytest.raises(InstantiationException, match=r"`decouple\.metric`.*manhattan"):
        train(train_cfg("decouple=ncm", "decouple.metric=manhattan"))
    assert not (tmp_path / "checkpoints").exists()  # nothing was trained


def test_decouple_crt_under_ddp_counts_every_test_sample_once(tmp_path: Path) -> None:
    record = two_stage_ddp_record(tmp_path / "run", "ddp", "crt", epochs=1)
    assert sum(record[f"stage1/test/support/{c}"] for c in range(10)) == 500


def test_weight_balancing_runs_both_stages_with_max_norm_and_records_ece(train_cfg, tmp_path: Path) -> None:
    cfg = train_cfg("method=weight_balancing", "trainer.max_epochs=2", "decouple.epochs=1")
    assert cfg.decouple.max_norm == cfg.callbacks.max_norm.max_norm == 1.0
    assert cfg.decouple.loss._target_.endswith("ClassBalancedLoss") and cfg.decouple.reinitialize is False
    train(cfg)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["decouple/method"] == "crt" and 0.0 <= record["test/ece"] <= 1.0
    state = torch.load(tmp_path / "checkpoints" / "stage2.ckpt", weights_only=True)["state_dict"]
    assert float(state["head.weight"].norm(dim=1).max()) <= 1.0 + 1e-5  # MaxNorm held through stage 2


def test_calibration_after_stage_two_is_fitted_on_the_stage_two_classifier(train_cfg, tmp_path: Path) -> None:
    train(train_cfg("decouple=tau_norm", "calibration=temperature", "trainer.max_epochs=2"))
    record = json.loads((tmp_path / "metrics.json").read_text())
    # Chosen twice, on each stage's validation outputs: the record keeps both.
    assert record["stage1/test/calibrated/ece"] is not None and record["stage2/test/calibrated/ece"] is not None
    assert record["stage1/calibration/temperature"] > 0 and record["stage2/calibration/temperature"] > 0
    # Fitted again on the tau-normalised classifier's validation outputs, not carried over.
    assert record["stage1/calibration/temperature"] != record["stage2/calibration/temperature"]
    assert record["calibration/temperature"] == record["stage2/calibration/temperature"]
    assert record["test/ece"] == record["stage2/test/ece"]


class PlainData(L.LightningDataModule):
    """A LightningDataModule of a user's project: its own loaders, no lit_imbalance base class."""

    def __init__(self) -> None:
        super().__init__()
        data = DigitsLTDataModule(imbalance_ratio=10)
        self.sets = {split: torch.utils.data.TensorDataset(data.splits[split].x, data.splits[split].y)
                     for split in ("train", "val", "test")}

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(self.sets["train"], batch_size=64, shuffle=True)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(self.sets["val"], batch_size=256)


class UserModel(ImbalanceMixin, L.LightningModule):
    """A user's LightningModule with the mixin: the stages find its head as the bias prior does."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(64, 32), nn.ReLU())
        self.classifier = nn.Linear(32, 10)
        self.configure_imbalance(num_classes=10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        return self.imbalance_step("train", self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        self.imbalance_step("val", self(batch[0]), batch[1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def test_stages_work_on_a_users_lightning_module_and_datamodule() -> None:
    torch.manual_seed(0)
    model, data = UserModel(), PlainData()
    quiet_trainer(max_epochs=2).fit(model, datamodule=data)
    features = copy.deepcopy(model.features.state_dict())
    head = model.classifier.weight.detach().clone()
    ClassifierRetraining(epochs=1, sampling="instance").fit(model, data, quiet_trainer(max_epochs=1))
    assert all(torch.equal(v, features[k]) for k, v in model.features.state_dict().items())
    assert not torch.equal(model.classifier.weight, head)  # the head did train
    weight = model.classifier.weight.detach().clone()
    chosen = TauNormalization(taus=[0.0, 1.0]).fit(model, data)
    torch.testing.assert_close(model.classifier.weight.detach(), tau_normalized(weight, chosen["decouple/tau"]))
    before = model.classifier.weight.detach().clone()
    with pytest.raises(TypeError, match=r"`datamodule`.*class_aware.*PlainData"):
        ClassifierRetraining(epochs=1).fit(model, data, quiet_trainer(max_epochs=1))
    assert torch.equal(model.classifier.weight, before)  # refused before the head was re-initialised
