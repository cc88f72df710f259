"""Where this process stands: inside a Hydra multirun or not, launching ranks or launched."""

from __future__ import annotations

import os

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode


def in_multirun() -> bool:
    """Whether the current process runs a job of a Hydra multirun (``-m``)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def is_launching_process() -> bool:
    """False in processes started by a launcher with a rank (DDP children, torchrun, SLURM tasks > 0)."""
    rank = next((os.environ[key] for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID") if key in os.environ), "0")
    return rank == "0"
