"""Hard negative mining: train on the positives and the negatives the model still gets wrong."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from lit_imbalance._checks import check_in_unit_interval, check_positive, check_positive_int, fail
from lit_imbalance.data.labels import dataset_labels
from lit_imbalance.interface import ImbalanceAware


class HardNegativeMining(Callback):
    """Grow the training set with the negatives the model scores as positive.

    For detection-style data with a flood of easy negatives (binary tasks, or
    multiclass with a background class): training starts from every positive
    and ``negatives_per_positive`` random negatives per positive. Every
    ``every_n_epochs`` epochs, after the epoch, the negatives outside the
    training subset are scored (no grad, eval mode, in batches of
    ``batch_size``) and those with a score above ``threshold`` are added — the
    ``top_k`` highest of them when ``top_k`` is set. Mining stops for good
    once a round adds nothing. ``hnm/subset_size`` and ``hnm/added`` are
    logged every epoch.

    The score of a negative is the model's probability that it is *not* a
    negative: ``sigmoid(logit)`` for one output (binary), ``1 - softmax[negative_class]``
    for several outputs. The model's ``forward(x)`` must return logits.

    The datamodule provides ``train_pool`` (a dataset of every training sample,
    yielding ``(x, y)``, whose labels are readable without loading the inputs,
    see :func:`~lit_imbalance.data.dataset_labels`) and a settable
    ``train_subset`` (indices into it that its ``train_dataloader`` serves;
    :class:`~lit_imbalance.data.ArrayDataModule` has both). The loader, and the
    sampler it builds from the subset's labels, are rebuilt when the subset
    changes through Lightning's ``Trainer(reload_dataloaders_every_n_epochs=...)``,
    which must divide ``every_n_epochs``. The subset is part of this callback's
    checkpoint state, so a resumed run trains on the mined set.

    Under DDP every rank scores the candidates, and rank 0's choice is
    broadcast so that all ranks train on the same subset.

    Args:
        negative_class: label of the negatives (0 for binary, the background class otherwise).
        negatives_per_positive: random negatives per positive in the first subset.
        threshold: a negative scoring above it is hard.
        top_k: add at most this many hard negatives per round (the highest scores).
        every_n_epochs: epochs between mining rounds.
        batch_size: scoring batch size.
        seed: seed of the first random draw of negatives.

    Usage::

        trainer = L.Trainer(reload_dataloaders_every_n_epochs=1, callbacks=[HardNegativeMining(threshold=0.5)])
        trainer.fit(model, datamodule)  # datamodule: an ArrayDataModule, or one with train_pool/train_subset
    """

    def __init__(
        self,
        negative_class: int = 0,
        negatives_per_positive: float = 3.0,
        threshold: float = 0.5,
        top_k: int | None = None,
        every_n_epochs: int = 1,
        batch_size: int = 1024,
        seed: int = 0,
    ) -> None:
        if isinstance(negative_class, bool) or not isinstance(negative_class, int) or negative_class < 0:
            fail("negative_class", "a non-negative class index", negative_class)
        self.negative_class = negative_class
        self.negatives_per_positive = check_positive("negatives_per_positive", negatives_per_positive)
        self.threshold = check_in_unit_interval("threshold", threshold)
        self.top_k = check_positive_int("top_k", top_k) if top_k is not None else None
        self.every_n_epochs = check_positive_int("every_n_epochs", every_n_epochs)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.seed = seed
        self.train_subset: Tensor | None = None
        self.finished = False
        self.rounds = 0
        self._datamodule: Any = None

    # --- the subset ---------------------------------------------------------------------

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        datamodule = trainer.datamodule
        if not (hasattr(datamodule, "train_pool") and hasattr(datamodule, "train_subset")):
            fail("datamodule", "a datamodule with `train_pool` and a settable `train_subset`", type(datamodule).__name__)
        reload_every = trainer.reload_dataloaders_every_n_epochs
        if not reload_every or self.every_n_epochs % reload_every:
            fail(
                "reload_dataloaders_every_n_epochs",
                f"a Trainer setting that divides every_n_epochs={self.every_n_epochs} (e.g. 1), so mined "
                "negatives reach the training loader",
                reload_every,
            )
        self._datamodule = datamodule
        if self.train_subset is None:
            # Runs before the LightningModule's setup: its class counts see this subset.
            self._use(self.initial_subset(dataset_labels(datamodule.train_pool)))
        else:  # a second fit with the same callback continues from the mined set
            self._use(self.train_subset)

    def initial_subset(self, labels: Tensor) -> Tensor:
        """Every positive and ``negatives_per_positive`` random negatives per positive (sorted indices)."""
        is_negative = labels == self.negative_class
        positives, negatives = (~is_negative).nonzero().flatten(), is_negative.nonzero().flatten()
        if positives.numel() == 0:
            fail("train_pool", f"at least one sample outside negative_class={self.negative_class}", "none")
        wanted = min(negatives.numel(), round(self.negatives_per_positive * positives.numel()))
        generator = torch.Generator().manual_seed(self.seed)
        chosen = negatives[torch.randperm(negatives.numel(), generator=generator)[:wanted]]
        return torch.cat([positives, chosen]).sort().values

    def _use(self, subset: Tensor) -> None:
        self.train_subset = subset
        self._datamodule.train_subset = subset

    @staticmethod
    def _refresh_class_counts(pl_module: L.LightningModule) -> None:
        # The grown subset has more negatives: statistics-driven losses and the shot-group
        # metrics must see the class balance the model now trains on.
        if isinstance(pl_module, ImbalanceAware):
            pl_module.refresh_class_counts()

    # --- mining -------------------------------------------------------------------------

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        added = 0
        if not self.finished and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            hard = self.mine(pl_module)
            # One decision for all ranks: scores may differ in the last bit between devices.
            hard = trainer.strategy.broadcast(hard, src=0)
            added = hard.numel()
            self.rounds += 1
            if added == 0:
                self.finished = True
            else:
                self._use(torch.cat([self.train_subset, hard]).sort().values)
                self._refresh_class_counts(pl_module)
        pl_module.log("hnm/subset_size", float(self.train_subset.numel()))
        pl_module.log("hnm/added", float(added))

    def mine(self, pl_module: L.LightningModule) -> Tensor:
        """Indices of the hard negatives outside the training subset (sorted by index)."""
        pool = self._datamodule.train_pool
        labels = dataset_labels(pool)
        outside = torch.ones(labels.numel(), dtype=torch.bool)
        outside[self.train_subset] = False
        candidates = (outside & (labels == self.negative_class)).nonzero().flatten()
        if candidates.numel() == 0:
            return candidates
        scores = self.score(pl_module, Subset(pool, candidates.tolist()))
        hard, hard_scores = candidates[scores > self.threshold], scores[scores > self.threshold]
        if self.top_k is not None and hard.numel() > self.top_k:
            hard = hard[hard_scores.topk(self.top_k).indices]
        return hard.sort().values

    @torch.no_grad()
    def score(self, pl_module: L.LightningModule, dataset: Dataset) -> Tensor:
        """Probability of not being a negative, for every sample of ``dataset`` (CPU float32)."""
        was_training = pl_module.training
        pl_module.eval()
        try:
            scores = []
            for batch in DataLoader(dataset, batch_size=self.batch_size):
                logits = pl_module(batch[0].to(pl_module.device)).float()
                if logits.ndim == 1 or logits.shape[-1] == 1:
                    scores.append(torch.sigmoid(logits.reshape(-1)))
                else:
                    scores.append(1.0 - logits.softmax(dim=-1)[:, self.negative_class])
            return torch.cat(scores).cpu()
        finally:
            pl_module.train(was_training)

    # --- checkpoint ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        subset = None if self.train_subset is None else self.train_subset.tolist()
        return {"train_subset": subset, "finished": self.finished, "rounds": self.rounds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.finished = bool(state_dict["finished"])
        self.rounds = int(state_dict["rounds"])
        if state_dict["train_subset"] is not None:
            subset = torch.as_tensor(state_dict["train_subset"], dtype=torch.long)
            # Checkpoints are restored after setup: the datamodule is known and its loader not built yet.
            if self._datamodule is not None:
                self._use(subset)
            else:
                self.train_subset = subset
