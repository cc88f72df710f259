"""Record which indices each DDP rank trains on, with a real Lightning Trainer.

``strategy="ddp"`` relaunches ``sys.argv`` for the other ranks, so this runs as
a script (``python tests/ddp_sampler_probe.py OUT_DIR [KIND]``), never inside pytest.
``KIND`` is ``under`` (the default) or ``progressive``.
It trains a one-parameter model for two epochs on 2 CPU processes; the
sampler is built in ``train_dataloader`` (after the process group exists, as
the data modules do) and left to Lightning's defaults
(``use_distributed_sampler=True``). Each rank writes
``OUT_DIR/rank{r}_epoch{e}.json`` with the indices it saw, in order, and the
type of the sampler Lightning actually iterated.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from lit_imbalance.sampling import EpochSampler, ProgressivelyBalancedSampler, UnderSampler

SEED = 11
EPOCHS = 2
# 60/20/12 under-sampled to 12 per class: 36 distinct indices an epoch, 18 per rank.
LABELS = torch.tensor([0] * 60 + [1] * 20 + [2] * 12)


SAMPLER_KINDS = ("under", "progressive")


def make_sampler(num_replicas: int | None = None, rank: int | None = None, kind: str = "under") -> EpochSampler:
    if kind == "progressive":
        # Instance-balanced in epoch 0, class-balanced from epoch 1: the schedule moves between the two epochs.
        return ProgressivelyBalancedSampler(LABELS, num_epochs=1, seed=SEED, num_replicas=num_replicas, rank=rank)
    return UnderSampler(LABELS, sampling_strategy="auto", seed=SEED, num_replicas=num_replicas, rank=rank)


class Probe(L.LightningModule):
    def __init__(self, out_dir: Path, kind: str) -> None:
        super().__init__()
        self.out_dir = out_dir
        self.kind = kind
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[int] = []

    def train_dataloader(self) -> DataLoader:
        dataset = TensorDataset(torch.arange(LABELS.numel()), LABELS)
        return DataLoader(dataset, batch_size=4, sampler=make_sampler(kind=self.kind), shuffle=False)

    def on_train_epoch_start(self) -> None:
        self.seen = []

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        index, _labels = batch
        self.seen.extend(index.tolist())
        return ((self.weight - index.float().mean()) ** 2).mean()

    def on_train_epoch_end(self) -> None:
        sampler = self.trainer.train_dataloader.sampler
        record = {
            "rank": self.global_rank,
            "world_size": self.trainer.world_size,
            "epoch": self.current_epoch,
            "sampler": type(sampler).__name__,
            "indices": self.seen,
        }
        path = self.out_dir / f"rank{self.global_rank}_epoch{self.current_epoch}.json"
        path.write_text(json.dumps(record))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def main(out_dir: Path, kind: str = "under") -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=EPOCHS, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(Probe(out_dir, kind))


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:3])
