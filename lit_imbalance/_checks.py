"""Argument validation shared by every public entry point.

Errors follow one template so that a user who mistyped ``loss.gamma=-1`` reads
the argument and the value back: "Expected argument `gamma` to be a
non-negative float, but got -1."
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


class InvalidArgument(Exception):
    """Marks an error in what the user passed (a config value, an argument, a file), not a bug.

    :func:`fail` raises subclasses that are also the matching built-in
    (``ValueError``, ``TypeError``, ``FileNotFoundError``), so callers catch
    them as usual; the app reports them in one line instead of a traceback
    (:func:`lit_imbalance.errors.report_user_errors`).
    """


_INVALID: dict[type[Exception], type[Exception]] = {}


def invalid(exc: type[Exception]) -> type[Exception]:
    """The :class:`InvalidArgument` subclass of ``exc`` (one per built-in, made once).

    Example:
        >>> issubclass(invalid(ValueError), ValueError), issubclass(invalid(ValueError), InvalidArgument)
        (True, True)
    """
    if exc not in _INVALID:
        _INVALID[exc] = type(exc.__name__, (InvalidArgument, exc), {"__module__": exc.__module__})
    return _INVALID[exc]


def fail(name: str, expected: str, value: Any, exc: type[Exception] = ValueError) -> None:
    """Raise ``exc`` (marked as :class:`InvalidArgument`) in the project's single error format.

    Example:
        >>> fail("gamma", "a non-negative float", -1)
        Traceback (most recent call last):
        ...
        ValueError: Expected argument `gamma` to be a non-negative float, but got -1.
    """
    raise invalid(exc)(f"Expected argument `{name}` to be {expected}, but got {value!r}.")


def check_non_negative(name: str, value: float) -> float:
    """Return ``value`` as a float if it is finite and ``>= 0``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        fail(name, "a non-negative float", value)
    return float(value)


def check_positive(name: str, value: float) -> float:
    """Return ``value`` as a float if it is finite and ``> 0``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        fail(name, "a positive float", value)
    return float(value)


def check_bool(name: str, value: bool, exc: type[Exception] = ValueError) -> bool:
    """Return ``value`` if it is a bool (``0``, ``1`` and ``"true"`` are refused, not read as flags).

    Example:
        >>> check_bool("standardize", "yes")
        Traceback (most recent call last):
        ...
        ValueError: Expected argument `standardize` to be a bool, but got 'yes'.
    """
    if not isinstance(value, bool):
        fail(name, "a bool", value, exc)
    return value


def check_positive_int(name: str, value: int) -> int:
    """Return ``value`` if it is an int ``> 0``."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        fail(name, "a positive integer", value)
    return value


def check_in_unit_interval(name: str, value: float, *, open_right: bool = False) -> float:
    """Return ``value`` as a float if it lies in ``[0, 1]`` (``[0, 1)`` with ``open_right``)."""
    upper_ok = (lambda v: v < 1) if open_right else (lambda v: v <= 1)
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not (value >= 0 and upper_ok(value))
    ):
        fail(name, "a float in [0, 1)" if open_right else "a float in [0, 1]", value)
    return float(value)


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        fail(name, "one of " + ", ".join(repr(c) for c in choices), value)
    return value


def check_length(name: str, values: Sequence[Any], length: int) -> Sequence[Any]:
    """Return ``values`` if it has exactly ``length`` entries."""
    if len(values) != length:
        fail(name, f"a sequence of length {length} (one entry per class)", list(values))
    return values
