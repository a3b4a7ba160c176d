"""Operation counts instead of wall-clock asserts (the CI machine is shared and its timings are noise): the
number of Python-level calls (functions and builtins) a function makes, with sys.setprofile."""

from __future__ import annotations

import sys
from collections.abc import Callable


def python_calls(fn: Callable[[], object]) -> int:
    """Calls made while running `fn()`: Python functions and builtin functions/methods (a loop over rows that
    calls one makes one per row; numpy's and the csv module's C loops make none). Calls of types
    (`float(x)`, `str(x)`) are not reported by the profiler."""
    count = 0

    def profile(frame, event, arg):
        nonlocal count
        count += event in ("call", "c_call")

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count
