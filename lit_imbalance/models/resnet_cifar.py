"""The CIFAR ResNets of the long-tail papers (ResNet-32 in LDAM-DRW and its successors).

He et al.'s CIFAR ResNet as in the LDAM-DRW code (``models/resnet_cifar.py``):
a 3x3 stem of 16 channels, three stages of ``n`` basic blocks with 16, 32 and
64 channels (depth ``6n + 2``; ResNet-32 is ``n = 5``), parameter-free
"option A" shortcuts (stride-2 subsampling and zero-padded channels), global
average pooling, a linear or cosine (:class:`~lit_imbalance.heads.NormedLinear`)
head, Kaiming-normal initialisation of every convolution and linear weight.
ResNet-32 has 464,154 parameters with a linear head on 10 classes.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from lit_imbalance._checks import fail
from lit_imbalance.tasks import Task
from lit_imbalance.models.base import ImbalanceClassifier
from lit_imbalance.heads import NormedLinear

STAGE_WIDTHS = (16, 32, 64)


class PadShortcut(nn.Module):
    """Option-A shortcut: take every second pixel and zero-pad the new channels, half on each side."""

    def __init__(self, extra_channels: int) -> None:
        super().__init__()
        self.extra_channels = extra_channels

    def forward(self, x: Tensor) -> Tensor:
        half = self.extra_channels // 2
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, half, half))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a shortcut, ReLU after the sum."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        changes_shape = stride != 1 or in_channels != channels
        self.shortcut: nn.Module = PadShortcut(channels - in_channels) if changes_shape else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCIFAR(nn.Module):
    """The network alone: ``(N, 3, 32, 32)`` images in, ``(N, num_classes)`` logits out.

    Args:
        depth: ``6n + 2`` (20, 32, 44, 56, 110).
        num_classes: outputs of the head.
        normed_head: a cosine classifier (LDAM's ``NormedLinear``) instead of ``nn.Linear``.

    Example:
        >>> import torch
        >>> net = ResNetCIFAR(depth=32, num_classes=10)
        >>> net(torch.zeros(2, 3, 32, 32)).shape, sum(p.numel() for p in net.parameters())
        (torch.Size([2, 10]), 464154)
    """

    def __init__(self, depth: int = 32, num_classes: int = 10, normed_head: bool = False) -> None:
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            fail("depth", "6n + 2 for a positive integer n (20, 32, 44, 56, 110)", depth)
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, STAGE_WIDTHS[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0])
        stages, width = [], STAGE_WIDTHS[0]
        for index, channels in enumerate(STAGE_WIDTHS):
            stride = 1 if index == 0 else 2
            layers = []
            for block in range(blocks):
                layers.append(BasicBlock(width, channels, stride if block == 0 else 1))
                width = channels
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear: nn.Module = NormedLinear(width, num_classes) if normed_head else nn.Linear(width, num_classes)
        for module in self.modules():
            # NormedLinear keeps its own (unit-column) initialisation, as in the reference.
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


class ResNetCIFARClassifier(ImbalanceClassifier):
    """A CIFAR ResNet (ResNet-32 by default) with the imbalance-aware steps, optimizer and schedule.

    Args:
        num_classes: number of classes ``C``.
        depth: ``6n + 2``; 32 in the long-tail papers.
        normed_head: LDAM's cosine classifier (no bias: use ``bias_prior=false``,
            as ``method=ldam_drw`` does).
        task: ``"multiclass"`` or ``"binary"`` (one output).
        channels_last: channels-last weights and batches on a CUDA device.
        **classifier_args: ``loss``, ``optimizer``, ``scheduler``, ``class_names``,
            ``warmup``, ``bias_prior``, ``posthoc_tau``: see
            :class:`~lit_imbalance.models.base.ImbalanceClassifier`.
    """

    def __init__(
        self,
        num_classes: int,
        depth: int = 32,
        normed_head: bool = False,
        task: Task = "multiclass",
        channels_last: bool = True,
        **classifier_args: Any,
    ) -> None:
        network = ResNetCIFAR(depth, 1 if task == "binary" else num_classes, normed_head=normed_head)
        super().__init__(network, num_classes=num_classes, task=task, channels_last=channels_last, **classifier_args)
