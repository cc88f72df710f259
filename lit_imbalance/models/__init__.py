"""Ready-made imbalance-aware models: an MLP, the CIFAR ResNets, any timm backbone."""

from lit_imbalance.models.base import ImbalanceClassifier
from lit_imbalance.heads import NormedLinear, find_classifier_head
from lit_imbalance.models.mlp import MLPClassifier
from lit_imbalance.models.resnet_cifar import ResNetCIFAR, ResNetCIFARClassifier
from lit_imbalance.models.timm import TimmClassifier

__all__ = [
    "ImbalanceClassifier",
    "MLPClassifier",
    "NormedLinear",
    "ResNetCIFAR",
    "ResNetCIFARClassifier",
    "TimmClassifier",
    "find_classifier_head",
]
