"""1,000 classes: the run's pictures keep a fixed size and do not grow the run's memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from lit_imbalance import plots
from tests.conftest import ROOT, subprocess_env

CLASSES = 1000


def write_many_class_npz(path: Path) -> None:
    rng = np.random.default_rng(0)
    counts = np.maximum(2, (40 * np.power(0.995, np.arange(CLASSES))).astype(int))  # a long tail, 40 -> 2
    y = np.repeat(np.arange(CLASSES), counts)
    y_test = np.repeat(np.arange(CLASSES), 2)
    np.savez(path, x_train=rng.normal(size=(y.size, 16)), y_train=y,
             x_test=rng.normal(size=(y_test.size, 16)), y_test=y_test)


def peak_rss_of_run(data: Path, run_dir: Path, *overrides: str) -> tuple[int, dict]:
    """Peak resident memory (KiB) of ``train.py`` in a child process, and its record."""
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    command = [sys.executable, "-c", probe, sys.executable, str(ROOT / "train.py"), "data=npz", f"data.path={data}",
               "logger=none", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
               "callbacks.last_checkpoint=null", f"hydra.run.dir={run_dir}", *overrides]
    result = subprocess.run(command, cwd=run_dir.parent, env=subprocess_env(), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return int(result.stdout.strip().splitlines()[-1]), json.loads((run_dir / "metrics.json").read_text())


def test_thousand_class_run_draws_compact_plots_within_memory(tmp_path: Path) -> None:
    data = tmp_path / "many.npz"
    write_many_class_npz(data)
    with_plots, record = peak_rss_of_run(data, tmp_path / "plots_on")
    without_plots, _ = peak_rss_of_run(data, tmp_path / "plots_off", "callbacks.plots=null")
    print(f"peak RSS with plots {with_plots} KiB, without {without_plots} KiB")
    assert with_plots <= 1.5 * without_plots, (with_plots, without_plots)
    pictures = sorted(p.name for p in (tmp_path / "plots_on" / "plots").iterdir())
    assert pictures == ["test_confusion_summary.png", "test_recall_by_frequency.png", "test_reliability.png"]
    assert len([k for k in record if k.startswith("test/recall/")]) == CLASSES  # per-class numbers still kept


def test_compact_confusion_sums_shot_groups_and_ranks_confused_pairs() -> None:
    confusion = torch.tensor([[90, 10, 0], [30, 60, 10], [0, 5, 5]])
    names, grouped = plots.shot_group_confusion(confusion, [500, 50, 5])
    assert names == ["many", "medium", "few"]
    assert np.allclose(grouped, [[0.9, 0.1, 0.0], [0.3, 0.6, 0.1], [0.0, 0.5, 0.5]])
    assert plots.most_confused_pairs(confusion, k=2) == [(2, 1, 0.5), (1, 0, 0.3)]
    figure = plots.compact_confusion(torch.eye(300, dtype=torch.long) * 3, torch.arange(300, 0, -1), pairs=5)
    assert tuple(figure.get_size_inches()) == (12.0, 5.0)  # the same size for any number of classes
