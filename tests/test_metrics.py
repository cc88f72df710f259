"""Per-class metrics against hand counts and scikit-learn's independent implementations."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score

from lit_imbalance.metrics import ImbalanceMetrics, shot_groups


def test_hand_counted_batch() -> None:
    # true:  0 0 0 0 1 1 2 2 ; pred: 0 0 0 1 1 0 1 1  -> class 2 is never right
    target = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    preds = torch.tensor([0, 0, 0, 1, 1, 0, 1, 1])
    metrics = ImbalanceMetrics(3)
    metrics.update(preds, target)
    values = metrics.compute()
    assert values["recall/0"].item() == pytest.approx(3 / 4)
    assert values["recall/1"].item() == pytest.approx(1 / 2)
    assert values["recall/2"].item() == 0.0
    assert values["balanced_acc"].item() == pytest.approx((3 / 4 + 1 / 2 + 0) / 3)
    assert values["acc"].item() == pytest.approx(4 / 8)
    assert [values[f"support/{c}"].item() for c in range(3)] == [4, 2, 2]


def test_matches_sklearn_on_random_logits() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(400, 7, generator=generator)
    target = torch.randint(0, 7, (400,), generator=generator)
    metrics = ImbalanceMetrics(7)
    for chunk in range(4):  # accumulates across batches
        metrics.update(logits[chunk * 100 : (chunk + 1) * 100], target[chunk * 100 : (chunk + 1) * 100])
    values = metrics.compute()
    preds, target = logits.argmax(1).numpy(), target.numpy()
    assert values["balanced_acc"].item() == pytest.approx(balanced_accuracy_score(target, preds), abs=1e-6)
    assert values["macro_f1"].item() == pytest.approx(f1_score(target, preds, average="macro"), abs=1e-6)
    recalls = recall_score(target, preds, average=None)
    for c in range(7):
        assert values[f"recall/{c}"].item() == pytest.approx(recalls[c], abs=1e-6)
    metrics.reset()
    metrics.update(torch.tensor([0]), torch.tensor([0]))
    assert metrics.compute()["acc"].item() == 1.0


def test_shot_groups_use_training_counts() -> None:
    metrics = ImbalanceMetrics(4, class_names=["a", "b", "c", "d"])
    metrics.set_class_counts(torch.tensor([500, 150, 40, 3]))
    metrics.update(torch.tensor([0, 1, 0, 2, 0]), torch.tensor([0, 1, 2, 2, 3]))
    values = metrics.compute()
    assert values["many_recall"].item() == pytest.approx(1.0)  # a, b
    assert values["medium_recall"].item() == pytest.approx(0.5)  # c: 1 of 2
    assert values["few_recall"].item() == 0.0  # d
    assert "recall/d" in values


def test_shot_group_thresholds_are_validated() -> None:
    with pytest.raises(ValueError, match=r"`few_threshold`.*500"):
        shot_groups(torch.tensor([1, 2]), many_threshold=100, few_threshold=500)
    # At construction, not at the end of the first validation epoch.
    with pytest.raises(ValueError, match=r"`few_threshold` to be at most many_threshold=100, but got 500"):
        ImbalanceMetrics(3, few_threshold=500)
    with pytest.raises(ValueError, match=r"`many_threshold` to be a non-negative integer .*, but got -1"):
        ImbalanceMetrics(3, many_threshold=-1)


def test_class_names_must_match_num_classes() -> None:
    with pytest.raises(ValueError, match=r"`class_names`.*\['a'\]"):
        ImbalanceMetrics(2, class_names=["a"])
