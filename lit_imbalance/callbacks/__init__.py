"""Lightning callbacks of lit_imbalance."""

from lit_imbalance.callbacks.metrics_json import MetricsJsonWriter

__all__ = ["MetricsJsonWriter"]
