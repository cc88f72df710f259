"""Lightning callbacks of lit_imbalance."""

from lit_imbalance.callbacks.hard_negative_mining import HardNegativeMining
from lit_imbalance.callbacks.metrics_json import MetricsJsonWriter

__all__ = ["HardNegativeMining", "MetricsJsonWriter"]
