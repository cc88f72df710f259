"""Binary and multi-label metrics against hand counts and scikit-learn."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import average_precision_score, balanced_accuracy_score, f1_score, roc_auc_score

from lit_imbalance.metrics import ImbalanceMetrics


def test_binary_hand_counted_batch_and_ranking_metrics_match_sklearn() -> None:
    # logits of 6 negatives and 4 positives; threshold at logit 0 (probability 0.5)
    logits = torch.tensor([-3.0, -2.0, -1.0, 0.5, 1.5, -0.5, 2.0, 0.3, -0.2, 4.0])
    target = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    metrics = ImbalanceMetrics(2, class_names=["neg", "pos"], task="binary")
    metrics.update(logits[:5].unsqueeze(1), target[:5])  # (N, 1) logits and
    metrics.update(logits[5:], target[5:])  # (N,) logits both accumulate
    values = metrics.compute()
    # negatives: 4 of 6 below 0 -> specificity 4/6; positives: 3 of 4 above 0 -> sensitivity 3/4
    assert values["recall/neg"].item() == pytest.approx(4 / 6)
    assert values["recall/pos"].item() == pytest.approx(3 / 4)
    assert values["balanced_acc"].item() == pytest.approx((4 / 6 + 3 / 4) / 2)
    assert values["acc"].item() == pytest.approx(7 / 10)
    assert [values["support/neg"].item(), values["support/pos"].item()] == [6, 4]
    hard = (logits > 0).long().numpy()
    assert values["macro_f1"].item() == pytest.approx(f1_score(target.numpy(), hard, average="macro"), abs=1e-6)
    assert values["auroc"].item() == pytest.approx(roc_auc_score(target.numpy(), logits.numpy()), abs=1e-6)
    assert values["average_precision"].item() == pytest.approx(
        average_precision_score(target.numpy(), logits.numpy()), abs=1e-6
    )


def test_binary_logits_inside_unit_interval_are_not_read_as_probabilities() -> None:
    # Logits 0.2 and 0.9 are probabilities 0.55 and 0.71: both predict the positive class.
    metrics = ImbalanceMetrics(2, task="binary")
    metrics.update(torch.tensor([0.2, 0.9, -1.0]), torch.tensor([1, 1, 0]))
    assert metrics.compute()["recall/1"].item() == 1.0


def test_multilabel_matches_sklearn() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(300, 4, generator=generator)
    target = (torch.rand(300, 4, generator=generator) < torch.tensor([0.5, 0.2, 0.1, 0.05])).long()
    logits = logits + 1.5 * target  # informative scores
    metrics = ImbalanceMetrics(4, task="multilabel")
    metrics.update(logits[:150], target[:150])
    metrics.update(logits[150:], target[150:])
    values = metrics.compute()
    hard = (logits > 0).long().numpy()
    y = target.numpy()
    for label in range(4):
        positives = y[:, label] == 1
        assert values[f"recall/{label}"].item() == pytest.approx(hard[positives, label].mean(), abs=1e-6)
        assert values[f"support/{label}"].item() == positives.sum()
    expected_balanced = sum(balanced_accuracy_score(y[:, l], hard[:, l]) for l in range(4)) / 4
    assert values["balanced_acc"].item() == pytest.approx(expected_balanced, abs=1e-6)
    assert values["acc"].item() == pytest.approx((hard == y).mean(), abs=1e-6)
    assert values["macro_f1"].item() == pytest.approx(f1_score(y, hard, average="macro"), abs=1e-6)
    assert values["auroc"].item() == pytest.approx(roc_auc_score(y, logits.numpy(), average="macro"), abs=1e-6)
    assert values["average_precision"].item() == pytest.approx(
        average_precision_score(y, logits.numpy(), average="macro"), abs=1e-6
    )


def test_binary_needs_two_classes() -> None:
    with pytest.raises(ValueError, match=r"`num_classes`.*binary.*got 3"):
        ImbalanceMetrics(3, task="binary")
