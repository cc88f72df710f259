"""Samplers that fix how many draws each class gets per epoch: class-aware, under- and over-sampling.

All three reduce to a per-class quota ``q_c`` (draws of class ``c`` per
epoch) served the same way: every sample of the class appears
``q_c // n_c`` times, and the remaining ``q_c % n_c`` draws are distinct
samples taken in turn from a shuffled pass over the class, so that
successive epochs see different samples and every sample is seen within
``ceil(n_c / (q_c % n_c))`` epochs. The epoch is then shuffled.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from lit_imbalance._checks import check_positive_int, fail
from lit_imbalance.sampling.base import (
    CLASS_CYCLE_STREAM,
    EpochSampler,
    Labels,
    class_sorted_index,
    index_dtype,
    resolve_labels,
    shuffle,
    stream,
)
from lit_imbalance.sampling.strategy import Kind, SamplingStrategy, resampling_targets


class QuotaSampler(EpochSampler):
    """Base class: class ``c`` gets ``quotas[c]`` draws per epoch, plus one for ``num_extra`` random classes.

    Subclasses implement :meth:`class_quotas`.

    The partial pass over a class (its ``q_c % n_c`` distinct draws) walks
    through a permutation of the class keyed by ``(seed, class, cycle)``:
    epoch ``e`` takes slot ``e mod L_c`` of cycle ``e // L_c``, with
    ``L_c = ceil(n_c / (q_c % n_c))`` slots per cycle; the last slot is topped
    up from the start of the same permutation. Every epoch's subset is thus a
    uniformly random subset of the class, and each cycle of ``L_c`` epochs
    covers the whole class. The permutation of the current cycle is cached (at
    most one int per training sample), so a cycle costs one shuffle of the
    class, not one per epoch.
    """

    def __init__(
        self,
        labels: Labels,
        *,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
    ) -> None:
        labels = resolve_labels(labels)
        super().__init__(labels, seed=seed, num_replicas=num_replicas, rank=rank, drop_last=drop_last)
        counts = self.class_counts.numpy()
        self._present = np.flatnonzero(counts > 0)
        quotas, self.num_extra = self.class_quotas(counts, self._present)
        self.quotas = np.asarray(quotas, dtype=np.int64)
        self._dtype = index_dtype(labels.numel())
        self._sorted = class_sorted_index(labels, self.num_classes)
        self._offsets = np.cumsum(counts) - counts
        self._cycles: dict[int, tuple[int, np.ndarray]] = {}

    def class_quotas(self, counts: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, int]:
        """Draws per class and per epoch, shape ``(C,)``, and the number of classes given one more at random."""
        raise NotImplementedError

    @property
    def epoch_size(self) -> int:
        return int(self.quotas.sum()) + self.num_extra

    def compute_expected_class_counts(self) -> torch.Tensor:
        expected = self.quotas.astype(np.float64)
        expected[self._present] += self.num_extra / self._present.size
        return torch.from_numpy(expected)

    def draw(self, rng: np.random.Generator, epoch: int) -> np.ndarray:
        counts = self.class_counts.numpy()
        extra = np.zeros(self.num_classes, dtype=np.int64)
        if self.num_extra:
            extra[rng.choice(self._present, size=self.num_extra, replace=False)] = 1
        positions = np.empty(self.epoch_size, dtype=self._dtype)
        start = 0
        for cls in self._present:
            size, offset = int(counts[cls]), int(self._offsets[cls])
            full_passes, partial = divmod(int(self.quotas[cls]), size)
            if full_passes:
                block = positions[start : start + full_passes * size].reshape(full_passes, size)
                block[:] = np.arange(offset, offset + size, dtype=self._dtype)
                start += full_passes * size
            take = partial + int(extra[cls])
            if take:
                positions[start : start + take] = offset + self._partial_pass(rng, epoch, int(cls), size, partial, take)
                start += take
        return shuffle(rng, self._sorted[positions])

    def _partial_pass(
        self, rng: np.random.Generator, epoch: int, cls: int, size: int, partial: int, take: int
    ) -> np.ndarray:
        """``take`` distinct positions within the class for ``epoch`` (the ``partial`` rotating ones first)."""
        if partial == 0:  # only the one extra draw: any uniform pick will do
            return rng.integers(0, size, size=take)
        slots = -(-size // partial)
        cycle, slot = divmod(epoch, slots)
        permutation = self._cycle_permutation(cls, size, cycle)
        window = permutation[slot * partial : slot * partial + take]
        if window.size < take:  # the cycle's last slot: top up from its start (distinct, as take <= size)
            window = np.concatenate([window, permutation[: take - window.size]])
        return window

    def _cycle_permutation(self, cls: int, size: int, cycle: int) -> np.ndarray:
        cached = self._cycles.get(cls)
        if cached is None or cached[0] != cycle:
            permutation = np.arange(size, dtype=self._dtype)
            stream(self.seed, CLASS_CYCLE_STREAM, cls, cycle).shuffle(permutation)
            cached = self._cycles[cls] = (cycle, permutation)
        return cached[1]


class ClassAwareSampler(QuotaSampler):
    """Class-aware sampling: every class equally often, samples uniform within a class.

    Each epoch of ``num_samples`` draws gives every class present in the labels
    ``num_samples // C`` draws (the ``num_samples % C`` left over go to classes
    picked at random each epoch), as in the class-aware sampling of Shen et
    al. (2016): a rare class repeats its samples, each about equally often; a
    frequent class serves distinct samples, rotating through all of them over
    epochs. Marginally, every draw is a uniformly random class and a uniformly
    random sample of it. Compared with i.i.d. draws
    (``WeightedSampler(weights="inverse")``), the class counts of an epoch are
    exact and repeats within an epoch are as few as possible.

    Args:
        labels: training labels (1-D integer tensor/array/sequence) or a Dataset.
        num_samples: indices per global epoch (all ranks together); defaults to ``N``.
        seed, num_replicas, rank, drop_last: see :class:`~lit_imbalance.sampling.base.EpochSampler`.

    Example:
        >>> labels = torch.tensor([0] * 6 + [1] * 2 + [2] * 1)
        >>> sampler = ClassAwareSampler(labels, seed=0)
        >>> labels[list(sampler)].bincount().tolist()
        [3, 3, 3]
        >>> sampler.expected_class_counts
        tensor([3., 3., 3.], dtype=torch.float64)
    """

    def __init__(
        self,
        labels: Labels,
        num_samples: int | None = None,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        *,
        drop_last: bool = False,
    ) -> None:
        self._requested_size = None if num_samples is None else check_positive_int("num_samples", num_samples)
        super().__init__(labels, seed=seed, num_replicas=num_replicas, rank=rank, drop_last=drop_last)

    def class_quotas(self, counts: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, int]:
        size = int(counts.sum()) if self._requested_size is None else self._requested_size
        per_class, left_over = divmod(size, present.size)
        return (counts > 0) * per_class, left_over


class ResamplingSampler(QuotaSampler):
    """Base class of :class:`UnderSampler` and :class:`OverSampler`: quotas from a ``sampling_strategy``."""

    kind: ClassVar[Kind]

    def __init__(
        self,
        labels: Labels,
        sampling_strategy: SamplingStrategy = "auto",
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        *,
        drop_last: bool = False,
    ) -> None:
        self.sampling_strategy = sampling_strategy
        super().__init__(labels, seed=seed, num_replicas=num_replicas, rank=rank, drop_last=drop_last)

    @property
    def target_counts(self) -> torch.Tensor:
        """Samples of each class per epoch after resampling, int64, shape ``(C,)``."""
        return torch.from_numpy(self.quotas)

    def class_quotas(self, counts: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, int]:
        targets = resampling_targets(counts, self.sampling_strategy, self.kind)
        if targets.sum() == 0:
            fail("sampling_strategy", "targets that keep at least one sample", self.sampling_strategy)
        return targets, 0


class UnderSampler(ResamplingSampler):
    """Random under-sampling of the larger classes, with imbalanced-learn's ``sampling_strategy``.

    Every epoch keeps ``target[c]`` distinct samples of each class (see
    :func:`~lit_imbalance.sampling.strategy.resampling_targets`; ``"auto"``
    shrinks every class but the minority to the minority's size). Each epoch
    draws a new subset, rotating through the class: a class shrunk from ``n`` to
    ``t`` samples has every sample seen within ``ceil(n / t)`` epochs (epochs
    ``k * ceil(n / t)`` to ``(k + 1) * ceil(n / t) - 1``), which independent
    random subsets would not guarantee.

    Args:
        labels: training labels (1-D integer tensor/array/sequence) or a Dataset.
        sampling_strategy: ``"auto"``, ``"majority"``, ``"not minority"``,
            ``"not majority"``, ``"all"``, a float ratio ``N_minority / N_majority``
            after resampling (binary only), or a dict ``{class: target count}``.
        seed, num_replicas, rank, drop_last: see :class:`~lit_imbalance.sampling.base.EpochSampler`.

    Example:
        >>> labels = torch.tensor([0] * 8 + [1] * 2)
        >>> sampler = UnderSampler(labels, sampling_strategy="auto", seed=0)
        >>> len(sampler), sampler.target_counts.tolist()
        (4, [2, 2])
        >>> seen = set()
        >>> for epoch in range(4):
        ...     sampler.set_epoch(epoch)
        ...     seen.update(i for i in sampler if labels[i] == 0)
        >>> sorted(seen)
        [0, 1, 2, 3, 4, 5, 6, 7]
    """

    kind = "under"


class OverSampler(ResamplingSampler):
    """Random over-sampling of the smaller classes, with imbalanced-learn's ``sampling_strategy``.

    Every epoch serves ``target[c]`` draws of each class (see
    :func:`~lit_imbalance.sampling.strategy.resampling_targets`; ``"auto"``
    grows every class but the majority to the majority's size): every original
    sample at least once, as in imbalanced-learn, and the extra copies spread
    as evenly as possible (each sample ``floor(t / n)`` or ``ceil(t / n)`` times,
    rotating over epochs) where imbalanced-learn draws them with replacement.

    Args:
        labels: training labels (1-D integer tensor/array/sequence) or a Dataset.
        sampling_strategy: ``"auto"``, ``"minority"``, ``"not minority"``,
            ``"not majority"``, ``"all"``, a float ratio ``N_minority / N_majority``
            after resampling (binary only), or a dict ``{class: target count}``.
        seed, num_replicas, rank, drop_last: see :class:`~lit_imbalance.sampling.base.EpochSampler`.

    Example:
        >>> labels = torch.tensor([0] * 8 + [1] * 3)
        >>> sampler = OverSampler(labels, seed=0)
        >>> drawn = list(sampler)
        >>> len(drawn), labels[drawn].bincount().tolist()
        (16, [8, 8])
        >>> sorted(torch.tensor(drawn).bincount()[8:].tolist())  # copies of each class-1 sample
        [2, 3, 3]
    """

    kind = "over"
