"""conf/strategy/*: each composes to the Lightning strategy it names; DDP counts each test sample once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher, _SubprocessScriptLauncher

from tests.conftest import CONF_DIR, compose_train, run_train_py

CLASSES = range(10)
TEST_SET_SIZE = 500  # default digits_lt: 50 per class
GPU_ONLY = ("fsdp", "deepspeed")


def cpu_trainer(strategy: str, devices: int = 2):
    overrides = [f"strategy={strategy}", f"trainer.devices={devices}", "trainer.accelerator=cpu", "logger=none"]
    cfg = compose_train(overrides)
    return instantiate(cfg.trainer)


def test_strategy_group_ships_these_choices() -> None:
    assert {p.stem for p in (CONF_DIR / "strategy").glob("*.yaml")} == {"auto", "ddp", "ddp_spawn", *GPU_ONLY}


@pytest.mark.parametrize(
    ("strategy", "launcher", "start_method"),
    [("ddp", _SubprocessScriptLauncher, "popen"), ("ddp_spawn", _MultiProcessingLauncher, "spawn"),
     ("auto", _SubprocessScriptLauncher, "popen")],
)
def test_cpu_strategies_build_two_gloo_processes(strategy: str, launcher: type, start_method: str) -> None:
    trainer = cpu_trainer(strategy)
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.strategy.num_processes == 2
    assert trainer.strategy._get_process_group_backend() == "gloo"
    assert isinstance(trainer.strategy.launcher, launcher)
    assert trainer.strategy._start_method == start_method


@pytest.mark.parametrize("strategy", GPU_ONLY)
def test_gpu_only_strategies_refuse_the_cpu_clearly(strategy: str) -> None:
    # deepspeed not installed also fails here, telling how to install it.
    with pytest.raises(Exception, match="(?i)gpu|cuda|install"):
        cpu_trainer(strategy)


def test_ddp_run_counts_every_test_sample_once_in_one_metrics_json(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_train_py(
        "strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "logger=none", "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false", run_dir=run_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in result.stderr + result.stdout
    # Rank 1 ran in the same run directory (its log is there) and wrote no metrics of its own.
    assert (run_dir / "train_ddp_process_1.log").is_file()
    assert list(tmp_path.rglob("metrics.json")) == [run_dir / "metrics.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # Sharded without padding and synced: 50 per class, 500 in all, none counted twice.
    assert [metrics[f"test/support/{c}"] for c in CLASSES] == [50] * 10
    assert sum(metrics[f"test/support/{c}"] for c in CLASSES) == TEST_SET_SIZE
    assert [metrics[f"val/support/{c}"] for c in CLASSES] == [20] * 10
    assert metrics["status"] == "finished"


def test_ddp_spawn_counts_every_test_sample_once(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_train_py(
        "strategy=ddp_spawn", "trainer.devices=2", "trainer.accelerator=cpu", "logger=none", "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false", run_dir=run_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # Each worker gets its own metric states (the mixin resets them in setup): no double counting.
    assert sum(metrics[f"test/support/{c}"] for c in CLASSES) == TEST_SET_SIZE
    # The fit ran in the workers; the main process's writer merged onto their record.
    assert metrics["val/balanced_acc"] is not None
    assert metrics["objective"] == metrics["best/val/balanced_acc"]
