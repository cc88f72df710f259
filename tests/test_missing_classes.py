"""Classes absent from training or from an evaluation split are reported, and their recall is null, not 0."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lit_imbalance.metrics import ImbalanceMetrics
from tests.conftest import run_train_py


def test_zero_support_recall_is_nan_and_balanced_acc_is_the_mean_of_the_others() -> None:
    metrics = ImbalanceMetrics(3)
    metrics.update(torch.tensor([0, 0, 1, 1, 2]), torch.tensor([0, 1, 1, 1, 0]))  # no sample of class 2
    values = metrics.compute()
    assert math.isnan(values["recall/2"]) and values["support/2"] == 0
    recalls = [values[f"recall/{c}"].item() for c in range(3) if not math.isnan(values[f"recall/{c}"])]
    assert values["balanced_acc"].item() == pytest.approx(np.mean(recalls)) == pytest.approx((0.5 + 2 / 3) / 2)
    assert metrics.summary().classes_without_support() == ["2"]


def test_a_class_missing_from_training_is_warned_about_and_recorded(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y_train = np.repeat([0, 1], 30)  # class 2 only at test time
    y_test = np.repeat([0, 1, 2], 10)
    data = tmp_path / "missing.npz"
    np.savez(data, x_train=rng.normal(size=(60, 4)), y_train=y_train, x_test=rng.normal(size=(30, 4)), y_test=y_test,
             x_val=rng.normal(size=(6, 4)), y_val=np.repeat([0, 1], 3))
    run_dir = tmp_path / "run"
    result = run_train_py("data=npz", f"data.path={data}", "data.num_classes=3", "logger=none",
                          "trainer.max_epochs=2", "callbacks.plots=null", run_dir=run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 of 3 classes have no training sample: ['2']" in result.stdout + result.stderr
    assert "no training sample" in (run_dir / "train.log").read_text()
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["classes_absent_from_train"] == ["2"]
    assert record["val/classes_without_support"] == ["2"] and record["test/classes_without_support"] == []
    assert record["val/recall/2"] is None  # null, not 0.0
    assert record["test/recall/2"] == 0.0  # present at test time, never predicted
