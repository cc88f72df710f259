"""Shared fixtures: Hydra-composed configs of the real app, pointed at a temp dir."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"

# Small and quick: every test fit runs in a second or two on 2 CPU cores.
FAST = ("logger=none", "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false")


def compose_train(overrides: Sequence[str] = (), output_dir: Path | None = None) -> DictConfig:
    """Compose ``conf/train.yaml`` like ``python train.py <overrides>`` would."""
    extra = [f"paths.output_dir={output_dir}"] if output_dir is not None else ["paths.output_dir=."]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[*overrides, *extra])


@pytest.fixture(autouse=True)
def isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own directory: what a Trainer writes by default never lands in the repo."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def train_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """``train_cfg("loss=focal", ...)``: a fast composed config writing into ``tmp_path``."""

    def make(*overrides: str, fast: bool = True) -> DictConfig:
        return compose_train([*(FAST if fast else ()), *overrides], output_dir=tmp_path)

    return make


def subprocess_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of an app subprocess: this one's, quiet, plus ``extra``."""
    return {**os.environ, "WANDB_SILENT": "true", "PYTHONWARNINGS": "ignore", **(extra or {})}


def run_train_py(
    *overrides: str, run_dir: Path, timeout: float = 300, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python train.py`` as a user would, in a subprocess, with Hydra writing to ``run_dir``.

    ``env`` adds variables to the subprocess's environment.
    """
    env = subprocess_env(env)
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides, f"hydra.run.dir={run_dir}"],
        cwd=run_dir.parent, env=env, capture_output=True, text=True, timeout=timeout,
    )
