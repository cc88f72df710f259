"""The long-tail benchmark, at its smallest: 2 methods x 1 seed x 1 epoch, one ratio."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

from tests.conftest import ROOT


def load_benchmark():
    spec = importlib.util.spec_from_file_location("longtail_benchmark", ROOT / "benchmarks" / "longtail.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_benchmark_writes_the_table(tmp_path: Path) -> None:
    benchmark = load_benchmark()
    exit_code = benchmark.main(
        ["--methods", "ce", "posthoc_la", "--seeds", "0", "--epochs", "1", "--ratios", "20", "--out", str(tmp_path)]
    )
    assert exit_code == 0
    (sweep_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    with (sweep_dir / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == benchmark.COLUMNS
    assert sorted(r["method"] for r in rows) == ["ce", "posthoc_la"]
    for row in rows:
        assert float(row["imbalance_ratio"]) == 20 and row["seeds"] == "1"
        assert 0.0 <= float(row["test_balanced_acc"]) <= 1.0
        assert float(row["test_balanced_acc_std"]) == 0.0  # one seed
    assert (sweep_dir / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (sweep_dir / "results.md").read_text()
    assert table.splitlines()[0].startswith("| method | ρ |") and "posthoc_la" in table
    assert "Ranked by validation balanced accuracy" in table


def test_validation_ranking_ignores_test_scores() -> None:
    benchmark = load_benchmark()
    table = [
        {"method": "a", "val_balanced_acc": 0.9, "test_balanced_acc": 0.1},
        {"method": "a", "val_balanced_acc": 0.7, "test_balanced_acc": 0.1},
        {"method": "b", "val_balanced_acc": 0.85, "test_balanced_acc": 0.99},
    ]
    assert benchmark.validation_ranking(table) == [("b", 0.85), ("a", pytest.approx(0.8))]


def test_post_hoc_method_is_scored_on_adjusted_logits(tmp_path: Path) -> None:
    benchmark = load_benchmark()
    job = tmp_path / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text("seed: 0\ndata:\n  imbalance_ratio: 10\n")
    (job / ".hydra" / "overrides.yaml").write_text("- method=posthoc_la\n- seed=0\n")
    (job / "metrics.json").write_text(
        '{"test/balanced_acc": 0.5, "test/adjusted/balanced_acc": 0.7, "test/adjusted/few_recall": 0.6,'
        ' "objective": 0.65, "status": "finished"}'
    )
    (row,) = benchmark.job_rows(tmp_path)
    assert row["test_balanced_acc"] == pytest.approx(0.7)
    assert row["few_recall"] == pytest.approx(0.6)
    assert row["val_balanced_acc"] == pytest.approx(0.65)
    assert row["method"] == "posthoc_la" and row["imbalance_ratio"] == 10
