"""Classifier heads, and the one helper that finds the head of any model.

The bias prior, post-hoc adjustment and two-stage methods (re-train or
re-scale the classifier on a frozen backbone) all need "the classifier
layer"; :func:`find_classifier` is how every part of the library locates it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_imbalance._checks import check_positive_int, fail


class NormedLinear(nn.Module):
    r"""The cosine classifier of LDAM-DRW: ``out[n, c] = <x_n / |x_n|, w_c / |w_c|>``.

    No bias and no scale: LDAM's loss multiplies the cosines by ``s`` itself.
    The weight is stored ``(in_features, out_features)`` and initialised as in the
    reference (uniform in ``[-1, 1]``, every output's column rescaled to unit norm).

    Example:
        >>> head = NormedLinear(4, 3)
        >>> out = head(torch.randn(5, 4))
        >>> out.shape, bool(out.abs().max() <= 1 + 1e-6)
        (torch.Size([5, 3]), True)
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        with torch.no_grad():
            # renorm to at most 1e-5 then x1e5: every column ends with norm 1 (the reference's init).
            self.weight.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=1).mm(F.normalize(self.weight, dim=0))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


CLASSIFIER_LAYERS = (nn.Linear, NormedLinear)


def find_classifier(model: nn.Module, num_outputs: int | None = None) -> nn.Module:
    """The classifier layer of ``model``, a submodule of it.

    Timm models say where their head is (``model.get_classifier()``); that
    answer is used when it is a layer with ``num_outputs`` outputs. Otherwise
    the head is the only ``nn.Linear`` (or :class:`NormedLinear`) with
    ``num_outputs`` outputs, or, when ``num_outputs`` is ``None``, the last such layer
    registered.

    Args:
        model: any ``nn.Module``.
        num_outputs: outputs of the head (``C``; 1 for a binary head), or ``None``.

    Raises:
        ValueError: naming ``head`` when no layer, or more than one, qualifies.

    Example:
        >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
        >>> find_classifier(net, num_outputs=3) is net[2]
        True
        >>> find_classifier(nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3)), num_outputs=3)
        Traceback (most recent call last):
        ...
        ValueError: Expected argument `head` to be the only linear layer with 3 outputs (pass the head explicitly), but got 'layers 0, 1'.
    """
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        head = get_classifier()
        if isinstance(head, CLASSIFIER_LAYERS) and (num_outputs is None or head.out_features == num_outputs):
            return head
    candidates = [
        (name, module) for name, module in model.named_modules()
        if isinstance(module, CLASSIFIER_LAYERS) and (num_outputs is None or module.out_features == num_outputs)
    ]
    if num_outputs is None and candidates:
        return candidates[-1][1]
    if len(candidates) != 1:
        found = "layers " + ", ".join(name for name, _ in candidates) if candidates else "none"
        fail("head", f"the only linear layer with {num_outputs} outputs (pass the head explicitly)", found)
    return candidates[0][1]
