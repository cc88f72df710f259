"""Lightning callbacks of lit_imbalance."""

from lit_imbalance.callbacks.calibration import TemperatureScaling
from lit_imbalance.callbacks.hard_negative_mining import HardNegativeMining
from lit_imbalance.callbacks.head_training import FrozenBackbone, MaxNorm
from lit_imbalance.callbacks.metrics_json import MetricsJsonWriter
from lit_imbalance.callbacks.plots import ImbalancePlots
from lit_imbalance.callbacks.rng_state import RNGStateCheckpoint
from lit_imbalance.callbacks.step_budget import MinimumSteps
from lit_imbalance.callbacks.thresholds import ThresholdTuning

__all__ = ["FrozenBackbone", "HardNegativeMining", "ImbalancePlots", "MaxNorm", "MetricsJsonWriter", "MinimumSteps", "RNGStateCheckpoint",
           "TemperatureScaling", "ThresholdTuning"]
