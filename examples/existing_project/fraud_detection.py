"""A small, ordinary Lightning project: fraud detection on synthetic transactions (3% fraud).

It was written without lit_imbalance; making it imbalance-aware took the lines
marked ``# lit_imbalance``: the mixin in the bases, one ``configure_imbalance``
call, and ``imbalance_step`` in the steps (which replaced the hand-written
loss and accuracy logging). One callback more chooses the decision threshold
on the validation split when the test starts (the largest validation F1 of
the fraud class): the test reports ``test/*`` at it, ``test/default_threshold/*``
at 0.5 and the threshold as ``threshold/value``. Run it with
``python fraud_detection.py`` (``--threshold none`` keeps 0.5).
"""

from __future__ import annotations

import argparse

import lightning as L
import torch
from sklearn.datasets import make_classification
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lit_imbalance import ImbalanceMixin  # lit_imbalance
from lit_imbalance.callbacks import ThresholdTuning  # lit_imbalance


class TransactionsDataModule(L.LightningDataModule):
    """20 standardised features per transaction, label 1 = fraud; stratified 60/20/20 split."""

    def __init__(self, n_samples: int = 6000, fraud_rate: float = 0.03, batch_size: int = 128, seed: int = 0):
        super().__init__()
        self.save_hyperparameters()

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        x, y = make_classification(
            n_samples=hp.n_samples, n_features=20, n_informative=6, n_redundant=4, weights=[1 - hp.fraud_rate],
            class_sep=0.8, flip_y=0.0, random_state=hp.seed,
        )
        x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.4, stratify=y, random_state=hp.seed)
        x_val, x_test, y_val, y_test = train_test_split(x_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=hp.seed)
        mean, std = x_train.mean(0), x_train.std(0)

        def tensors(features, labels):
            return TensorDataset(torch.tensor((features - mean) / std, dtype=torch.float32), torch.tensor(labels))

        self.train_set = tensors(x_train, y_train)
        self.val_set = tensors(x_val, y_val)
        self.test_set = tensors(x_test, y_test)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=1024)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=1024)


#: How much more a missed fraud costs in training than a false alarm.
FRAUD_WEIGHT = 10.0


class FraudClassifier(ImbalanceMixin, L.LightningModule):  # lit_imbalance: the mixin, before LightningModule
    """An MLP with one output logit (fraud vs legit)."""

    def __init__(self, n_features: int = 20, hidden: int = 64, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.classifier = nn.Linear(hidden, 1)
        # lit_imbalance: BCE on one logit with frauds weighted 10x (cost-sensitive training), the bias
        # starting at the fraud rate's log-odds; val/test also report metrics with the decision
        # threshold moved to the prior (tau=1). Re-weighting shifts the scores up, so 0.5 is no
        # longer the F1-best cut: the threshold is moved back on validation (ThresholdTuning in main).
        self.configure_imbalance(task="binary", class_names=["legit", "fraud"], posthoc_tau=1.0,
                                 loss=nn.BCEWithLogitsLoss(pos_weight=torch.tensor(FRAUD_WEIGHT)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(x)).squeeze(-1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.imbalance_step("train", self(x), y)  # lit_imbalance

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.imbalance_step("val", self(x), y)  # lit_imbalance

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.imbalance_step("test", self(x), y)  # lit_imbalance

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def main(max_epochs: int = 15, seed: int = 0, threshold: str | None = "f1", **trainer_kwargs) -> dict[str, float]:
    """Fit, test, and return the test metrics; ``threshold``: the criterion of the decision threshold, or None for 0.5."""
    L.seed_everything(seed)
    datamodule, model = TransactionsDataModule(seed=seed), FraudClassifier()
    # lit_imbalance: the threshold is chosen on validation outputs at the start of the test.
    callbacks = [ThresholdTuning(threshold)] if threshold else []
    trainer = L.Trainer(max_epochs=max_epochs, logger=False, enable_checkpointing=False, callbacks=callbacks,
                        **trainer_kwargs)
    trainer.fit(model, datamodule)
    return trainer.test(model, datamodule)[0]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", default="f1", help="f1 (default) or none (decide at 0.5)")
    args = parser.parse_args()
    main(args.max_epochs, args.seed, threshold=None if args.threshold == "none" else args.threshold)
