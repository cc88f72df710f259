"""HardNegativeMining on a constructed case whose scores are known in advance."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import Tensor, nn
from torch.utils.data import RandomSampler

from lit_imbalance.callbacks import HardNegativeMining
from lit_imbalance import ImbalanceMixin
from lit_imbalance.data import ArrayDataModule, Split
from tests.test_mixin import single_thread  # noqa: F401  (autouse fixture)

QUIET = dict(logger=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)

# Feature 0 is the model's logit. 10 positives at +5; 60 easy negatives at -5; 20 hard ones at +2
# (sigmoid 0.88); 10 borderline ones at +0.1 (sigmoid 0.52) that only a threshold below 0.52 takes.
LOGITS = torch.tensor([5.0] * 10 + [-5.0] * 60 + [2.0] * 20 + [0.1] * 10)
LABELS = torch.tensor([1] * 10 + [0] * 90)
HARD = set(range(70, 90))
BORDERLINE = set(range(90, 100))


class KnownScores(ArrayDataModule):
    def __init__(self, **kwargs) -> None:
        super().__init__(batch_size=8, **kwargs)
        self.num_classes = 2
        x = torch.stack([LOGITS, torch.zeros_like(LOGITS)], dim=1)
        split = Split(x, LABELS)
        self.splits = {"train": split, "val": split, "test": split}


class FixedScorer(L.LightningModule):
    """logit = x[:, 0]; the weight never moves (lr 0), so the scores are the constructed ones."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(1.0))
        self.seen: dict[int, list[int]] = {}

    def forward(self, x: Tensor) -> Tensor:
        return self.weight * x[:, 0]

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.seen.setdefault(self.current_epoch, []).extend(x[:, 0].tolist())
        return nn.functional.binary_cross_entropy_with_logits(self(x), y.float())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


class Logged(Callback):
    def __init__(self) -> None:
        self.sizes: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.sizes.append(float(trainer.callback_metrics["hnm/subset_size"]))


def fit(mining: HardNegativeMining, datamodule: ArrayDataModule, max_epochs: int, **trainer_kwargs) -> tuple:
    model, logged = FixedScorer(), Logged()
    trainer = L.Trainer(
        max_epochs=max_epochs, reload_dataloaders_every_n_epochs=1, callbacks=[mining, logged],
        enable_checkpointing=False, **{**QUIET, **trainer_kwargs},
    )
    trainer.fit(model, datamodule)
    return model, logged


def test_adds_exactly_the_negatives_above_threshold_then_stops() -> None:
    labels_seen_by_sampler: list[int] = []

    def sampler(labels: Tensor) -> RandomSampler:
        labels_seen_by_sampler.append(int((labels == 0).sum()))
        return RandomSampler(range(len(labels)))

    mining = HardNegativeMining(negatives_per_positive=3, threshold=0.6, seed=1)
    datamodule = KnownScores(sampler=sampler)
    model, logged = fit(mining, datamodule, max_epochs=4)

    first = set(mining.initial_subset(LABELS).tolist())
    assert len(first) == 40 and set(range(10)) <= first  # all positives, 30 random negatives
    expected = first | HARD  # the borderline ones score 0.52 < 0.6
    assert set(mining.train_subset.tolist()) == expected
    assert set(datamodule.train_subset.tolist()) == expected
    assert logged.sizes == [len(expected)] * 4  # mined after epoch 0; epoch 1 adds none and stops
    assert mining.finished and mining.rounds == 2
    # The training loader and the sampler factory saw the mined subset from epoch 1 on.
    assert len(model.seen[0]) == 40 and len(model.seen[1]) == len(expected)
    assert sorted(model.seen[1]) == sorted(LOGITS[sorted(expected)].tolist())
    assert labels_seen_by_sampler[0] == 30 and labels_seen_by_sampler[1] == len(expected) - 10


def test_top_k_takes_the_highest_scores_per_round() -> None:
    mining = HardNegativeMining(negatives_per_positive=1, threshold=0.5, top_k=15, seed=0)
    model, logged = fit(mining, KnownScores(), max_epochs=3)
    first = set(mining.initial_subset(LABELS).tolist())
    hard_left = sorted(HARD - first)
    borderline_left = sorted(BORDERLINE - first)
    # Round 1: the 15 highest scores are hard negatives (2.0 beats 0.1); round 2 the rest.
    assert logged.sizes[0] == len(first) + min(15, len(hard_left))
    assert set(mining.train_subset.tolist()) == first | HARD | BORDERLINE
    assert logged.sizes[2] == len(first) + len(hard_left) + len(borderline_left)


def test_mined_subset_survives_resume(tmp_path: Path) -> None:
    checkpoints = ModelCheckpoint(dirpath=tmp_path, filename="last")
    mining = HardNegativeMining(threshold=0.6, seed=1)
    trainer = L.Trainer(max_epochs=1, reload_dataloaders_every_n_epochs=1, callbacks=[mining, checkpoints], **QUIET)
    trainer.fit(FixedScorer(), KnownScores())
    mined = mining.train_subset.tolist()

    resumed_mining, datamodule, model = HardNegativeMining(threshold=0.6, seed=1), KnownScores(), FixedScorer()
    trainer = L.Trainer(max_epochs=2, reload_dataloaders_every_n_epochs=1, callbacks=[resumed_mining], **QUIET)
    trainer.fit(model, datamodule, ckpt_path=tmp_path / "last.ckpt")
    assert datamodule.train_subset.tolist() == mined
    assert len(model.seen[1]) == len(mined)  # the first resumed epoch trains on the mined set


def test_needs_dataloader_reloads_and_a_subset_datamodule() -> None:
    trainer = L.Trainer(max_epochs=1, callbacks=[HardNegativeMining(every_n_epochs=2)], **QUIET)
    with pytest.raises(ValueError, match=r"`reload_dataloaders_every_n_epochs` to be .* divides every_n_epochs=2"):
        trainer.fit(FixedScorer(), KnownScores())
    with pytest.raises(ValueError, match=r"`threshold` to be a float in \[0, 1\], but got 2"):
        HardNegativeMining(threshold=2)


def test_multiclass_score_is_the_probability_of_not_being_background() -> None:
    class ThreeClass(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x  # the features are the logits

    module = ThreeClass()
    module.device = torch.device("cpu")
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    dataset = torch.utils.data.TensorDataset(logits, torch.zeros(3, dtype=torch.long))
    scores = HardNegativeMining(negative_class=0, batch_size=2).score(module, dataset)
    assert scores.tolist() == pytest.approx((1 - logits.softmax(1)[:, 0]).tolist())
    assert module.training  # put back in training mode after scoring


class MixinScorer(ImbalanceMixin, FixedScorer):
    def __init__(self) -> None:
        super().__init__()
        self.configure_imbalance(task="binary", bias_prior=False)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.imbalance_step("train", self(x).unsqueeze(1), y)


def test_mined_negatives_update_the_class_counts_the_loss_sees() -> None:
    mining = HardNegativeMining(negatives_per_positive=3, threshold=0.6, seed=1)
    model = MixinScorer()
    trainer = L.Trainer(max_epochs=2, reload_dataloaders_every_n_epochs=1, callbacks=[mining],
                        enable_checkpointing=False, **QUIET)
    trainer.fit(model, KnownScores())
    # 10 positives and 30 random negatives at first (40), then the hard ones mined after epoch 0.
    grown = set(mining.initial_subset(LABELS).tolist()) | HARD
    assert len(grown) > 40
    assert int(model.num_train_samples) == len(grown)
    assert int(model.class_counts[-1]) == 10
