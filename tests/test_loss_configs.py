"""Every conf/loss/*.yaml instantiates through the Hydra app and trains a real (short) fit."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hydra.utils import instantiate

from lit_imbalance.app import train

LOSS_DIR = Path(__file__).resolve().parents[1] / "conf" / "loss"
LOSS_CONFIGS = sorted(path.stem for path in LOSS_DIR.glob("*.yaml"))
SHORT = ("+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "run_test=false")


@pytest.mark.parametrize("name", LOSS_CONFIGS)
def test_loss_config_trains_through_the_app(name: str, train_cfg, tmp_path: Path) -> None:
    cfg = train_cfg(f"loss={name}", *SHORT)
    assert type(instantiate(cfg.loss)).__name__ == cfg.loss._target_.rsplit(".", 1)[1]
    objective = train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "finished"
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["val/loss"])
    assert objective is not None and math.isfinite(objective)
