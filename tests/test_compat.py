"""The private Lightning attributes of lit_imbalance._compat still exist and mean what they meant.

Each test fails loudly, naming the attribute, when a Lightning release changes it.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lit_imbalance import _compat


class Probe(L.LightningModule):
    """Records what the compat helpers see from ``on_fit_start``."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)
        self.seen: dict[str, object] = {}

    def on_fit_start(self) -> None:
        self.seen["dataset"] = _compat.fit_train_dataset(self.trainer)
        self.seen["relaunches"] = _compat.script_relaunches(self.trainer)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_fit_loop_data_source_gives_the_loader_passed_to_fit() -> None:
    assert hasattr(L.Trainer(logger=False).fit_loop, "_data_source"), "Trainer.fit_loop._data_source is gone"
    dataset = TensorDataset(torch.zeros(4, 2), torch.tensor([0, 1, 1, 0]))
    probe = Probe()
    L.Trainer(max_epochs=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(probe, DataLoader(dataset, batch_size=2))
    assert probe.seen["dataset"] is dataset
    assert probe.seen["relaunches"] is False  # one process, no launcher


def test_script_launcher_keeps_its_children_in_procs() -> None:
    from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher

    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)
    launcher = trainer.strategy.launcher
    assert isinstance(launcher, _SubprocessScriptLauncher), "ddp no longer uses _SubprocessScriptLauncher"
    assert _compat.script_relaunches(trainer)
    assert isinstance(launcher.procs, list), "_SubprocessScriptLauncher.procs is no longer a list"
    launcher.procs.append("child")  # stands for a Popen: the helper only moves it
    assert _compat.take_relaunched_children(trainer) == ["child"] and launcher.procs == []


@pytest.mark.parametrize("strategy", ["ddp_spawn"])
def test_spawn_does_not_count_as_a_script_relaunch(strategy: str) -> None:
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=strategy, logger=False)
    assert not _compat.script_relaunches(trainer)
    assert _compat.spawns_processes(trainer)


@pytest.mark.parametrize(("strategy", "devices", "spawns"), [("ddp_spawn", 1, True), ("ddp", 2, False),
                                                             ("auto", 1, False)])
def test_spawns_processes_is_the_multiprocessing_launcher(strategy: str, devices: int, spawns: bool) -> None:
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy=strategy, logger=False)
    assert _compat.spawns_processes(trainer) is spawns


def test_calibration_samples_are_the_states_torchmetrics_accumulates() -> None:
    from torchmetrics.classification import MulticlassCalibrationError

    from lit_imbalance._compat import calibration_samples

    metric = MulticlassCalibrationError(num_classes=3, n_bins=15)
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0], [2.0, 0.0, 0.0]])
    target = torch.tensor([0, 2, 2, 1])
    metric.update(logits, target)
    confidences, accuracies = calibration_samples(metric)
    probabilities = logits.softmax(dim=1)
    torch.testing.assert_close(confidences, probabilities.max(dim=1).values)
    torch.testing.assert_close(accuracies.float(), (probabilities.argmax(dim=1) == target).float())
