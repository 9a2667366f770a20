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


def checked_task(owner: str, task, task_args):
    """``tasks.make_task(task, **task_args)``, with every problem reported as a ValueError naming
    ``<owner>.task`` or ``<owner>.task_args``, its value and what is allowed."""
    from .tasks import make_task

    def fail(name, value, allowed):
        refuse(owner, name, value, allowed)

    if not isinstance(task, str):
        fail("task", task, "must be a task name, e.g. 'addition' or 'chain'")
    if not (isinstance(task_args, dict) and all(not isinstance(v, bool) for v in task_args.values())):
        fail("task_args", task_args, "must be a mapping of task settings, e.g. {'digits': 2}")
    try:
        return make_task(task, **task_args)          # a ValueError on an unknown task or bad values
    except TypeError as e:                           # a setting the task does not have
        fail("task_args", task_args, f"task {task!r} does not take these settings ({e})")
