"""experiment=auto: hold-out selection among config patches, then a refit on every sample, through the real app."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from lit_imbalance.app import train
from lit_imbalance.auto import choose, holdout_config

COUNTS = [40, 12, 6]


@pytest.fixture
def clusters(tmp_path: Path) -> Path:
    """Three well-separated, long-tailed Gaussian clusters in 5 dimensions."""
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=4.0, size=(3, 5))
    y_train, y_test = np.repeat(np.arange(3), COUNTS), np.repeat(np.arange(3), 8)
    path = tmp_path / "clusters.npz"
    np.savez(path, x_train=(centers[y_train] + rng.normal(size=(y_train.size, 5))).astype(np.float32), y_train=y_train,
             x_test=(centers[y_test] + rng.normal(size=(y_test.size, 5))).astype(np.float32), y_test=y_test)
    return path


def auto_cfg(train_cfg, data: Path, *overrides: str):
    # A learning rate of 1e-9 leaves the "frozen" candidate at its random start: it must lose.
    return train_cfg("experiment=auto", "data=npz", f"data.path={data}", "callbacks.minimum_steps.min_steps=30",
                     "model.optimizer.lr=0.01", "auto.holdouts=2",
                     "~auto.candidates.without_mixup", "~auto.candidates.epochs_only",
                     "+auto.candidates.frozen={model: {optimizer: {lr: 1.0e-9}}}", *overrides)


def test_best_mean_wins_and_an_exact_tie_goes_to_the_first_listed() -> None:
    assert choose({"a": [0.5, 0.9], "b": [0.8, 0.7]})[0] == "b"
    assert choose({"a": [0.7, 0.8], "b": [0.8, 0.7]})[0] == "a"


def test_auto_refits_the_pick_on_every_sample_and_records_each_hold_out(train_cfg, clusters: Path,
                                                                           tmp_path: Path) -> None:
    objective = train(auto_cfg(train_cfg, clusters))
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["auto/picked"] == "longtail_recipe" and record["auto/holdouts"] == 2
    assert record["train_class_counts"] == COUNTS  # the refit holds nothing out
    for name in ("frozen", "longtail_recipe"):
        scores = []
        for repeat in range(2):
            holdout = json.loads((tmp_path / "auto" / name / f"holdout{repeat}" / "metrics.json").read_text())
            assert holdout["train_class_counts"] == [32, 10, 5]  # round(20%) of each class held out
            assert "test/balanced_acc" not in holdout  # hold-out fits are never tested
            scores.append(holdout["val/balanced_acc"])
            assert record[f"auto/val/{name}/{repeat}"] == holdout["val/balanced_acc"]
        assert record[f"auto/val/{name}"] == pytest.approx(np.mean(scores))
    assert objective == record["objective"] == pytest.approx(record["auto/val/longtail_recipe"])
    assert record["auto/val/longtail_recipe"] > record["auto/val/frozen"]
    assert record["test/balanced_acc"] > 0.9  # the refit learned the clusters


def test_holdouts_draw_new_splits_and_seeds_only_where_the_data_hold_validation_out(train_cfg, clusters: Path,
                                                                                   tmp_path: Path) -> None:
    npz = auto_cfg(train_cfg, clusters)
    second = holdout_config(npz, {}, repeat=1, fraction=0.2, output_dir=tmp_path / "h")
    assert (second.data.val_fraction, second.data.split_seed, second.seed) == (0.2, npz.data.split_seed + 1, npz.seed + 1)
    assert second.auto is None and second.run_test is False and second.callbacks.model_checkpoint.monitor is None
    digits = train_cfg("experiment=auto")  # digits have a validation split of their own, drawn by split_seed
    assert holdout_config(digits, {}, 1, 0.2, tmp_path / "d").data.split_seed == digits.data.split_seed
    resumed = npz.copy()
    resumed.ckpt_path = str(tmp_path / "refit.ckpt")  # resumes the refit, never a hold-out fit on another split
    assert holdout_config(resumed, {}, 0, 0.2, tmp_path / "r").ckpt_path is None


def test_a_spent_time_budget_compares_the_candidates_on_the_rounds_done(train_cfg, clusters: Path, tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="lit_imbalance.auto"):
        train(auto_cfg(train_cfg, clusters, "auto.holdouts=3", "auto.time_budget_s=0.001"))
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["auto/holdouts"] == 1 and "auto/val/frozen/1" not in record
    assert "time budget" in caplog.text and not (tmp_path / "auto" / "longtail_recipe" / "holdout1").exists()


@pytest.mark.parametrize(("override", "message"), [
    ("auto.holdouts=0", r"`auto\.holdouts`.*0"),
    ("auto.holdout_fraction=0", r"`auto\.holdout_fraction`.*0"),
    ("auto.holdout_fraction=1.5", r"`auto\.holdout_fraction`.*1\.5"),
    ("auto.time_budget_s=-1", r"`auto\.time_budget_s`.*-1"),
    ("~auto.candidates", r"`auto\.candidates`.*None"),
    ("+auto.candidates.typo={modle: {hidden_sizes: []}}", r"`auto\.candidates\.typo`.*modle"),
    ("trainer.devices=2", r"`trainer\.devices`.*2"),
])
def test_bad_auto_settings_fail_in_one_line_before_anything_trains(train_cfg, clusters: Path, tmp_path: Path,
                                                                   override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        train(auto_cfg(train_cfg, clusters, override))
    assert not (tmp_path / "auto").exists() and not (tmp_path / "metrics.json").exists()


def test_auto_keeps_the_mixup_alpha_and_dropout_its_candidates_were_chosen_with(train_cfg) -> None:
    # The recipe moved to alpha 0.2 and dropout 0.5 after auto's candidates were chosen and measured
    # with alpha 0.4 and no dropout.
    recipe, auto = train_cfg("experiment=longtail_recipe"), train_cfg("experiment=auto")
    assert (recipe.mixup.alpha, recipe.model.dropout) == (0.2, 0.5)
    assert (auto.mixup.alpha, auto.model.dropout) == (0.4, 0.0)
