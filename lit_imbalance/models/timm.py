"""Any timm backbone as an imbalance-aware classifier: ``model=timm model.name=resnet18``."""

from __future__ import annotations

from typing import Any

from lit_imbalance.tasks import Task
from lit_imbalance.models.base import ImbalanceClassifier


class TimmClassifier(ImbalanceClassifier):
    """``timm.create_model(name, pretrained, num_classes=C)``, its head found by ``get_classifier()``.

    timm builds the model with a fresh ``C``-output classifier (the pretrained
    one, when loaded, is dropped); :func:`~lit_imbalance.heads.find_classifier_head`
    locates it for the bias prior and for two-stage methods.

    Args:
        name: any ``timm.list_models()`` name (``resnet18``, ``convnext_tiny``, ``vit_small_patch16_224``).
        num_classes: number of classes ``C``.
        pretrained: load timm's pretrained weights (downloaded from the Hugging
            Face hub on first use, or read from its cache).
        in_chans: input channels.
        drop_rate: dropout before the classifier.
        task: ``"multiclass"``, ``"binary"`` (one output) or ``"multilabel"``.
        channels_last: channels-last weights and batches on a CUDA device.
        model_kwargs: further keyword arguments of ``timm.create_model``.
        **classifier_args: ``loss``, ``optimizer``, ``scheduler``, ``class_names``,
            ``warmup``, ``bias_prior``, ``posthoc_tau``: see
            :class:`~lit_imbalance.models.base.ImbalanceClassifier`.

    Example:
        >>> model = TimmClassifier("resnet18", num_classes=5)
        >>> model.classifier_head() is model.network.fc
        True
    """

    def __init__(
        self,
        name: str,
        num_classes: int,
        pretrained: bool = False,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        task: Task = "multiclass",
        channels_last: bool = True,
        model_kwargs: dict[str, Any] | None = None,
        **classifier_args: Any,
    ) -> None:
        import timm

        network = timm.create_model(
            name, pretrained=pretrained, num_classes=1 if task == "binary" else num_classes,
            in_chans=in_chans, drop_rate=drop_rate, **(model_kwargs or {}),
        )
        super().__init__(network, num_classes=num_classes, task=task, channels_last=channels_last, **classifier_args)
