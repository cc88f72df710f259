"""End-to-end runs of the Hydra app: real Trainer fits, real metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lit_imbalance.app import train
from tests.conftest import ROOT, compose_train, run_train_py


def read_metrics(directory: Path) -> dict:
    return json.loads((directory / "metrics.json").read_text())


def test_default_config_fits_and_writes_metrics_json(train_cfg, tmp_path: Path) -> None:
    objective = train(train_cfg("trainer.max_epochs=2"))
    metrics = read_metrics(tmp_path)
    names = [str(c) for c in range(10)]
    for key in ["test/acc", "test/balanced_acc", "test/macro_f1", *(f"test/recall/{c}" for c in names)]:
        assert 0.0 <= metrics[key] <= 1.0, key
    recalls = [metrics[f"test/recall/{c}"] for c in names]
    assert metrics["test/balanced_acc"] == pytest.approx(np.mean(recalls), abs=1e-6)
    assert sum(metrics[f"test/support/{c}"] for c in names) == 500
    assert metrics["train_class_counts"] == [104, 67, 43, 28, 18, 11, 7, 4, 3, 2]
    assert metrics["status"] == "finished"
    assert objective == pytest.approx(metrics["best/val/balanced_acc"])
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_class_never_seen_in_training_has_zero_recall(train_cfg, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    centers = np.eye(3, 5) * 4
    y_train, y_test = np.repeat([0, 1], [80, 20]), np.repeat([0, 1, 2], 15)
    np.savez(
        tmp_path / "d.npz",
        x_train=(centers[y_train] + rng.normal(size=(100, 5))).astype(np.float32), y_train=y_train,
        x_test=(centers[y_test] + rng.normal(size=(45, 5))).astype(np.float32), y_test=y_test,
    )
    train(train_cfg("data=npz", f"data.path={tmp_path / 'd.npz'}", "data.num_classes=3", "trainer.max_epochs=5"))
    metrics = read_metrics(tmp_path)
    assert metrics["test/recall/2"] == 0.0
    assert metrics["test/support/2"] == 15
    assert metrics["train_class_counts"][2] == 0
    assert metrics["test/balanced_acc"] == pytest.approx(np.mean([metrics[f"test/recall/{c}"] for c in "012"]))
    assert metrics["test/recall/0"] > 0.5


def test_same_seed_same_result(train_cfg, tmp_path: Path) -> None:
    first = train(train_cfg("seed=7", "trainer.max_epochs=2", "run_test=false"))
    second = train(train_cfg("seed=7", "trainer.max_epochs=2", "run_test=false"))
    assert first == second


def test_train_py_subprocess_with_overrides(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_train_py(
        "logger=csv", "trainer.max_epochs=2", "data.imbalance_ratio=10", "seed=3", run_dir=run_dir
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_metrics(run_dir)
    assert metrics["train_class_counts"] == [104, 80, 62, 48, 37, 28, 22, 17, 13, 10]
    assert "test/balanced_acc" in metrics
    csv_files = list(run_dir.glob("csv/version_*/metrics.csv"))
    assert csv_files and "val/balanced_acc" in csv_files[0].read_text().splitlines()[0]
    assert (run_dir / ".hydra" / "overrides.yaml").read_text().count("data.imbalance_ratio=10") == 1


def test_train_py_reports_bad_data_path_by_key(tmp_path: Path) -> None:
    result = run_train_py("data=npz", "data.path=/nonexistent/x.npz", "logger=none", run_dir=tmp_path / "run")
    assert result.returncode != 0
    assert "full_key: data" in result.stderr and "/nonexistent/x.npz" in result.stderr


def test_metrics_json_records_what_the_sampler_shows_per_class(train_cfg, tmp_path: Path) -> None:
    train(train_cfg("sampler=class_aware", "run_test=false"))
    metrics = read_metrics(tmp_path)
    expected = metrics["sampler_expected_class_counts"]
    assert sum(metrics["train_class_counts"]) == 287
    assert expected == pytest.approx([28.7] * 10)  # 287 draws spread evenly over 10 classes


@pytest.mark.parametrize("method", sorted(p.stem for p in (ROOT / "conf" / "method").glob("*.yaml")))
def test_method_presets_override_the_defaults(method: str) -> None:
    cfg = compose_train([f"method={method}"])
    assert cfg.loss._target_.startswith("lit_imbalance.losses.")
    if method == "posthoc_la":
        # A preset's top-level keys beat train.yaml's own, the command line beats both.
        assert cfg.optimized_metric == "val/adjusted/balanced_acc" and cfg.model.posthoc_tau == 1.0
        assert compose_train([f"method={method}", "optimized_metric=val/acc"]).optimized_metric == "val/acc"
    if method == "ldam_drw":
        assert cfg.loss._target_.endswith("LDAMLoss") and cfg.warmup.reweight == "effective"
        assert cfg.model.bias_prior is False
    if method == "class_aware":
        assert cfg.sampler._target_.endswith("ClassAwareSampler")


def test_recipe_trains_on_user_data_with_any_number_of_classes(train_cfg, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    counts = [60, 25, 10, 4]  # four classes, long-tailed
    y_train, y_test = np.repeat(np.arange(4), counts), np.repeat(np.arange(4), 10)
    centers = rng.normal(scale=3.0, size=(4, 6))
    np.savez(
        tmp_path / "lt.npz",
        x_train=(centers[y_train] + rng.normal(size=(y_train.size, 6))).astype(np.float32), y_train=y_train,
        x_test=(centers[y_test] + rng.normal(size=(y_test.size, 6))).astype(np.float32), y_test=y_test,
    )
    cfg = train_cfg("experiment=longtail_recipe", "data=npz", f"data.path={tmp_path / 'lt.npz'}",
                    "callbacks.minimum_steps.min_steps=60")
    assert cfg.loss._target_.endswith("LogitAdjustedLoss") and cfg.mixup._target_.endswith("Mixup")
    train(cfg)
    metrics = read_metrics(tmp_path)
    assert sum(metrics[f"test/support/{c}"] for c in range(4)) == 40
    assert metrics["train_class_counts"] == counts  # nothing held out: every sample trains
    assert metrics["test/balanced_acc"] > 0.5  # well-separated clusters: far above chance (0.25)


def test_previous_ldam_drw_recipe_holds_out_validation(train_cfg, tmp_path: Path) -> None:
    y_train, y_test = np.repeat(np.arange(3), [40, 10, 5]), np.repeat(np.arange(3), 5)
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "lt.npz", x_train=rng.normal(size=(55, 4)).astype(np.float32), y_train=y_train,
             x_test=rng.normal(size=(15, 4)).astype(np.float32), y_test=y_test)
    cfg = train_cfg("experiment=longtail_ldam_drw", "data=npz", f"data.path={tmp_path / 'lt.npz'}",
                    "trainer.max_epochs=3", "warmup.epochs=2")
    assert cfg.loss._target_.endswith("LDAMLoss") and cfg.warmup.reweight == "effective"
    train(cfg)
    assert read_metrics(tmp_path)["train_class_counts"] == [36, 9, 4]  # round(10%) of each class held out
