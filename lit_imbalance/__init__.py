"""lit_imbalance: class-imbalance losses, samplers and a LightningModule mixin."""

from lit_imbalance.mixin import ImbalanceMixin
from lit_imbalance.schedule import LossWarmup
from lit_imbalance.weights import class_weights

__all__ = ["ImbalanceMixin", "LossWarmup", "class_weights"]
__version__ = "0.1.0"
