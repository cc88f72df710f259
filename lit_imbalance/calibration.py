"""Temperature scaling (Guo et al. 2017): one scalar ``T > 0`` that makes ``softmax(logits / T)`` calibrated.

The temperature is fitted on held-out (validation) outputs by minimising the
negative log-likelihood; dividing every logit by the same positive number
keeps each sample's ranking of the classes, so accuracy, balanced accuracy and
AUROC are unchanged and only the confidences move. The callback that fits it
after training is :class:`~lit_imbalance.callbacks.TemperatureScaling`.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from lit_imbalance._checks import check_choice, fail
from lit_imbalance.metrics import IGNORE_INDEX
from lit_imbalance.tasks import TASKS, Task


def negative_log_likelihood(logits: Tensor, targets: Tensor, task: Task = "multiclass") -> Tensor:
    """Mean NLL of ``logits``: cross-entropy (multiclass) or binary cross-entropy per label entry.

    Targets equal to ``-100`` are left out.

    Args:
        logits: ``(N, C)`` (multiclass, multi-label) or ``(N,)``/``(N, 1)`` (binary).
        targets: class indices ``(N,)``, or 0/1 of the logits' shape.
        task: ``"multiclass"``, ``"binary"`` or ``"multilabel"``.

    Example:
        >>> round(negative_log_likelihood(torch.tensor([[2.0, 0.0]]), torch.tensor([0])).item(), 4)
        0.1269
    """
    check_choice("task", task, TASKS)
    if task == "multiclass":
        return F.cross_entropy(logits, targets.long(), ignore_index=IGNORE_INDEX)
    targets = targets.reshape(logits.shape)
    valid = targets != IGNORE_INDEX
    return F.binary_cross_entropy_with_logits(logits[valid], targets[valid].to(logits.dtype))


def fit_temperature(logits: Tensor, targets: Tensor, task: Task = "multiclass", max_iter: int = 100) -> float:
    r"""The temperature :math:`T > 0` minimising the NLL of ``logits / T`` on ``(logits, targets)``.

    Optimises :math:`\log T` (so that :math:`T` stays positive without a
    constraint) with L-BFGS and a strong-Wolfe line search, in float64: the
    NLL is smooth and, in :math:`1/T`, convex, so the optimum is global.

    Args:
        logits: validation logits ``(N, C)`` (binary: ``(N,)`` or ``(N, 1)``).
        targets: their labels, see :func:`negative_log_likelihood`.
        task: ``"multiclass"``, ``"binary"`` or ``"multilabel"`` (one sigmoid per label: one shared ``T``).
        max_iter: L-BFGS iterations.

    Returns:
        The temperature; ``> 1`` softens over-confident logits, ``< 1`` sharpens.

    Example:
        >>> generator = torch.Generator().manual_seed(0)
        >>> targets = torch.randint(0, 3, (20000,), generator=generator)
        >>> features = torch.randn(20000, 3, generator=generator) + 2 * F.one_hot(targets, 3)
        >>> calibrated = 2 * features  # the true posterior's logits for unit-variance classes at 2 * e_c
        >>> round(fit_temperature(3 * calibrated, targets), 1)  # logits three times too sure
        3.0
    """
    # Lightning's test loop runs under inference mode: the fit needs autograd, and copies of the
    # (inference) tensors made outside it.
    with torch.inference_mode(False), torch.enable_grad():
        logits = torch.as_tensor(logits).detach().to("cpu", torch.float64, copy=True)
        targets = torch.as_tensor(targets).detach().to("cpu", copy=True)
        if logits.numel() == 0 or logits.shape[0] != targets.shape[0]:
            fail("logits", f"a non-empty batch with one row per target ({targets.shape[0]})", tuple(logits.shape))
        if not bool(torch.isfinite(logits).all()):
            fail("logits", "finite values", "non-finite logits")
        log_temperature = torch.zeros((), dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([log_temperature], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            optimizer.zero_grad()
            loss = negative_log_likelihood(logits / log_temperature.exp(), targets, task)
            loss.backward()
            return loss

        optimizer.step(closure)
        return float(log_temperature.detach().exp())
