"""Classifier heads, and the one helper that finds the head of any model.

The bias prior, post-hoc adjustment and two-stage methods (re-train or
re-scale the classifier on a frozen backbone) all need "the classifier
layer"; :func:`find_classifier_head` is how every part of the library locates it.
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


#: The layer types a classifier head can be.
CLASSIFIER_LAYERS = (nn.Linear, NormedLinear)


def find_classifier_head(
    model: nn.Module, num_outputs: int | None = None, head: nn.Module | str | None = None, where: str = "given"
) -> nn.Module:
    """The classifier layer of ``model``: given, timm's ``get_classifier()``, or the only fitting linear layer.

    Args:
        model: the network.
        num_outputs: logits per sample (``C``; 1 for binary), or ``None`` for the
            last linear layer registered.
        head: the layer itself, its attribute path (``"classifier.2"``), or
            ``None`` to look for it.
        where: how the error says to pass the head, e.g. ``"given to configure_imbalance"``.

    Raises:
        ValueError: naming ``head`` when the given one is not a submodule, or no
            single candidate is found.

    Example:
        >>> net = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3))
        >>> find_classifier_head(net, 3) is net[2]
        True
        >>> find_classifier_head(nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3)), 3)
        Traceback (most recent call last):
        ...
        ValueError: Expected argument `head` to be given (looked for the only linear layer with 3 outputs; or pass bias_prior=False), but got "layers ['0', '1']".
    """
    modules = dict(model.named_modules())
    if isinstance(head, str):
        if head not in modules:
            fail("head", "the attribute path of a submodule", head)
        return modules[head]
    if head is not None:
        if not any(module is head for module in modules.values()):
            fail("head", "a submodule of the model", type(head).__name__)
        return head
    # timm models (and anything that follows their convention) name their own head.
    for module in modules.values():
        get_classifier = getattr(module, "get_classifier", None)
        if callable(get_classifier):
            found = get_classifier()
            if isinstance(found, CLASSIFIER_LAYERS) and num_outputs in (None, found.out_features):
                return found
    candidates = [name for name, module in modules.items()
                  if isinstance(module, CLASSIFIER_LAYERS) and num_outputs in (None, module.out_features)]
    if num_outputs is None and candidates:
        return modules[candidates[-1]]
    if len(candidates) != 1:
        found_text = f"layers {candidates}" if candidates else "none"
        fail("head", f"{where} (looked for the only linear layer with {num_outputs} outputs; "
             "or pass bias_prior=False)", found_text)
    return modules[candidates[0]]
