"""Feature standardisation fitted on the training rows, for feature arrays and table columns.

An MLP trained with Adam on raw features is at the mercy of their units: a
column in thousands swamps one in fractions, and the first layer spends its
steps undoing the scale. On six hold-outs of the benchmark suite's training
splits (validation only), a plain logit-adjusted MLP loop read 7.2% balanced
accuracy on raw leaf features against 97.6% standardised, and 34.9% against
99.3% on penguins. So the feature-array modules standardise by default, with the
*training* split's statistics only: validation and test rows are scaled the
same way and never seen by the fit.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch


def column_statistics(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation of ``values`` ``(N, D)``, missing values (NaN) ignored.

    A constant or all-missing column carries nothing: it gets mean 0 (all-missing)
    or its value, and std 1, so it is centred and never divided by zero.

    Example:
        >>> mean, std = column_statistics(np.array([[1.0, 5.0], [3.0, 5.0]]))
        >>> mean.tolist(), std.tolist()
        ([2.0, 5.0], [1.0, 1.0])
    """
    values = np.asarray(values, dtype=np.float64)
    with warnings.catch_warnings():
        # "Mean of empty slice" for an all-missing column, which gets mean 0 below anyway.
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, axis=0)
        std = np.nanstd(values, axis=0)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    return mean, std


@dataclass(frozen=True)
class Standardizer:
    """``(x - mean) / std`` per feature, with the statistics of the rows it was fitted on.

    Fitted and applied in float64 on the arrays as stored, and only then cast to
    float32: a feature with a large offset and a small spread (a timestamp, say)
    keeps its spread, which a float32 cast first would round away.

    Example:
        >>> scaler = Standardizer.fit(np.array([[0.0, 10.0], [2.0, 30.0]]))
        >>> scaler.transform(np.array([[1.0, 50.0]])).tolist()
        [[0.0, 3.0]]
    """

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        """The statistics of the rows of ``x`` ``(N, D)``."""
        mean, std = column_statistics(x)
        return cls(torch.from_numpy(mean), torch.from_numpy(std))

    def transform(self, x: np.ndarray) -> torch.Tensor:
        """``x`` scaled, as a float32 tensor."""
        return ((torch.as_tensor(np.asarray(x, dtype=np.float64)) - self.mean) / self.std).float()
