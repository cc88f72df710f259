"""Weighted random sampling by class weights or per-sample weights, at any dataset size."""

from __future__ import annotations

import numpy as np
import torch

from lit_imbalance._checks import check_choice, check_positive_int, fail
from lit_imbalance.sampling.base import EpochSampler, Labels, class_sorted_index, index_dtype, resolve_labels
from lit_imbalance.weights import WEIGHT_SCHEMES, WeightScheme, class_weights

# Per-sample inverse-CDF draws search the CDF for sorted targets, this many at a
# time: sorted targets walk the CDF's cache lines in order, where unsorted ones
# miss the cache ~20 times each (40x slower at 10M); the slices keep the int64
# search results small at 10^8 draws.
SEARCH_SLICE = 1 << 20


class WeightedSampler(EpochSampler):
    r"""Draw indices with probability proportional to a weight, per class or per sample.

    A sample ``i`` of class ``c`` is drawn with probability proportional to
    ``class_weights(class_counts, weights, beta)[c]`` when ``weights`` names a
    scheme (the same :func:`~lit_imbalance.weights.class_weights` the losses
    use: ``"inverse"`` makes every class equally likely, ``"sqrt"`` softens it,
    ``"effective"`` uses the effective number of samples with ``beta``), or to
    ``weights[i]`` when it is a per-sample weight tensor.

    Unlike :class:`torch.utils.data.WeightedRandomSampler` it has no 2^24 limit
    and no float32 skew, is DDP-sharded (see
    :class:`~lit_imbalance.sampling.base.EpochSampler`) and draws 10M indices
    several times faster:

    * class weights, with replacement: the per-class counts of the epoch are
      one multinomial over ``C`` classes, the samples within each class are
      uniform, then the epoch is shuffled. Exactly ``num_samples`` i.i.d. draws.
    * per-sample weights, with replacement: inverse CDF on a float64 cumulative
      sum, searched with sorted uniform draws (cache-friendly), then shuffled.
    * without replacement (either kind): Efraimidis–Spirakis sampling, i.e. the
      ``num_samples`` smallest keys ``E_i / w_i`` with ``E_i ~ Exp(1)``, served in
      a random order. Samples of weight 0 are never drawn. When ``num_samples``
      equals the number of samples with a non-zero weight (the default when all
      weights are positive) this is a random permutation and the weights do not
      matter.

    Args:
        labels: training labels (1-D integer tensor/array/sequence) or a Dataset
            whose labels are read without loading its inputs.
        weights: ``"inverse"``, ``"sqrt"`` or ``"effective"``, or a non-negative
            per-sample weight tensor of shape ``(N,)``.
        num_samples: indices per global epoch (all ranks together); defaults to ``N``.
        replacement: draw with replacement (i.i.d.) or without.
        seed: epoch ``e`` is drawn from ``(seed, e)``.
        num_replicas: number of DDP shards; defaults to the process group's world size, else 1.
        rank: this process's shard; defaults to its rank in the process group, else 0.
        beta: the ``"effective"`` scheme's hyper-parameter in ``[0, 1)``.
        drop_last: how an epoch not divisible by ``num_replicas`` is split (see
            :class:`~lit_imbalance.sampling.base.EpochSampler`).

    Raises:
        ValueError: naming the argument for an unknown scheme, weights that are
            not 1-D of length ``N``, negative, NaN or all zero, ``num_samples <= 0``,
            or ``num_samples`` above the number of non-zero-weight samples without
            replacement.

    Example:
        >>> labels = torch.tensor([0] * 90 + [1] * 10)
        >>> sampler = WeightedSampler(labels, weights="inverse", seed=0)
        >>> sampler.expected_class_counts.round(decimals=3)
        tensor([50., 50.], dtype=torch.float64)
        >>> indices = list(sampler)
        >>> len(indices), labels[indices].bincount().tolist()
        (100, [42, 58])
    """

    def __init__(
        self,
        labels: Labels,
        weights: WeightScheme | torch.Tensor | np.ndarray = "inverse",
        num_samples: int | None = None,
        replacement: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        *,
        beta: float = 0.9999,
        drop_last: bool = False,
    ) -> None:
        labels = resolve_labels(labels)
        super().__init__(labels, seed=seed, num_replicas=num_replicas, rank=rank, drop_last=drop_last)
        if not isinstance(replacement, bool):
            fail("replacement", "a bool", replacement)
        self.replacement = replacement
        size = labels.numel()
        self._dtype = index_dtype(size)
        counts = self.class_counts.numpy()

        if isinstance(weights, str):
            self.scheme: str | None = check_choice("weights", weights, WEIGHT_SCHEMES)
            # The weight of one sample of each class; a class's share is weight * count.
            self.sample_class_weights = class_weights(counts, weights, beta=beta, normalize="sum_to_1").double().numpy()
            self._class_mass = self.sample_class_weights * counts
            self._sorted = class_sorted_index(labels, self.num_classes)
            self._offsets = np.cumsum(counts) - counts
            num_positive = int(counts[self.sample_class_weights > 0].sum())
        else:
            self.scheme = None
            sample_weights = _sample_weights(weights, size)
            self._class_mass = np.bincount(labels.numpy(), weights=sample_weights, minlength=self.num_classes)
            positive = sample_weights > 0
            num_positive = int(np.count_nonzero(positive))
            if replacement:
                self._cdf = np.cumsum(sample_weights)
                self._last_positive = int(np.flatnonzero(positive)[-1])
            else:
                self._sample_weights = sample_weights
                self._class_positive = np.bincount(labels.numpy()[positive], minlength=self.num_classes)
        self._num_positive = num_positive
        self._epoch_size = size if num_samples is None else check_positive_int("num_samples", num_samples)
        if not replacement and self._epoch_size > num_positive:
            fail(
                "num_samples",
                f"at most {num_positive} (the samples with a non-zero weight) when replacement=False",
                num_samples,
            )

    @property
    def epoch_size(self) -> int:
        return self._epoch_size

    def draw(self, rng: np.random.Generator, epoch: int) -> np.ndarray:
        if self.scheme is not None:
            return self._draw_by_class(rng)
        if self.replacement:
            return self._draw_by_cdf(rng)
        return self._draw_without_replacement(rng, self._sample_weights, positions=None)

    def compute_expected_class_counts(self) -> torch.Tensor:
        size = self._epoch_size
        if self.replacement:
            expected = size * self._class_mass / self._class_mass.sum()
        elif size == self._num_positive and self.scheme is not None:
            expected = self.class_counts.numpy() * (self.sample_class_weights > 0)
        elif size == self._num_positive:
            expected = self._class_positive
        elif self.scheme is not None:
            counts = self.class_counts.numpy().astype(np.float64)
            expected = counts * _inclusion_probability(self.sample_class_weights, counts, size)
        else:
            inclusion = _inclusion_probability(self._sample_weights, np.ones(1), size)
            expected = np.bincount(self.labels.numpy(), weights=inclusion, minlength=self.num_classes)
        return torch.from_numpy(np.asarray(expected, dtype=np.float64))

    # -- draws -------------------------------------------------------------------------------

    def _draw_by_class(self, rng: np.random.Generator) -> np.ndarray:
        counts = self.class_counts.numpy()
        if not self.replacement:
            weights = np.repeat(self.sample_class_weights, counts)
            return self._draw_without_replacement(rng, weights, positions=self._sorted)
        per_class = rng.multinomial(self._epoch_size, self._class_mass / self._class_mass.sum())
        positions = np.empty(self._epoch_size, dtype=self._dtype)
        start = 0
        for cls in np.flatnonzero(per_class):
            stop = start + per_class[cls]
            low = self._offsets[cls]
            positions[start:stop] = rng.integers(low, low + counts[cls], size=per_class[cls], dtype=self._dtype)
            start = stop
        indices = self._sorted[positions]
        rng.shuffle(indices)
        return indices

    def _draw_by_cdf(self, rng: np.random.Generator) -> np.ndarray:
        targets = rng.random(self._epoch_size)
        targets.sort()
        targets *= self._cdf[-1]
        indices = np.empty(self._epoch_size, dtype=self._dtype)
        for start in range(0, self._epoch_size, SEARCH_SLICE):
            found = np.searchsorted(self._cdf, targets[start : start + SEARCH_SLICE], side="right")
            # Rounding can put a target on the CDF's last value: never past the last drawable sample.
            indices[start : start + found.size] = np.minimum(found, self._last_positive)
        rng.shuffle(indices)  # the draws came out sorted by index
        return indices

    def _draw_without_replacement(
        self, rng: np.random.Generator, weights: np.ndarray, positions: np.ndarray | None
    ) -> np.ndarray:
        """Efraimidis–Spirakis: the ``epoch_size`` smallest of ``Exp(1) / w``; ``positions`` maps to indices."""
        if self._epoch_size == self._num_positive:
            chosen = np.flatnonzero(weights > 0)
        else:
            keys = rng.standard_exponential(weights.size)
            with np.errstate(divide="ignore", invalid="ignore"):
                keys /= weights  # weight 0 -> inf (or nan): never among the smallest
            chosen = np.argpartition(keys, self._epoch_size - 1)[: self._epoch_size]
        indices = (positions[chosen] if positions is not None else chosen).astype(self._dtype, copy=False)
        rng.shuffle(indices)
        return indices


def _sample_weights(weights: torch.Tensor | np.ndarray, size: int) -> np.ndarray:
    """Validate per-sample weights and return them as a float64 array."""
    array = weights.detach().cpu().numpy() if isinstance(weights, torch.Tensor) else np.asarray(weights)
    if array.ndim != 1 or array.shape[0] != size:
        fail("weights", f"a scheme name or a 1-D per-sample weight tensor of length {size}", f"shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        fail("weights", "real per-sample weights", f"dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    if not np.isfinite(array).all():
        fail("weights", "finite per-sample weights", f"{np.count_nonzero(~np.isfinite(array))} NaN or infinite entries")
    if (array < 0).any():
        fail("weights", "non-negative per-sample weights", float(array[array < 0][0]))
    if not array.any():
        fail("weights", "per-sample weights with at least one non-zero entry", "all zeros")
    return array


def _inclusion_probability(weights: np.ndarray, multiplicity: np.ndarray, size: int) -> np.ndarray:
    r"""Probability that each item is among ``size`` draws without replacement with these weights.

    Rosén's approximation for Efraimidis–Spirakis (successive) sampling:
    :math:`\pi_i = 1 - e^{-w_i t}` with ``t`` solving
    :math:`\sum_i m_i (1 - e^{-w_i t}) = size`. The ``size``-th smallest key
    concentrates at ``t``, so the relative error vanishes as the number of
    samples grows. ``multiplicity`` counts identical items (broadcasts).
    """
    mass = multiplicity * weights
    t = size / mass.sum()  # the tangent at 0; the sum is concave, so Newton climbs from below
    for _ in range(200):
        excess = (multiplicity * -np.expm1(-weights * t)).sum() - size
        slope = (mass * np.exp(-weights * t)).sum()
        if slope <= 0:
            break
        step = -excess / slope
        t += step
        if abs(step) <= 1e-13 * t:
            break
    return -np.expm1(-weights * t)
