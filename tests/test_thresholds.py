"""Decision thresholds against brute force over every candidate (scikit-learn's counts), and tau tuning."""

from __future__ import annotations

import re

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
    chosen = best_f1_threshold(scores, targets, rule="argmax")
    assert f1_score(targets.numpy(), (scores.numpy() > chosen).astype(int)) == pytest.approx(best_f1, abs=1e-12)
    assert best_f1 > f1_score(targets.numpy(), (scores.numpy() > 0.5).astype(int))  # 0.5 is a poor cut here


def test_one_se_f1_threshold_is_the_middle_of_the_near_best_plateau(scored) -> None:
    scores, targets = scored
    y = targets.numpy()
    candidates = candidate_thresholds(scores).numpy()
    f1 = np.array([f1_score(y, (scores.numpy() > t).astype(int), zero_division=0) for t in candidates])
    tolerance = np.sqrt(f1.max() * (1 - f1.max()) / y.sum())
    near_best = candidates[f1 >= f1.max() - tolerance - 1e-12]
    # torch's median of an even count is the lower middle value.
    expected = np.sort(near_best)[(len(near_best) - 1) // 2]
    chosen = best_f1_threshold(scores, targets)
    assert chosen == pytest.approx(float(expected), abs=1e-12)
    assert f1_score(y, (scores.numpy() > chosen).astype(int)) >= f1.max() - tolerance - 1e-12


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


# --- through the app --------------------------------------------------------------------------

import json  # noqa: E402
from pathlib import Path  # noqa: E402

from lit_imbalance.app import build, train  # noqa: E402
from lit_imbalance.models import MLPClassifier  # noqa: E402
from lit_imbalance.outputs import collect_outputs  # noqa: E402
from tests.conftest import FAST, run_train_py  # noqa: E402
from tests.test_mixin import single_thread  # noqa: E402, F401  (autouse fixture)

# A one-logit model trained with plain BCE (sigmoid focal loss with gamma 0 and no alpha).
BINARY = ("model.task=binary", "loss=sigmoid_focal", "loss.gamma=0", "loss.alpha=null")


def write_binary_npz(path: Path, seed: int = 0) -> Path:
    """5% positives, shifted on two of eight features; validation and test drawn like training."""
    rng = np.random.default_rng(seed)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = (rng.random(n) < 0.05).astype(np.int64)
        x = rng.normal(size=(n, 8)).astype(np.float32)
        x[:, :2] += 1.6 * y[:, None]
        return x, y

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = split(3000), split(3000), split(3000)
    np.savez(path, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test)
    return path


def test_binary_threshold_through_the_app_is_recorded_and_applied(train_cfg, tmp_path: Path) -> None:
    data = write_binary_npz(tmp_path / "binary.npz")
    overrides = ("data=npz", f"data.path={data}", *BINARY, "threshold=f1", "trainer.max_epochs=2")
    cfg = train_cfg(*overrides)
    train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    threshold = metrics["threshold/value"]
    assert 0 < threshold < 0.5  # two epochs from the 5% prior: 0.5 is far too high a cut
    assert metrics["test/f1"] >= metrics["test/default_threshold/f1"]

    # Independently: the tested (best) checkpoint's outputs, cut by hand.
    datamodule, model, _ = build(cfg)
    checkpoint = next((tmp_path / "checkpoints").glob("epoch*.ckpt"))
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["state_dict"])
    datamodule.setup("fit")
    val = collect_outputs(model, datamodule.val_dataloader())
    val_scores, val_y = val.logits.reshape(-1).sigmoid(), val.targets
    assert threshold == pytest.approx(best_f1_threshold(val_scores, val_y), abs=1e-6)
    # On validation, where it was chosen, the tuned cut is at least as good as 0.5 by construction.
    assert f1_score(val_y, val_scores > threshold) >= f1_score(val_y, val_scores > 0.5)
    datamodule.setup("test")
    test = collect_outputs(model, datamodule.test_dataloader())
    test_scores, test_y = test.logits.reshape(-1).sigmoid(), test.targets
    assert metrics["test/f1"] == pytest.approx(f1_score(test_y, test_scores > threshold), abs=1e-5)
    assert metrics["test/default_threshold/f1"] == pytest.approx(f1_score(test_y, test_scores > 0.5), abs=1e-5)
    assert metrics["test/precision"] == pytest.approx(precision_score(test_y, test_scores > threshold), abs=1e-5)


@pytest.mark.parametrize(("group", "expected"), [("recall_at_precision", "min_precision"), ("cost", "cost_matrix")])
def test_the_other_threshold_criteria_run_through_the_app(train_cfg, tmp_path: Path, group: str, expected: str) -> None:
    data = write_binary_npz(tmp_path / "binary.npz", seed=1)
    cfg = train_cfg("data=npz", f"data.path={data}", *BINARY, f"threshold={group}", "trainer.max_epochs=2")
    assert expected in cfg.threshold
    train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    if group == "recall_at_precision":  # precision 0.5 was asked for on validation; the test is near it
        assert metrics["test/precision"] > 0.3
    else:  # a miss costs five false alarms: the cut is below the error-rate optimum of 0.5
        assert metrics["threshold/value"] < 0.5
    assert metrics["test/recall/1"] >= metrics["test/default_threshold/recall/1"]


def test_multilabel_thresholds_are_per_label() -> None:
    model = MLPClassifier(4, 3, task="multilabel", class_names=["a", "b", "c"])
    model.set_decision_threshold([0.2, 0.5, 0.9])
    logits = torch.logit(torch.tensor([[0.3, 0.6, 0.8], [0.1, 0.4, 0.95]]))
    assert model.predict_labels(logits).tolist() == [[1, 1, 0], [0, 0, 1]]
    assert model._posthoc_values()["threshold/c"].item() == pytest.approx(0.9)


def test_binary_predict_step_decides_at_the_chosen_threshold() -> None:
    model = MLPClassifier(8, 2, task="binary").eval()
    x = torch.randn(64, 8)
    probs = model(x).detach().reshape(-1).sigmoid()
    cut = float(probs.median())
    assert model.predict_step(x, 0).tolist() == (probs > 0.5).long().tolist()  # nothing chosen yet: 0.5
    model.set_decision_threshold(cut)
    assert model.predict_step(x, 0).tolist() == (probs > cut).long().tolist()
    assert int(model.predict_step(x, 0).sum()) == 32


def test_a_threshold_for_a_multiclass_task_fails_before_training(tmp_path: Path) -> None:
    result = run_train_py("threshold=f1", *FAST, run_dir=tmp_path / "run")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "`threshold`" in lines[0] and "multiclass" in lines[0] and "'f1'" in lines[0]
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "run").glob("checkpoints/*.ckpt"))  # nothing trained


@pytest.mark.parametrize(("value", "message"), [("often", "`posthoc_tau` to be a non-negative float, 'tune' or None"),
                                                 ("tune", "('tune' is for multiclass")])
def test_bad_posthoc_tau_strings_fail_in_one_line(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        MLPClassifier(8, 2, task="binary" if value == "tune" else "multiclass", posthoc_tau=value)


def test_posthoc_tau_tune_chooses_on_validation_and_is_used_for_adjusted_test_metrics(train_cfg, tmp_path: Path) -> None:
    cfg = train_cfg("model.posthoc_tau=tune", "trainer.max_epochs=3")
    train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    tau = round(metrics["posthoc_tau"], 6)  # logged as a float32
    assert tau in [round(0.1 * i, 1) for i in range(21)]
    assert "test/adjusted/balanced_acc" in metrics and not any(k.startswith("val/adjusted/") for k in metrics)

    datamodule, model, _ = build(cfg)
    state = torch.load(next((tmp_path / "checkpoints").glob("epoch*.ckpt")), weights_only=True)["state_dict"]
    model.load_state_dict(state)
    val = collect_outputs(model, datamodule.val_dataloader())
    log_prior = model.imbalance_prior_logits()
    grid = [round(0.1 * i, 1) for i in range(21)]
    by_hand = [balanced_accuracy_score(val.targets, (val.logits - t * log_prior).argmax(1)) for t in grid]
    assert tau == grid[int(np.argmax(by_hand))]
    test = collect_outputs(model, datamodule.test_dataloader())
    adjusted = (test.logits - tau * log_prior).argmax(1)
    assert metrics["test/adjusted/balanced_acc"] == pytest.approx(balanced_accuracy_score(test.targets, adjusted), abs=1e-6)
