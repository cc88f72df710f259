"""Samplers for class-imbalanced training: weighted, class-aware, under- and over-sampling.

Each sampler takes the training labels (or a Dataset whose labels are read
without loading its inputs) and yields dataset indices for one epoch:

* :class:`WeightedSampler`: i.i.d. (or without-replacement) draws weighted by
  :func:`~lit_imbalance.weights.class_weights` (``"inverse"``, ``"sqrt"``,
  ``"effective"``) or by a per-sample weight tensor;
* :class:`ClassAwareSampler`: every class equally often, uniform within a class;
* :class:`UnderSampler` / :class:`OverSampler`: imbalanced-learn's
  ``sampling_strategy``, with a new under-sample every epoch;
* :class:`ProgressivelyBalancedSampler`: class probabilities moving from the
  data's to uniform over ``num_epochs`` (Kang et al., 2020).

All of them:

* are DDP-coordinated: every rank draws the same global epoch from
  ``(seed, epoch)`` and keeps positions ``rank, rank + R, ...``, so shards are
  disjoint and together are the single-process epoch. An epoch not divisible by
  ``R`` is padded by wrapping around (``drop_last=True`` drops the tail
  instead); ``len(sampler)`` is the per-rank length;
* subclass :class:`~torch.utils.data.DistributedSampler`, so Lightning keeps
  them as they are under DDP and calls :meth:`~EpochSampler.set_epoch`;
* keep no random state between epochs: a resumed run redraws the same epochs;
* expose :attr:`~EpochSampler.expected_class_counts` for logging;
* scale past torch's 2^24 ``multinomial`` limit, with memory linear in the
  dataset length.

Example:
    >>> import torch
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> labels = torch.tensor([0] * 90 + [1] * 10)
    >>> dataset = TensorDataset(torch.randn(100, 3), labels)
    >>> sampler = ClassAwareSampler(dataset, seed=0)
    >>> loader = DataLoader(dataset, batch_size=20, sampler=sampler)
    >>> sampler.set_epoch(0)
    >>> torch.cat([y for _, y in loader]).bincount().tolist()
    [50, 50]
"""

from lit_imbalance.sampling.base import EpochSampler
from lit_imbalance.sampling.progressive import ProgressivelyBalancedSampler
from lit_imbalance.sampling.quota import ClassAwareSampler, OverSampler, QuotaSampler, UnderSampler
from lit_imbalance.sampling.strategy import resampling_targets
from lit_imbalance.sampling.weighted import WeightedSampler

__all__ = [
    "ClassAwareSampler",
    "EpochSampler",
    "OverSampler",
    "ProgressivelyBalancedSampler",
    "QuotaSampler",
    "UnderSampler",
    "WeightedSampler",
    "resampling_targets",
]
