"""Decision thresholds against brute force over every candidate (scikit-learn's counts), and tau tuning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score, precision_score, recall_score

from lit_imbalance.priors import tune_posthoc_tau
from lit_imbalance.thresholds import (
    best_f1_threshold,
    candidate_thresholds,
    choose_threshold,
    min_cost_threshold,
    recall_at_precision_threshold,
)


@pytest.fixture(params=[0, 1, 2])
def scored(request) -> tuple[torch.Tensor, torch.Tensor]:
    """Imbalanced validation scores (8% positives) with ties, as rounded probabilities have."""
    rng = np.random.default_rng(request.param)
    targets = (rng.random(500) < 0.08).astype(int)
    scores = 1 / (1 + np.exp(-(rng.normal(size=500) + 2.0 * targets - 2.5)))
    return torch.tensor(np.round(scores, 3)), torch.tensor(targets)


def brute_force(scores: torch.Tensor, targets: torch.Tensor, score) -> tuple[float, float]:
    """The best ``score(y_true, y_pred)`` over every candidate threshold (predict ``score > t``), and its threshold."""
    y = targets.numpy()
    results = [(score(y, (scores.numpy() > t).astype(int)), t) for t in candidate_thresholds(scores).tolist()]
    return max(results)


def test_best_f1_threshold_reaches_the_brute_force_f1(scored) -> None:
    scores, targets = scored
    best_f1, _ = brute_force(scores, targets, lambda y, p: f1_score(y, p, zero_division=0))
    chosen = best_f1_threshold(scores, targets)
    assert f1_score(targets.numpy(), (scores.numpy() > chosen).astype(int)) == pytest.approx(best_f1, abs=1e-12)
    assert best_f1 > f1_score(targets.numpy(), (scores.numpy() > 0.5).astype(int))  # 0.5 is a poor cut here


def test_candidates_are_every_decision_with_the_widest_margin() -> None:
    scores = torch.tensor([0.3, 0.1, 0.3, 0.7])
    candidates = candidate_thresholds(scores)
    assert candidates.tolist() == pytest.approx([0.05, 0.2, 0.5, 1.0])
    decisions = {tuple((scores > t).tolist()) for t in np.linspace(0, 1, 1001)}
    assert decisions == {tuple((scores > t).tolist()) for t in candidates}  # no decision is missed


@pytest.mark.parametrize("min_precision", [0.3, 0.5, 0.8])
def test_recall_at_precision_is_the_best_recall_meeting_the_precision(scored, min_precision: float) -> None:
    scores, targets = scored
    y = targets.numpy()

    def recall_if_precise(y_true, y_pred):
        if y_pred.sum() == 0 or precision_score(y_true, y_pred) < min_precision:
            return -1.0
        return recall_score(y_true, y_pred)

    best_recall, _ = brute_force(scores, targets, recall_if_precise)
    chosen = recall_at_precision_threshold(scores, targets, min_precision)
    predicted = (scores.numpy() > chosen).astype(int)
    if best_recall >= 0:
        assert precision_score(y, predicted) >= min_precision
        assert recall_score(y, predicted) == pytest.approx(best_recall, abs=1e-12)
    else:  # unreachable: the most precise threshold
        best_precision, _ = brute_force(scores, targets, lambda t, p: precision_score(t, p, zero_division=0))
        assert precision_score(y, predicted, zero_division=0) == pytest.approx(best_precision)


def test_an_unreachable_precision_falls_back_to_the_most_precise_threshold(caplog) -> None:
    # The top score is a negative: flagging 1, 2, 3, 4 samples has precision 0, 1/2, 2/3, 1/2.
    scores, targets = torch.tensor([0.9, 0.8, 0.7, 0.2]), torch.tensor([0, 1, 1, 0])
    assert recall_at_precision_threshold(scores, targets, 1.0) == pytest.approx(0.45)  # the 2/3 cut
    assert "No threshold reaches precision 1.0" in caplog.text
    # Flagging 3 or all 4 both find every positive: the higher cut, fewer flagged, wins.
    assert recall_at_precision_threshold(scores, targets, 0.5) == pytest.approx(0.45)


@pytest.mark.parametrize("costs", [[[0, 1], [1, 0]], [[0, 1], [20, 0]], [[0, 5], [1, 0]], [[-1, 2], [8, -3]]])
def test_min_cost_threshold_has_the_brute_force_cost(scored, costs) -> None:
    scores, targets = scored
    matrix = np.asarray(costs, dtype=float)

    def negative_cost(y_true, y_pred):
        return -float((confusion_matrix(y_true, y_pred, labels=[0, 1]) * matrix).sum())

    best, _ = brute_force(scores, targets, negative_cost)
    chosen = min_cost_threshold(scores, targets, costs)
    assert negative_cost(targets.numpy(), (scores.numpy() > chosen).astype(int)) == pytest.approx(best)


def test_dearer_misses_lower_the_threshold(scored) -> None:
    scores, targets = scored
    assert min_cost_threshold(scores, targets, [[0, 1], [50, 0]]) <= min_cost_threshold(scores, targets, [[0, 1], [2, 0]])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s, t: min_cost_threshold(s, t, [[0, 1, 2], [1, 0, 3]]), "`cost_matrix` to be a 2x2 matrix"),
        (lambda s, t: recall_at_precision_threshold(s, t, 1.5), "`min_precision` to be a float in [0, 1]"),
        (lambda s, t: choose_threshold("youden", s, t), "`method` to be one of 'none', 'f1'"),
        (lambda s, t: choose_threshold("recall_at_precision", s, t), "`min_precision` to be a float"),
        (lambda s, t: best_f1_threshold(s, t + 2), "`targets` to be 0/1 labels"),
    ],
)
def test_bad_arguments_fail_in_one_line(call, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        call(torch.tensor([0.1, 0.9]), torch.tensor([0, 1]))


def test_ignored_labels_take_no_part() -> None:
    scores, targets = torch.tensor([0.1, 0.4, 0.6, 0.95]), torch.tensor([0, 1, -100, 1])
    assert best_f1_threshold(scores, targets) == best_f1_threshold(scores[[0, 1, 3]], targets[[0, 1, 3]])


def test_tuned_tau_has_the_best_balanced_accuracy_of_the_grid() -> None:
    generator = torch.Generator().manual_seed(0)
    counts = torch.tensor([500, 100, 20])
    targets = torch.randint(0, 3, (900,), generator=generator)
    # A model that learnt the training prior: its logits carry log pi on top of the evidence.
    log_prior = (counts / counts.sum()).log()
    logits = 1.5 * torch.nn.functional.one_hot(targets, 3) + torch.randn(900, 3, generator=generator) + log_prior
    grid = [round(0.1 * i, 1) for i in range(21)]
    tau, scores = tune_posthoc_tau(logits, targets, log_prior, grid)
    by_hand = [balanced_accuracy_score(targets, (logits - t * log_prior).argmax(1)) for t in grid]
    assert scores == pytest.approx(by_hand, abs=1e-6)
    assert tau == grid[int(np.argmax(by_hand))] and tau > 0.5  # the prior it learnt is taken back out
