"""lit_imbalance: class-imbalance losses, samplers and a LightningModule mixin."""

from lit_imbalance import losses, sampling
from lit_imbalance.losses import available_losses, build_loss
from lit_imbalance.mixin import ImbalanceMixin
from lit_imbalance.schedule import LossWarmup
from lit_imbalance.weights import class_weights

__all__ = [
    "ImbalanceMixin",
    "LossWarmup",
    "available_losses",
    "build_loss",
    "class_weights",
    "losses",
    "sampling",
]
__version__ = "0.1.0"
