"""benchmarks/cifar_lt.py: its commands are valid train.py invocations (the runs themselves need a GPU)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, compose_train


def test_dry_run_prints_one_composable_command_per_experiment_and_seed(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "cifar_lt.py"), "--root", str(tmp_path), "--seeds", "0", "1",
         "--out", str(tmp_path / "out"), "--dry-run"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 8  # 4 methods x 2 seeds
    methods = []
    for line in lines:
        argv = shlex.split(line)
        overrides = [a for a in argv[2:] if not a.startswith("hydra.")]
        cfg = compose_train(overrides)
        assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.accelerator == "gpu"
        assert cfg.data.root == str(tmp_path) and cfg.trainer.max_epochs == 200
        methods.append((cfg.loss._target_.rsplit(".", 1)[1], cfg.seed))
    assert sorted(methods) == sorted(
        (loss, seed) for loss in ("CrossEntropyLoss", "LDAMLoss", "BalancedSoftmaxLoss", "LogitAdjustedLoss") for seed in (0, 1)
    )
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
