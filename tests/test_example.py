"""The existing-project example: an ordinary Lightning project plus the mixin trains and measures."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import lightning as L
import pytest

from tests.test_mixin import single_thread  # noqa: F401  (autouse fixture)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "existing_project" / "fraud_detection.py"


def load_example():
    spec = importlib.util.spec_from_file_location("fraud_detection_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fraud_example_learns_and_reports_imbalance_metrics() -> None:
    example = load_example()
    metrics = example.main(max_epochs=6, enable_progress_bar=False, enable_model_summary=False)
    assert metrics["test/support/fraud"] == 36 and metrics["test/support/legit"] == 1164
    # Chance is 0.5 AUROC, 0.03 average precision (the fraud rate) and 0.5 balanced accuracy.
    assert metrics["test/auroc"] > 0.9
    assert metrics["test/average_precision"] > 0.5
    assert metrics["test/balanced_acc"] > 0.7
    # Moving the threshold to the prior (tau=1) can only flag more transactions as fraud.
    assert metrics["test/adjusted/recall/fraud"] >= metrics["test/recall/fraud"]
    assert metrics["test/adjusted/auroc"] == metrics["test/auroc"]  # a shift of every logit keeps the ranking


def test_fraud_example_tunes_the_threshold_on_validation_and_gains_test_f1() -> None:
    example = load_example()
    tuned = example.main(max_epochs=6, enable_progress_bar=False, enable_model_summary=False)
    threshold = tuned["threshold/value"]
    assert 0.0 < threshold < 1.0 and threshold != pytest.approx(0.5, abs=1e-3)
    # test/* are at the chosen threshold, test/default_threshold/* at 0.5: the same run without
    # the callback has exactly the 0.5 numbers, so the comparison is within one model.
    plain = example.main(max_epochs=6, threshold=None, enable_progress_bar=False, enable_model_summary=False)
    assert tuned["test/default_threshold/f1"] == pytest.approx(plain["test/f1"], abs=1e-6)
    assert "threshold/value" not in plain and "test/default_threshold/f1" not in plain
    assert tuned["test/f1"] > tuned["test/default_threshold/f1"]  # measured: 0.697 against 0.640
    assert tuned["test/auroc"] == tuned["test/default_threshold/auroc"]  # a threshold does not change the ranking


def test_the_mixin_found_the_counts_in_the_projects_own_datamodule() -> None:
    example = load_example()
    datamodule, model = example.TransactionsDataModule(), example.FraudClassifier()
    L.Trainer(max_epochs=0, logger=False, enable_progress_bar=False, enable_model_summary=False).fit(model, datamodule)
    # `train_set` is not a name the mixin knows: the counts come from the loader's dataset.
    labels = datamodule.train_set.tensors[1]
    assert model.class_counts.tolist() == [int((labels == 0).sum()), int((labels == 1).sum())]
    assert model.class_counts.tolist() == [3492, 108]
    fraud_rate = 108 / 3600
    assert float(model.classifier.bias.sigmoid()) == pytest.approx(fraud_rate, abs=1e-6)
