"""Random-number-generator state in the checkpoint, so a resumed run draws what the uninterrupted one drew."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


def capture_rng_state() -> dict[str, Any]:
    """The torch (CPU and CUDA), numpy and Python generator states, as plain containers and tensors.

    Plain, so that a checkpoint holding them loads with ``torch.load(weights_only=True)``.

    Example:
        >>> state = capture_rng_state(); first = torch.rand(1)
        >>> restore_rng_state(state); bool(torch.rand(1) == first)
        True
    """
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, keys.tolist(), int(position), int(has_gauss), float(cached_gaussian)],
        "python": [version, list(python_state), gauss_next],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set every generator to a state from :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    version, python_state, gauss_next = state["python"]
    random.setstate((version, tuple(python_state), gauss_next))


class RNGStateCheckpoint(Callback):
    """Save the generators' states with every checkpoint; after a resume, restore them as training continues.

    Lightning restores weights, optimizer and loop state but not the random
    generators, so shuffling and dropout after a resume differ from the
    uninterrupted run. The states are captured when the checkpoint is written
    (the end of an epoch) and set again when the fit starts and once more
    after the sanity check, whose loaders draw from the generators too: the
    fit loop creates the first training iterator (which draws the shuffle
    seed) right after it, before any ``on_train_*`` hook.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return capture_rng_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is not None:
            restore_rng_state(self._pending)

    def on_sanity_check_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is not None:
            restore_rng_state(self._pending)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending = None
