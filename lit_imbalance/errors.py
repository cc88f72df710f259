"""User errors in one line, before any training starts; bugs keep their traceback.

A bad config value, argument or file raises an error marked
:class:`~lit_imbalance._checks.InvalidArgument` that names the key and the
value. :func:`report_user_errors` prints such an error as one line (with the
config key Hydra adds, ``full_key``) and exits with status 2, as argument
errors do on the command line. ``HYDRA_FULL_ERROR=1`` keeps the full traceback,
as it does for Hydra's own errors.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable
from typing import TypeVar

from lit_imbalance._checks import InvalidArgument

#: The exit status of a run stopped by a user error (as argparse uses for bad arguments).
USAGE_ERROR = 2
Result = TypeVar("Result")


def user_error_line(error: BaseException) -> str | None:
    """The one-line report of ``error`` if it (or what caused it) is a user error, else ``None``.

    Example:
        >>> from lit_imbalance._checks import fail
        >>> try:
        ...     fail("gamma", "a non-negative float", -1)
        ... except ValueError as error:
        ...     print(user_error_line(error))
        Error: Expected argument `gamma` to be a non-negative float, but got -1.
        >>> user_error_line(KeyError("x")) is None
        True
    """
    full_key = None
    cause: BaseException | None = error
    while cause is not None:
        # Hydra's InstantiationException says which config node failed: "full_key: data".
        found = re.search(r"full_key: (\S+)", str(cause))
        full_key = full_key or (found.group(1) if found else None)
        if isinstance(cause, InvalidArgument):
            where = f" (full_key: {full_key})" if full_key else ""
            return f"Error: {' '.join(str(cause).split())}{where}"
        cause = cause.__cause__ or cause.__context__
    return None


def report_user_errors(task: Callable[..., Result]) -> Callable[..., Result]:
    """Wrap the app's task: a user error becomes one line on stderr and exit status 2."""

    @functools.wraps(task)
    def run(*args: object, **kwargs: object) -> Result:
        try:
            return task(*args, **kwargs)
        except Exception as error:
            line = user_error_line(error)
            if line is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(line, file=sys.stderr)
            raise SystemExit(USAGE_ERROR) from None

    return run
