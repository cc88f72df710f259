"""Log prior and logit adjustment: one helper for the losses and for post-hoc adjustment."""

from __future__ import annotations

import math

import pytest
import torch

from lit_imbalance.losses import BalancedSoftmaxLoss, LogitAdjustedLoss, logit_adjusted
from lit_imbalance.priors import adjust_logits, log_prior, positive_class_counts, posthoc_logit_adjustment

COUNTS = [60, 30, 10]


def test_log_prior_is_log_of_the_frequencies() -> None:
    assert log_prior(COUNTS).tolist() == pytest.approx([math.log(n / 100) for n in COUNTS], abs=1e-6)
    assert log_prior(torch.tensor(COUNTS)).dtype == torch.float32


def test_empty_class_is_an_error_not_minus_infinity() -> None:
    with pytest.raises(ValueError, match=r"`class_counts` to be at least one sample in every class.*\[60.0, 0.0\]"):
        log_prior([60, 0])
    with pytest.raises(ValueError, match="margin is big"):
        positive_class_counts([1, 0], reason="the margin is big")


def test_adjust_logits_shifts_along_the_class_dimension() -> None:
    logits = torch.zeros(2, 3, 4, 5)
    shifted = adjust_logits(logits, log_prior(COUNTS), tau=2.0)
    for c, n in enumerate(COUNTS):
        assert torch.allclose(shifted[:, c], torch.full((2, 4, 5), 2 * math.log(n / 100)))
    assert adjust_logits(logits.half(), log_prior(COUNTS)).dtype == torch.float16


def test_adjust_logits_checks_the_prior_length() -> None:
    with pytest.raises(ValueError, match=r"`log_prior` to be a tensor of shape \(C,\) .*, but got 'shape \(3,\)'"):
        adjust_logits(torch.zeros(4, 2), log_prior(COUNTS))


def test_posthoc_adjustment_subtracts_tau_log_prior() -> None:
    logits = torch.randn(5, 3)
    expected = logits - 0.5 * torch.log(torch.tensor(COUNTS) / 100.0)
    torch.testing.assert_close(posthoc_logit_adjustment(logits, COUNTS, tau=0.5), expected)
    torch.testing.assert_close(posthoc_logit_adjustment(logits, COUNTS, tau=0.0), logits)


def test_posthoc_adjustment_undoes_the_training_adjustment() -> None:
    logits = torch.randn(5, 3)
    prior = log_prior(COUNTS)
    torch.testing.assert_close(posthoc_logit_adjustment(adjust_logits(logits, prior, 1.3), COUNTS, 1.3), logits)


def test_balanced_softmax_and_logit_adjusted_share_the_helper(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def spy(logits, prior, tau=1.0):
        calls.append(tau)
        return adjust_logits(logits, prior, tau)

    monkeypatch.setattr(logit_adjusted, "adjust_logits", spy)
    logits, target = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    BalancedSoftmaxLoss(COUNTS)(logits, target)
    LogitAdjustedLoss(COUNTS, tau=0.7)(logits, target)
    assert calls == [1.0, 0.7]
