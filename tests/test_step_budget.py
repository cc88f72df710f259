"""MinimumSteps: a floor in optimiser steps on real Trainer fits, and the recipe that uses it."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lit_imbalance.app import train
from lit_imbalance.callbacks import MinimumSteps
from lit_imbalance.models import MLPClassifier


def loader(samples: int = 10, batch_size: int = 4) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    dataset = TensorDataset(torch.randn(samples, 6, generator=generator), torch.arange(samples) % 3)
    return DataLoader(dataset, batch_size=batch_size)


def fit(callbacks: list[L.Callback], model: L.LightningModule | None = None, **trainer_kwargs: object) -> L.Trainer:
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                        **trainer_kwargs)
    trainer.fit(model or MLPClassifier(input_dim=6, num_classes=3, hidden_sizes=[8]), train_dataloaders=loader())
    return trainer


def test_short_epochs_are_extended_to_the_first_epoch_count_that_reaches_min_steps() -> None:
    # 10 samples in batches of 4: 3 steps an epoch, so 10 steps need ceil(10 / 3) = 4 epochs.
    trainer = fit([MinimumSteps(min_steps=10)], max_epochs=2)
    assert (trainer.current_epoch, trainer.global_step) == (4, 12)


def test_gradient_accumulation_counts_optimiser_steps_not_batches() -> None:
    # 3 batches, accumulating 2: steps after batch 2 and after the last one, 2 an epoch, so 5 epochs.
    trainer = fit([MinimumSteps(min_steps=10)], max_epochs=1, accumulate_grad_batches=2)
    assert (trainer.current_epoch, trainer.global_step) == (5, 10)


def test_a_budget_that_already_reaches_min_steps_is_kept_and_max_steps_still_caps() -> None:
    assert fit([MinimumSteps(min_steps=10)], max_epochs=6).global_step == 18
    assert fit([MinimumSteps(min_steps=100)], max_epochs=1, max_steps=7).global_step == 7


class WithScheduler(MLPClassifier):
    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)}


def test_an_lr_scheduler_that_would_need_more_epochs_is_refused_before_the_first_step() -> None:
    model = WithScheduler(input_dim=6, num_classes=3, hidden_sizes=[8], bias_prior=False)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"`min_steps`.*max_epochs=2.*4 epochs.*got 10"):
        fit([MinimumSteps(min_steps=10)], model=model, max_epochs=2)
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters()))


@pytest.mark.parametrize("value", [0, -3, 1.5, True, "1000"])
def test_min_steps_must_be_a_positive_integer(value: object) -> None:
    with pytest.raises(ValueError, match=rf"`min_steps`.*{value!r}"):
        MinimumSteps(min_steps=value)  # type: ignore[arg-type]


def test_recipe_trains_on_every_sample_with_mixup_for_at_least_min_steps(train_cfg, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y_train, y_test = np.repeat([0, 1, 2], [30, 6, 3]), np.repeat([0, 1, 2], 4)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=rng.normal(size=(39, 5)).astype(np.float32), y_train=y_train,
             x_test=rng.normal(size=(12, 5)).astype(np.float32), y_test=y_test)
    cfg = train_cfg("experiment=longtail_recipe", "data=npz", f"data.path={path}", "data.batch_size=16",
                    "callbacks.minimum_steps.min_steps=20", "callbacks.plots=null")
    assert (cfg.data.val_fraction, cfg.mixup.alpha, cfg.callbacks.model_checkpoint.monitor) == (0.0, 0.2, None)
    train(cfg)
    # All 39 samples train (no hold-out): 3 batches of 16 an epoch; FAST's max_epochs=1 becomes
    # ceil(20 / 3) = 7 epochs, and the last one (index 6) is the checkpoint tested.
    checkpoint = torch.load(tmp_path / "checkpoints" / "epoch006.ckpt", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["global_step"]) == (6, 21)
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "finished"
