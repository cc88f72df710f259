"""lit_imbalance: class-imbalance losses, samplers and a LightningModule mixin.

The parts compose: :class:`ImbalanceCriterion` (loss + warm-up/DRW + class
prior), :class:`ImbalanceMetrics` (a torchmetrics ``Metric``), and
:class:`ImbalanceMixin`, the facade that wires them into a LightningModule.
"""

from lit_imbalance import losses, sampling
from lit_imbalance.criterion import ImbalanceCriterion
from lit_imbalance.losses import available_losses, build_loss
from lit_imbalance.metrics import ImbalanceMetrics
from lit_imbalance.mixin import ImbalanceMixin
from lit_imbalance.schedule import LossWarmup
from lit_imbalance.weights import class_weights

__all__ = [
    "ImbalanceCriterion",
    "ImbalanceMetrics",
    "ImbalanceMixin",
    "LossWarmup",
    "available_losses",
    "build_loss",
    "class_weights",
    "losses",
    "sampling",
]
__version__ = "0.1.0"
