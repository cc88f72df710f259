"""Mixup, remix and label-aware smoothing against their papers' rules; soft targets in the losses."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from lit_imbalance.app import train
from lit_imbalance.criterion import ImbalanceCriterion, check_soft_targets
from lit_imbalance.losses import build_loss
from lit_imbalance.mixing import (
    LabelAwareSmoothing,
    Mixup,
    Remix,
    label_aware_epsilon,
    remix_label_weights,
    smoothed_labels,
)
from lit_imbalance.models import MLPClassifier
from lit_imbalance.schedule import LossWarmup
from tests.conftest import FAST, compose_train

#: Losses for which a mixed label is meaningful: linear in the target distribution.
SOFT_LOSSES = ["ce", "weighted_ce", "class_balanced", "logit_adjusted", "balanced_softmax"]
#: Defined for one true class: a margin, a focal factor, a cost row, truncation, mining.
HARD_ONLY_LOSSES = ["ldam", "focal", "sigmoid_focal", "cost_sensitive", "truncated_ce", "ghm"]
COUNTS = torch.tensor([60, 25, 10, 5])


def remix_rule(lam: float, n_i: int, n_j: int, kappa: float, tau: float) -> float:
    """Chou et al. 2020, Eq. 3, written from the paper."""
    if n_i / n_j >= kappa and lam < tau:
        return 0.0
    if n_i / n_j <= 1 / kappa and 1 - lam < tau:
        return 1.0
    return lam


@pytest.mark.parametrize("lam", [0.1, 0.45, 0.5, 0.55, 0.9])
def test_remix_label_weights_follow_the_papers_rule(lam: float) -> None:
    counts_i = torch.tensor([100, 100, 10, 30, 10, 33])
    counts_j = torch.tensor([10, 40, 100, 10, 10, 11])
    got = remix_label_weights(lam, counts_i, counts_j, kappa=3.0, tau=0.5).tolist()
    expected = [remix_rule(lam, int(a), int(b), 3.0, 0.5) for a, b in zip(counts_i, counts_j)]
    assert got == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(6))
def test_remix_batch_labels_go_to_the_minority_of_an_imbalanced_pair(seed: int) -> None:
    target = torch.tensor([0, 3, 0, 3, 1, 2, 0, 2])
    x = torch.randn(8, 3)
    torch.manual_seed(seed)
    mixed_x, q = Remix(alpha=1.0)(x, target, COUNTS)
    # The same draws, in the same order: lam, then the partners.
    torch.manual_seed(seed)
    lam = float(torch.distributions.Beta(1.0, 1.0).sample())
    partner = torch.randperm(8)
    torch.testing.assert_close(mixed_x, lam * x + (1 - lam) * x[partner])
    for n in range(8):
        weight = remix_rule(lam, int(COUNTS[target[n]]), int(COUNTS[target[partner[n]]]), 3.0, 0.5)
        expected = weight * F.one_hot(target[n], 4) + (1 - weight) * F.one_hot(target[partner[n]], 4)
        torch.testing.assert_close(q[n], expected.float(), atol=1e-6, rtol=0)


def test_mixup_mixes_inputs_and_labels_with_the_same_lambda() -> None:
    x = torch.randn(8, 5)
    target = torch.randint(0, 4, (8,))
    torch.manual_seed(0)
    mixed_x, q = Mixup(alpha=0.4)(x, target, COUNTS)
    assert torch.allclose(q.sum(dim=1), torch.ones(8))
    # The same draws, in the same order: lam, then the partners.
    torch.manual_seed(0)
    lam = float(torch.distributions.Beta(0.4, 0.4).sample())
    permutation = torch.randperm(8)
    torch.testing.assert_close(mixed_x, lam * x + (1 - lam) * x[permutation])
    torch.testing.assert_close(q, lam * F.one_hot(target, 4).float() + (1 - lam) * F.one_hot(target[permutation], 4).float())


def test_label_aware_epsilon_matches_mislas_formulas() -> None:
    counts = np.array([500, 200, 80, 20, 5], dtype=float)
    head, tail = 0.4, 0.1
    r = (counts - counts.min()) / (counts.max() - counts.min())
    expected = {
        "concave": tail + (head - tail) * np.sin(r * np.pi / 2),
        "linear": tail + (head - tail) * r,
        "convex": head + (head - tail) * np.sin(1.5 * np.pi + r * np.pi / 2),
    }
    for shape, values in expected.items():
        got = label_aware_epsilon(torch.tensor(counts), head, tail, shape).numpy()
        np.testing.assert_allclose(got, values, rtol=1e-6)
        assert got[0] == pytest.approx(head) and got[-1] == pytest.approx(tail)


def test_label_aware_smoothing_loss_is_mislas_loss() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(16, 5), torch.randint(0, 5, (16,))
    counts = torch.tensor([500, 200, 80, 20, 5])
    eps = label_aware_epsilon(counts, 0.3, 0.0)
    _, q = LabelAwareSmoothing(0.3, 0.0)(torch.zeros(16, 3), target, counts)
    log_p = F.log_softmax(logits, dim=1)
    smooth = eps[target]
    # MiSLAS: (1 - eps_y) * NLL + eps_y * mean_c(-log p_c)
    expected = ((1 - smooth) * -log_p.gather(1, target[:, None]).squeeze(1) + smooth * -log_p.mean(dim=1)).mean()
    torch.testing.assert_close(build_loss("ce")(logits, q), expected)
    torch.testing.assert_close(q, smoothed_labels(target, eps, 5))


@pytest.mark.parametrize("name", SOFT_LOSSES)
def test_a_mixed_label_gives_the_mix_of_the_two_hard_label_losses(name: str) -> None:
    torch.manual_seed(0)
    loss = build_loss(name)
    if callable(getattr(loss, "set_class_counts", None)):
        loss.set_class_counts(COUNTS)
    logits = torch.randn(12, 4, dtype=torch.float64, requires_grad=True)
    y_i, y_j = torch.randint(0, 4, (12,)), torch.randint(0, 4, (12,))
    lam = torch.rand(12, dtype=torch.float64)
    q = lam[:, None] * F.one_hot(y_i, 4) + (1 - lam[:, None]) * F.one_hot(y_j, 4)
    loss.reduction = "none"
    soft = loss(logits, q.double())
    expected = lam * loss(logits, y_i) + (1 - lam) * loss(logits, y_j)
    torch.testing.assert_close(soft, expected)
    # One-hot soft targets are the hard labels, with the configured reduction too.
    loss.reduction = "mean"
    torch.testing.assert_close(loss(logits, F.one_hot(y_i, 4).double()), loss(logits, y_i))
    assert torch.autograd.gradcheck(lambda z: loss(z, q.double()), (logits,))


def test_drw_schedule_takes_mixed_labels_with_proportional_class_weights() -> None:
    warmup = LossWarmup(epochs=0, reweight="inverse", target=build_loss("ce"))
    warmup.set_class_counts(COUNTS)
    logits = torch.randn(6, 4, dtype=torch.float64)
    y_i, y_j = torch.randint(0, 4, (6,)), torch.randint(0, 4, (6,))
    q = 0.3 * F.one_hot(y_i, 4).double() + 0.7 * F.one_hot(y_j, 4).double()
    w = warmup.target.class_weight.double()
    per_i = F.cross_entropy(logits, y_i, reduction="none")
    per_j = F.cross_entropy(logits, y_j, reduction="none")
    # The two re-weighted hard-label losses, mixed, over the mixed weights (the weighted mean).
    mixed = 0.3 * w[y_i] * per_i + 0.7 * w[y_j] * per_j
    torch.testing.assert_close(warmup(logits, q), mixed.sum() / (0.3 * w[y_i] + 0.7 * w[y_j]).sum())


@pytest.mark.parametrize("name", HARD_ONLY_LOSSES)
def test_losses_defined_for_one_true_class_are_refused_before_training(name: str) -> None:
    with pytest.raises(ValueError, match=r"`mixup`.*soft .*targets"):
        check_soft_targets(ImbalanceCriterion(build_loss(name), 4), "mixup")
    with pytest.raises(ValueError, match="mixup"):
        MLPClassifier(input_dim=8, num_classes=4, loss=build_loss(name), mixup=Mixup())


def test_remix_and_smoothing_refuse_binary_tasks_and_mixup_accepts_them() -> None:
    with pytest.raises(ValueError, match=r"`mixup`.*binary"):
        MLPClassifier(input_dim=8, num_classes=2, task="binary", mixup=Remix())
    model = MLPClassifier(input_dim=8, num_classes=2, task="binary", mixup=Mixup())
    x, q = model.mix_batch(torch.randn(4, 8), torch.tensor([0, 1, 1, 0]))
    assert q.dtype == torch.float32 and bool(((q >= 0) & (q <= 1)).all())


def test_bad_mixup_settings_name_the_key() -> None:
    with pytest.raises(ValueError, match=r"mixup\.alpha.*-1"):
        Mixup(alpha=-1.0)
    with pytest.raises(ValueError, match=r"mixup\.tau.*2"):
        Remix(tau=2.0)


@pytest.mark.parametrize("option", ["mixup", "remix", "label_aware_smoothing"])
def test_each_mixup_option_instantiates_and_trains_through_train_py(option: str, train_cfg, tmp_path: Path) -> None:
    cfg = train_cfg(f"mixup={option}")
    assert type(instantiate(cfg.mixup)).__name__ == {"mixup": "Mixup", "remix": "Remix",
                                                     "label_aware_smoothing": "LabelAwareSmoothing"}[option]
    train(cfg)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "finished" and math.isfinite(record["train/loss_epoch"])
    # The batches were transformed: the same run without the group trains on another loss.
    plain_dir = tmp_path / "plain"
    train(compose_train([*FAST, "mixup=none"], output_dir=plain_dir))
    plain = json.loads((plain_dir / "metrics.json").read_text())
    assert record["train/loss_epoch"] != pytest.approx(plain["train/loss_epoch"], rel=1e-6)
    assert record["test/balanced_acc"] is not None and 0.0 <= record["test/ece"] <= 1.0


def test_mixup_none_is_the_default() -> None:
    assert compose_train([]).mixup is None
