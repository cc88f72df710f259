"""The three classification tasks, defined once for the criterion, the metrics and the mixin.

* ``multiclass``: logits ``(N, C)``, class indices ``(N,)``;
* ``binary``: one logit ``(N,)`` or ``(N, 1)``, targets 0/1 (two classes);
* ``multilabel``: logits ``(N, L)``, multi-hot targets ``(N, L)``.
"""

from __future__ import annotations

from typing import Literal

from lit_imbalance._checks import check_choice, check_positive_int, fail

Task = Literal["multiclass", "binary", "multilabel"]
TASKS: tuple[Task, ...] = ("multiclass", "binary", "multilabel")


def check_task(task: str) -> Task:
    """Return ``task`` if it is one of :data:`TASKS`.

    Example:
        >>> check_task("binary")
        'binary'
    """
    return check_choice("task", task, TASKS)


def resolve_num_classes(task: str, num_classes: int | None) -> int:
    """The number of classes (labels) of ``task``: 2 for binary, given and positive otherwise.

    Example:
        >>> resolve_num_classes("binary", None), resolve_num_classes("multiclass", 10)
        (2, 10)
    """
    check_task(task)
    if task == "binary":
        if num_classes not in (None, 2):
            fail("num_classes", "2 or None for task='binary' (one logit: negative vs positive)", num_classes)
        return 2
    if num_classes is None:
        fail("num_classes", f"a positive integer for task={task!r}", None)
    return check_positive_int("num_classes", num_classes)


def num_outputs(task: str, num_classes: int) -> int:
    """Logits per sample: 1 for binary, one per class or label otherwise.

    Example:
        >>> num_outputs("binary", 2), num_outputs("multilabel", 5)
        (1, 5)
    """
    return 1 if check_task(task) == "binary" else num_classes
