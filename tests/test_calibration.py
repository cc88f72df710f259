"""Calibration: ECE and reliability bins against numpy, temperature scaling against a grid search of NLL."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lit_imbalance.metrics import ImbalanceMetrics, reliability_bins

N_BINS = 15


def numpy_bins(confidences: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS):
    """Equal-width bins by hand: bin k holds k/B <= c < (k+1)/B (the last bin also holds 1.0)."""
    index = np.minimum((confidences * n_bins).astype(int), n_bins - 1)
    count = np.bincount(index, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore"):
        confidence = np.nan_to_num(np.bincount(index, confidences, n_bins) / count)
        accuracy = np.nan_to_num(np.bincount(index, correct, n_bins) / count)
    ece = float(np.sum(count / count.sum() * np.abs(accuracy - confidence)))
    return confidence, accuracy, count, ece


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(1, keepdims=True))
    return shifted / shifted.sum(1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-logits))


@pytest.fixture
def multiclass_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (600,), generator=generator)
    # Over-confident logits: the true class gets a boost, the scale makes them too sure.
    logits = 3.0 * (torch.randn(600, 5, generator=generator) + 1.2 * torch.nn.functional.one_hot(target, 5))
    return logits, target


def test_multiclass_ece_and_bins_match_a_numpy_computation(multiclass_batch) -> None:
    logits, target = multiclass_batch
    metrics = ImbalanceMetrics(5)
    for batch_logits, batch_target in zip(logits.split(128), target.split(128)):
        metrics.update(batch_logits, batch_target)
    values = metrics.compute()
    probs = softmax(logits.double().numpy())
    confidences, correct = probs.max(1), (probs.argmax(1) == target.numpy()).astype(float)
    confidence, accuracy, count, ece = numpy_bins(confidences, correct)
    assert values["ece"].item() == pytest.approx(ece, abs=1e-5)
    reliability = metrics.summary().reliability
    assert reliability.count.tolist() == count.astype(int).tolist()
    np.testing.assert_allclose(reliability.confidence.numpy(), confidence, atol=1e-5)
    np.testing.assert_allclose(reliability.accuracy.numpy(), accuracy, atol=1e-6)
    assert reliability.ece == pytest.approx(ece, abs=1e-5)
    assert values["ece"].item() > 0.05  # the over-confident logits are visibly miscalibrated


def test_binary_and_multilabel_ece_is_over_every_positive_probability() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(300, 4, generator=generator) * 2
    target = (torch.rand(300, 4, generator=generator) < torch.sigmoid(logits + 1)).long()
    target[:7, 2] = -100  # ignored entries take no part
    multilabel = ImbalanceMetrics(4, task="multilabel")
    multilabel.update(logits, target)
    keep = target.numpy().reshape(-1) != -100
    probs, labels = sigmoid(logits.double().numpy()).reshape(-1)[keep], target.numpy().reshape(-1)[keep]
    assert multilabel.compute()["ece"].item() == pytest.approx(numpy_bins(probs, labels)[3], abs=1e-5)
    assert multilabel.summary().reliability.count.sum() == keep.sum()

    binary = ImbalanceMetrics(2, task="binary")
    binary.update(logits[:, 0:1], target[:, 0])  # (N, 1) logits, as a one-output head gives
    expected = numpy_bins(sigmoid(logits[:, 0].double().numpy()), target[:, 0].numpy())[3]
    assert binary.compute()["ece"].item() == pytest.approx(expected, abs=1e-5)


def test_a_perfectly_calibrated_bin_has_no_error_and_hard_labels_report_no_ece() -> None:
    bins = reliability_bins(torch.full((10,), 0.7), torch.tensor([1] * 7 + [0] * 3))
    assert bins.ece == pytest.approx(0.0, abs=1e-7) and bins.count.tolist()[10] == 10  # 0.7 is in [10/15, 11/15)
    hard = ImbalanceMetrics(3)
    hard.update(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1]))
    assert "ece" not in hard.compute() and hard.summary().reliability is None


def test_nll_is_the_mean_cross_entropy(multiclass_batch) -> None:
    logits, target = multiclass_batch
    metrics = ImbalanceMetrics(5, nll=True)
    metrics.update(logits, target)
    expected = torch.nn.functional.cross_entropy(logits.double(), target).item()
    assert metrics.compute()["nll"].item() == pytest.approx(expected, rel=1e-5)
    assert "nll" not in ImbalanceMetrics(5).compute()  # only when asked for: the default keys stay as they were


def test_reset_starts_the_calibration_error_afresh(multiclass_batch) -> None:
    logits, target = multiclass_batch
    metrics = ImbalanceMetrics(5)
    metrics.update(logits, target)
    metrics.compute()
    metrics.reset()
    metrics.update(logits[:50] * 0, target[:50])  # uniform: confidence 0.2 everywhere
    accuracy = float((torch.zeros(50, dtype=torch.long) == target[:50]).float().mean())
    assert metrics.compute()["ece"].item() == pytest.approx(abs(accuracy - 0.2), abs=1e-6)


def test_reliability_diagram_draws_accuracy_per_filled_bin_against_the_diagonal() -> None:
    from lit_imbalance import plots

    bins = reliability_bins(torch.tensor([0.05, 0.1, 0.5, 0.55, 0.95]), torch.tensor([0, 1, 0, 1, 1]), n_bins=10)
    top, bottom = plots.reliability_diagram(bins).axes
    accuracy_bars = [bar for bar in top.patches if bar.get_facecolor()[:3] == pytest.approx((0.122, 0.467, 0.706), abs=1e-3)]
    assert [bar.get_x() for bar in accuracy_bars] == pytest.approx([0.0, 0.1, 0.5, 0.9])  # empty bins: no bar
    assert [bar.get_height() for bar in accuracy_bars] == pytest.approx([0.0, 1.0, 0.5, 1.0])
    diagonal = top.lines[0]
    assert list(diagonal.get_xdata()) == [0, 1] and list(diagonal.get_ydata()) == [0, 1]
    assert f"ECE {bins.ece:.4f}" in top.get_title()
    assert sum(bar.get_height() for bar in bottom.patches) == pytest.approx(1.0)  # shares of samples


# --- temperature scaling in a fit -----------------------------------------------------------

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import lightning as L  # noqa: E402

from lit_imbalance.app import train  # noqa: E402
from lit_imbalance.calibration import fit_temperature  # noqa: E402
from lit_imbalance.callbacks import TemperatureScaling  # noqa: E402
from lit_imbalance.data import DigitsLTDataModule  # noqa: E402
from lit_imbalance.models import MLPClassifier  # noqa: E402
from lit_imbalance.outputs import collect_outputs  # noqa: E402
from tests.test_mixin import QUIET, single_thread  # noqa: E402, F401  (autouse fixture)


def grid_search_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    grid = torch.exp(torch.linspace(-3, 3, 6001, dtype=torch.float64))  # T from 0.05 to 20, steps of 0.1%
    nll = [torch.nn.functional.cross_entropy(logits.double() / t, targets).item() for t in grid]
    return float(grid[int(np.argmin(nll))])


def test_fit_temperature_finds_the_grid_minimum_of_nll(multiclass_batch) -> None:
    logits, target = multiclass_batch
    assert fit_temperature(logits, target) == pytest.approx(grid_search_temperature(logits, target), rel=2e-3)
    binary_logits, binary_target = logits[:, 0] - logits[:, 1], (target == 0).long()
    grid = torch.exp(torch.linspace(-3, 3, 6001, dtype=torch.float64))
    nll = [torch.nn.functional.binary_cross_entropy_with_logits(binary_logits.double() / t, binary_target.double()).item()
           for t in grid]
    assert fit_temperature(binary_logits, binary_target, task="binary") == pytest.approx(
        float(grid[int(np.argmin(nll))]), rel=2e-3)


def test_temperature_scaling_reports_calibrated_test_metrics_and_saves_t(tmp_path: Path) -> None:
    L.seed_everything(0)
    datamodule, model = DigitsLTDataModule(), MLPClassifier(64, 10)
    scaling = TemperatureScaling()
    trainer = L.Trainer(max_epochs=8, default_root_dir=tmp_path, callbacks=[scaling], **QUIET)
    trainer.fit(model, datamodule)
    logged = trainer.test(model, datamodule, verbose=False)[0]

    validation = collect_outputs(model, datamodule.val_dataloader())
    temperature = logged["calibration/temperature"]
    assert temperature == pytest.approx(grid_search_temperature(validation.logits, validation.targets), rel=2e-3)
    assert temperature == pytest.approx(scaling.temperature)

    test = collect_outputs(model, datamodule.test_dataloader())
    y = test.targets.numpy()
    for prefix, scale in (("test/", 1.0), ("test/calibrated/", temperature)):
        probs = softmax(test.logits.double().numpy() / scale)
        expected_ece = numpy_bins(probs.max(1), (probs.argmax(1) == y).astype(float))[3]
        assert logged[prefix + "ece"] == pytest.approx(expected_ece, abs=1e-5)
        nll = -np.log(probs[np.arange(len(y)), y]).mean()
        assert logged[prefix + "nll"] == pytest.approx(nll, rel=1e-4)
    # One positive scale keeps every decision; calibration moves only the confidences.
    assert logged["test/calibrated/balanced_acc"] == logged["test/balanced_acc"]

    # The temperature is a buffer: a checkpoint written now carries it, and loads without pickles.
    trainer.save_checkpoint(tmp_path / "calibrated.ckpt")
    state = torch.load(tmp_path / "calibrated.ckpt", weights_only=True)["state_dict"]
    assert float(state["calibration_temperature"]) == pytest.approx(temperature)
    restored = MLPClassifier(64, 10).eval()
    model.eval()  # no dropout in the comparison
    restored.load_state_dict(state)
    x = datamodule.splits["test"].x[:5]
    assert torch.allclose(restored.calibrated_logits(restored(x)), model(x) / temperature, atol=1e-6)


def test_a_checkpoint_from_before_the_posthoc_buffers_still_loads() -> None:
    model = MLPClassifier(64, 10)
    old = {"state_dict": {k: v for k, v in model.state_dict().items() if k != "calibration_temperature"}}
    fresh = MLPClassifier(64, 10)
    fresh.on_load_checkpoint(old)
    fresh.load_state_dict(old["state_dict"])  # strict: the missing buffer was filled in as "not chosen"
    assert torch.isnan(fresh.calibration_temperature)


def test_the_app_records_ece_temperature_and_the_reliability_diagram(train_cfg, tmp_path: Path) -> None:
    train(train_cfg("calibration=temperature", "trainer.max_epochs=2"))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0 < metrics["val/ece"] < 1 and 0 < metrics["test/ece"] < 1
    assert metrics["calibration/temperature"] > 0
    assert {"test/calibrated/ece", "test/calibrated/nll", "test/nll"} <= set(metrics)
    assert metrics["test/calibrated/acc"] == metrics["test/acc"]
    for name in ("test_reliability.png", "test_calibrated_reliability.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:4] == b"\x89PNG"


def test_the_default_run_adds_only_ece_keys(train_cfg, tmp_path: Path) -> None:
    train(train_cfg("trainer.max_epochs=2"))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "val/ece" in metrics and "test/ece" in metrics
    posthoc = [k for k in metrics if k.startswith(("calibration/", "threshold/", "test/calibrated/",
                                                    "test/default_threshold/", "posthoc_tau")) or k.endswith("/nll")]
    assert posthoc == []


def test_under_ddp_ece_and_temperature_cover_every_sample_once(tmp_path: Path) -> None:
    from lit_imbalance.app import build
    from tests.conftest import compose_train, run_train_py

    run_dir = tmp_path / "run"
    overrides = ("strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "logger=none", "trainer.max_epochs=2",
                 "trainer.enable_progress_bar=false", "calibration=temperature", "callbacks.plots=null")
    result = run_train_py(*overrides, run_dir=run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # The tested checkpoint's outputs on the whole splits, in one process: what the two ranks saw together.
    datamodule, model, _ = build(compose_train(["logger=none"], output_dir=tmp_path))
    checkpoint = next((run_dir / "checkpoints").glob("epoch*.ckpt"))
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["state_dict"])
    validation = collect_outputs(model, datamodule.val_dataloader())
    assert metrics["calibration/temperature"] == pytest.approx(
        grid_search_temperature(validation.logits, validation.targets), rel=2e-3)
    test = collect_outputs(model, datamodule.test_dataloader())
    probs = softmax(test.logits.double().numpy())
    expected = numpy_bins(probs.max(1), (probs.argmax(1) == test.targets.numpy()).astype(float))[3]
    assert metrics["test/ece"] == pytest.approx(expected, abs=1e-5)
