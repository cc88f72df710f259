"""Finding a model's classifier head: the layer the bias prior and two-stage methods work on."""

from __future__ import annotations

from torch import nn

from lit_imbalance._checks import fail


def find_classifier_head(
    model: nn.Module, num_outputs: int, head: nn.Module | str | None = None, where: str = "given"
) -> nn.Module:
    """The classifier layer of ``model``: given, timm's ``get_classifier()``, or the only fitting ``nn.Linear``.

    Args:
        model: the network.
        num_outputs: logits per sample (1 for binary).
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
        if module is not model and callable(get_classifier):
            found = get_classifier()
            if isinstance(found, nn.Module) and getattr(found, "out_features", None) == num_outputs:
                return found
    candidates = [name for name, module in modules.items()
                  if isinstance(module, nn.Linear) and module.out_features == num_outputs]
    if len(candidates) != 1:
        found = f"layers {candidates}" if candidates else "none"
        fail("head", f"{where} (looked for the only nn.Linear with {num_outputs} outputs; or pass bias_prior=False)",
             found)
    return modules[candidates[0]]
