"""Small predicates the config dataclasses share when they validate their fields on construction."""
from __future__ import annotations

import math
import numbers


def is_int(v) -> bool:
    """An integer that is not a bool (``True`` is an int to Python, never a step count to a user)."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_real(v) -> bool:
    """A finite real number that is not a bool (NaN and ±inf are refused)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def refuse(owner: str, name: str, value, allowed: str):
    """Raise the one error every config uses: ``<owner>.<name>=<value> is not allowed; <allowed>``."""
    raise ValueError(f"{owner}.{name}={value!r} is not allowed; {allowed}")
