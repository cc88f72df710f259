"""Batch mixing for long-tailed training: mixup, remix and label-aware smoothing.

Each transform maps a training batch ``(x, y)`` to ``(x', q)``, where ``q``
is a soft target ``(N, C)`` (binary and multi-label: mixed float targets).
The losses linear in their target take ``q`` directly (see
:func:`~lit_imbalance.losses._fused_softmax.soft_target_cross_entropy` and
:func:`~lit_imbalance.criterion.check_soft_targets`); the mixin rejects the
others up front. The functions are the definitions, the
modules hold their hyper-parameters:

* :class:`Mixup` (Zhang et al., 2018): ``x' = lam x_i + (1 - lam) x_j``,
  ``q = lam e_i + (1 - lam) e_j``, ``lam ~ Beta(alpha, alpha)``;
* :class:`Remix` (Chou et al., 2020): mixup's inputs, but the label goes to
  the minority class when the pair is imbalanced enough (:func:`remix_label_weights`);
* :class:`LabelAwareSmoothing` (Zhong et al., 2021, MiSLAS): label smoothing
  whose strength grows with the class's training count (:func:`label_aware_epsilon`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_imbalance._checks import check_choice, check_in_unit_interval, check_positive, fail
from lit_imbalance.tasks import Task

SMOOTHING_SHAPES = ("concave", "linear", "convex")


def mix(x: Tensor, permutation: Tensor, lam: float | Tensor) -> Tensor:
    """``lam * x + (1 - lam) * x[permutation]``; ``lam`` a scalar or one value per sample."""
    lam = torch.as_tensor(lam, dtype=x.dtype if x.is_floating_point() else torch.float32, device=x.device)
    if lam.ndim == 1:
        lam = lam.view(-1, *([1] * (x.ndim - 1)))
    return lam * x + (1 - lam) * x[permutation]


def soft_labels(target: Tensor, num_classes: int, task: Task = "multiclass") -> Tensor:
    """Class indices as one-hot float rows (multiclass); binary / multi-label targets as floats."""
    if task == "multiclass":
        if target.is_floating_point() and target.ndim == 2:
            return target
        return F.one_hot(target.long(), num_classes).float()
    return target.float()


def remix_label_weights(lam: float, counts_i: Tensor, counts_j: Tensor, kappa: float = 3.0, tau: float = 0.5) -> Tensor:
    r"""Remix's label weight :math:`\lambda_y` of each pair ``(i, j)`` (Chou et al., 2020, Eq. 3).

    .. math::
        \lambda_y = \begin{cases}
            0 & n_i / n_j \ge \kappa \text{ and } \lambda < \tau \\
            1 & n_i / n_j \le 1 / \kappa \text{ and } 1 - \lambda < \tau \\
            \lambda & \text{otherwise}
        \end{cases}

    with :math:`n_i, n_j` the training counts of the two samples' classes; the
    mixed label is :math:`\lambda_y e_i + (1 - \lambda_y) e_j`.

    Example:
        >>> remix_label_weights(0.3, torch.tensor([100, 10, 50]), torch.tensor([10, 100, 40])).tolist()
        [0.0, 0.30000001192092896, 0.30000001192092896]
        >>> remix_label_weights(0.8, torch.tensor([10]), torch.tensor([100])).tolist()
        [1.0]
    """
    ratio = counts_i.double() / counts_j.double().clamp_min(1)
    weights = torch.full(ratio.shape, float(lam), dtype=torch.float32, device=counts_i.device)
    # torch.where, not masked assignment: no host sync on an accelerator.
    weights = torch.where((ratio >= kappa) & (lam < tau), torch.zeros_like(weights), weights)
    return torch.where((ratio <= 1.0 / kappa) & (1.0 - lam < tau), torch.ones_like(weights), weights)


def label_aware_epsilon(class_counts: Tensor, smooth_head: float = 0.3, smooth_tail: float = 0.0,
                        shape: str = "concave") -> Tensor:
    r"""Label-smoothing strength of every class (MiSLAS, Zhong et al., 2021, Eq. 5).

    With :math:`n_1 = \max n`, :math:`n_K = \min n` and
    :math:`r_c = (n_c - n_K) / (n_1 - n_K)`: ``concave`` gives
    :math:`\epsilon_K + (\epsilon_1 - \epsilon_K) \sin(\pi r_c / 2)`, ``linear``
    :math:`\epsilon_K + (\epsilon_1 - \epsilon_K) r_c`, ``convex``
    :math:`\epsilon_1 + (\epsilon_1 - \epsilon_K) \sin(3\pi/2 + \pi r_c / 2)`;
    the most frequent class gets ``smooth_head``, the rarest ``smooth_tail``.

    Example:
        >>> label_aware_epsilon(torch.tensor([100, 55, 10]), 0.3, 0.0, "linear").tolist()
        [0.30000001192092896, 0.15000000596046448, 0.0]
    """
    check_in_unit_interval("smooth_head", smooth_head)
    check_in_unit_interval("smooth_tail", smooth_tail)
    check_choice("shape", shape, SMOOTHING_SHAPES)
    counts = class_counts.double()
    spread = (counts.max() - counts.min()).clamp_min(1e-12)
    ratio = (counts - counts.min()) / spread
    if shape == "concave":
        eps = smooth_tail + (smooth_head - smooth_tail) * torch.sin(ratio * math.pi / 2)
    elif shape == "linear":
        eps = smooth_tail + (smooth_head - smooth_tail) * ratio
    else:
        eps = smooth_head + (smooth_head - smooth_tail) * torch.sin(1.5 * math.pi + ratio * math.pi / 2)
    return eps.float()


def smoothed_labels(target: Tensor, epsilon: Tensor, num_classes: int) -> Tensor:
    r"""Soft targets :math:`(1 - \epsilon_y) e_y + \epsilon_y / C` for class indices ``target``.

    Against them, cross-entropy is MiSLAS's
    :math:`(1 - \epsilon_y)(-\log p_y) + \epsilon_y \cdot \frac{1}{C}\sum_c -\log p_c`.

    Example:
        >>> smoothed_labels(torch.tensor([0]), torch.tensor([0.3, 0.0]), 2).tolist()
        [[0.8500000238418579, 0.15000000596046448]]
    """
    eps = epsilon.to(target.device)[target.long()].unsqueeze(1)
    return (1 - eps) * F.one_hot(target.long(), num_classes).float() + eps / num_classes


class BatchMixer(nn.Module):
    """Base of the batch transforms: ``mixer(x, y, class_counts) -> (x', q)`` for training batches."""

    #: The tasks the transform is defined for.
    tasks: tuple[Task, ...] = ("multiclass", "binary", "multilabel")

    def check_task(self, task: Task) -> None:
        """Fail in one line, naming ``mixup``, for a task the transform is not defined for."""
        if task not in self.tasks:
            fail("mixup", f"a batch transform defined for task={task!r} ({type(self).__name__} supports "
                 f"{list(self.tasks)})", type(self).__name__)

    def forward(self, x: Tensor, target: Tensor, class_counts: Tensor, task: Task = "multiclass") -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class Mixup(BatchMixer):
    """Mixup: pairs of samples and their labels mixed with one ``lam ~ Beta(alpha, alpha)`` per batch.

    Args:
        alpha: the Beta distribution's concentration (1.0: ``lam`` uniform in [0, 1]).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> x, q = Mixup(alpha=1.0)(torch.eye(3), torch.tensor([0, 1, 2]), torch.tensor([5, 3, 1]))
        >>> bool(torch.allclose(q, x))  # one-hot inputs: the mixed label is the mixed input
        True
    """

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = check_positive("mixup.alpha", alpha)

    def sample(self, batch_size: int, device: torch.device) -> tuple[float, Tensor]:
        """``lam`` and the partner of every sample, from torch's global generator (seeded, checkpointed)."""
        lam = float(torch.distributions.Beta(self.alpha, self.alpha).sample())
        return lam, torch.randperm(batch_size, device=device)

    def label_weights(self, lam: float, target: Tensor, permutation: Tensor, class_counts: Tensor) -> float | Tensor:
        """The weight of each sample's own label in the mixed label (mixup: ``lam``)."""
        return lam

    def forward(self, x: Tensor, target: Tensor, class_counts: Tensor, task: Task = "multiclass") -> tuple[Tensor, Tensor]:
        self.check_task(task)
        lam, permutation = self.sample(x.shape[0], x.device)
        labels = soft_labels(target, class_counts.numel(), task)
        weights = self.label_weights(lam, target, permutation, class_counts)
        return mix(x, permutation, lam), mix(labels, permutation, weights)


class Remix(Mixup):
    """Remix: mixup's inputs, labels that favour the minority class of an imbalanced pair.

    Args:
        alpha: as in :class:`Mixup`.
        kappa: the count ratio from which a pair counts as imbalanced (3 in the paper).
        tau: how much of the input the minority sample must at least contribute (0.5).
    """

    tasks = ("multiclass",)

    def __init__(self, alpha: float = 1.0, kappa: float = 3.0, tau: float = 0.5) -> None:
        super().__init__(alpha)
        self.kappa = check_positive("mixup.kappa", kappa)
        self.tau = check_in_unit_interval("mixup.tau", tau)

    def label_weights(self, lam: float, target: Tensor, permutation: Tensor, class_counts: Tensor) -> Tensor:
        counts = class_counts.to(target.device)[target.long()]
        return remix_label_weights(lam, counts, counts[permutation], self.kappa, self.tau)


class LabelAwareSmoothing(BatchMixer):
    """Label-aware smoothing: no input mixing, labels smoothed more for frequent classes (MiSLAS).

    Args:
        smooth_head: smoothing of the most frequent class.
        smooth_tail: smoothing of the rarest class.
        shape: ``"concave"``, ``"linear"`` or ``"convex"`` in between (:func:`label_aware_epsilon`).
    """

    tasks = ("multiclass",)

    def __init__(self, smooth_head: float = 0.3, smooth_tail: float = 0.0, shape: str = "concave") -> None:
        super().__init__()
        label_aware_epsilon(torch.ones(1), smooth_head, smooth_tail, shape)  # validates now
        self.smooth_head, self.smooth_tail, self.shape = smooth_head, smooth_tail, shape

    def forward(self, x: Tensor, target: Tensor, class_counts: Tensor, task: Task = "multiclass") -> tuple[Tensor, Tensor]:
        self.check_task(task)
        epsilon = label_aware_epsilon(class_counts, self.smooth_head, self.smooth_tail, self.shape)
        return x, smoothed_labels(target, epsilon, class_counts.numel())
