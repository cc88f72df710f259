"""Progressively-balanced sampling (Kang et al., 2020): from instance-balanced to class-balanced over training."""

from __future__ import annotations

import numpy as np
import torch

from lit_imbalance._checks import check_positive_int, fail
from lit_imbalance.sampling.base import EpochSampler, Labels, class_sorted_index, index_dtype, resolve_labels
from lit_imbalance.sampling.weighted import ClassThenSample


class ProgressivelyBalancedSampler(EpochSampler):
    r"""I.i.d. draws whose class probabilities move from the data's to uniform as epochs pass.

    In epoch :math:`t` of :math:`T` (``num_epochs``), class :math:`j` is drawn
    with probability

    .. math:: p_j(t) = \Big(1 - \frac{t}{T}\Big) \frac{n_j}{N} + \frac{t}{T} \frac{1}{C},

    then a uniform sample of it (Kang et al., 2020, "Decoupling representation
    and classifier"): epoch 0 is instance-balanced (plain uniform sampling),
    epoch ``T`` and later class-balanced; ``C`` counts the classes present in
    the labels. The epoch is a pure function of ``(seed, epoch)``, streamed in
    blocks and DDP-sharded like every sampler here (see
    :class:`~lit_imbalance.sampling.base.EpochSampler`), so a resumed run that
    calls ``set_epoch(t)`` gets the same indices and schedule.

    Args:
        labels: training labels (1-D integer tensor/array/sequence) or a Dataset.
        num_epochs: :math:`T`, the epoch at which sampling is fully class-balanced.
        num_samples: indices per global epoch (all ranks together); defaults to ``N``.
        seed, num_replicas, rank, drop_last: see :class:`~lit_imbalance.sampling.base.EpochSampler`.

    Example:
        >>> labels = torch.tensor([0] * 90 + [1] * 10)
        >>> sampler = ProgressivelyBalancedSampler(labels, num_epochs=10, seed=0)
        >>> sampler.class_probabilities(0).tolist(), sampler.class_probabilities(10).tolist()
        ([0.9, 0.1], [0.5, 0.5])
        >>> sampler.set_epoch(5)
        >>> sampler.expected_class_counts
        tensor([70., 30.], dtype=torch.float64)
    """

    streamed = True

    def __init__(
        self,
        labels: Labels,
        num_epochs: int,
        num_samples: int | None = None,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        *,
        drop_last: bool = False,
    ) -> None:
        labels = resolve_labels(labels)
        super().__init__(labels, seed=seed, num_replicas=num_replicas, rank=rank, drop_last=drop_last)
        self.num_epochs = check_positive_int("num_epochs", num_epochs)
        self._epoch_size = labels.numel() if num_samples is None else check_positive_int("num_samples", num_samples)
        self._sorted = class_sorted_index(labels, self.num_classes).astype(index_dtype(labels.numel()), copy=False)
        self._samplers: dict[int, ClassThenSample] = {}

    @property
    def epoch_size(self) -> int:
        return self._epoch_size

    def class_probabilities(self, epoch: int) -> torch.Tensor:
        """:math:`p_j(t)` for ``epoch`` :math:`t` (float64, shape ``(C,)``); constant from ``num_epochs`` on."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            fail("epoch", "a non-negative integer", epoch)
        counts = self.class_counts.numpy().astype(np.float64)
        progress = min(epoch / self.num_epochs, 1.0)
        present = counts > 0
        balanced = present / present.sum()
        return torch.from_numpy((1.0 - progress) * counts / counts.sum() + progress * balanced)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.__dict__.pop("expected_class_counts", None)  # it follows the epoch's probabilities

    def compute_expected_class_counts(self) -> torch.Tensor:
        return self._epoch_size * self.class_probabilities(self.epoch)

    def draw_block(self, rng: np.random.Generator, epoch: int, size: int) -> np.ndarray:
        step = min(epoch, self.num_epochs)  # the schedule is flat from num_epochs on: one sampler serves all
        sampler = self._samplers.get(step)
        if sampler is None:
            self._samplers = {  # keep only the current epoch's (the schedule moves forward)
                step: ClassThenSample(self.class_probabilities(step).numpy(), self.class_counts.numpy(), self._sorted)
            }
            sampler = self._samplers[step]
        return sampler(rng, size)
