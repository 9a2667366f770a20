"""Validation declared per field and checked by one loop; text read as a field's declared type.

A config field names its rule beside its default and its meaning::

    lr: float = setting(2e-4, number(gt=0))       # AdamW learning rate

``check_fields(cfg)``, called early in ``__post_init__``, walks the fields in order and refuses the
first value its rule rejects, with the one error every config uses (``refuse``)::

    TrainConfig.lr=0 is not allowed; must be a finite number > 0

The few rules that relate two fields (a group baseline needs G ≥ 2) are written out in
``__post_init__`` after the loop. The constructor never converts: ``TrainConfig(lr="1e-3")`` is
refused. Settings that arrive as text — a flag, a YAML string such as ``1e-3`` (YAML 1.1 reads it
as a string) — go through ``read_settings``/``read_as`` first, which read them as the field's
declared type (``"1e-3"`` → 0.001, ``"none"`` → None, ``"a,b"`` → ``["a", "b"]``,
``"correct=1,format=0.2"`` → ``{"correct": 1.0, "format": 0.2}``).
"""
from __future__ import annotations

import collections.abc
import dataclasses
import math
import numbers
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable


def is_int(v) -> bool:
    """An integer that is not a bool (``True`` is an int to Python, never a step count to a user)."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_real(v) -> bool:
    """A finite real number that is not a bool (NaN and ±inf are refused)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def refuse(owner: str, name: str, value, allowed: str, where: str = ""):
    """Raise the one error every config uses: ``<owner>.<name>=<value> is not allowed; <allowed>``
    (``where``, e.g. ``"config file 'run.yaml': "``, goes in front when the value came from a file)."""
    raise ValueError(f"{where}{owner}.{name}={value!r} is not allowed; {allowed}")


# --- rules ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    """A test a field's value must pass, and what to say when it does not."""

    test: Callable[[Any], bool]
    allowed: str                          # completes "<owner>.<name>=<value> is not allowed; …"
    choices: tuple | None = None          # the allowed values, where there are a few (shown by --help)

    def __call__(self, value) -> bool:
        return bool(self.test(value))


def integer(lo: int, hi: int | None = None) -> Rule:
    """An integer (not a bool) ≥ ``lo`` (and ≤ ``hi``)."""
    if hi is None:
        return Rule(lambda v: is_int(v) and v >= lo, f"must be an integer ≥ {lo}")
    return Rule(lambda v: is_int(v) and lo <= v <= hi, f"must be an integer from {lo} to {hi:,}")


def number(*, gt=None, ge=None, lt=None, le=None) -> Rule:
    """A finite number (not a bool) with the given bounds: ``number(gt=0)``, ``number(gt=0, le=1)``."""
    def test(v):
        return (is_real(v) and (gt is None or v > gt) and (ge is None or v >= ge)
                and (lt is None or v < lt) and (le is None or v <= le))

    low = f"({gt}" if gt is not None else f"[{ge}" if ge is not None else None
    high = f"{lt})" if lt is not None else f"{le}]" if le is not None else None
    if low and high:
        return Rule(test, f"must be in {low}, {high}")
    if low:
        return Rule(test, f"must be a finite number {'>' if gt is not None else '≥'} {low[1:]}")
    return Rule(test, "must be a finite number")


def one_of(choices) -> Rule:
    """One of a few names (the keys of a registry such as ``advantages.BASELINES``)."""
    choices = tuple(choices)
    return Rule(lambda v: isinstance(v, str) and v in choices, f"choose one of {list(choices)}", choices)


def optional(rule: Rule) -> Rule:
    """``rule``, or None."""
    return Rule(lambda v: v is None or rule(v), f"{rule.allowed}, or None", rule.choices)


def text(allowed: str = "must be a non-empty string") -> Rule:
    """A non-empty string."""
    return Rule(lambda v: isinstance(v, str) and v != "", allowed)


FLAG = Rule(lambda v: isinstance(v, bool), "must be true or false")
SEED = Rule(lambda v: is_int(v) and 0 <= v < 2 ** 63, "must be an integer from 0 to 2**63 − 1")


def setting(default=dataclasses.MISSING, rule: Rule | None = None, *, factory=dataclasses.MISSING):
    """A dataclass field that carries its rule: ``steps: int = setting(200, integer(1))``
    (``factory`` for a mutable default: ``setting(factory=list, rule=…)``)."""
    return dataclasses.field(default=default, default_factory=factory,
                             metadata={} if rule is None else {"rule": rule})


def check_fields(cfg) -> None:
    """Refuse the first field of ``cfg`` (in declaration order) whose value its rule rejects."""
    owner = type(cfg).__name__
    for f in dataclasses.fields(cfg):
        rule = f.metadata.get("rule")
        if rule is not None and not rule(getattr(cfg, f.name)):
            refuse(owner, f.name, getattr(cfg, f.name), rule.allowed)


# --- text read as a field's declared type (flags, config files) -----------------------------------

def field_types(cls) -> dict:
    """Field name → declared type of dataclass ``cls`` (string annotations resolved)."""
    return typing.get_type_hints(cls)


def _split(value) -> list:
    """"a,b" → ["a", "b"]; a list of texts (a flag given several values) is split the same way."""
    if isinstance(value, str):
        return [x.strip() for x in value.split(",") if x.strip() != ""]
    return list(value)


def _scalar(text: str):
    """An untyped setting's text (a ``task_args`` value): an integer, a number, else the text."""
    for read in (int, float):
        try:
            return read(text)
        except ValueError:
            pass
    return text


_PLURALS = {float: "numbers, e.g. 0.2,0.5,0.9", int: "integers, e.g. 1,2,3", bool: "true/false values"}


def read_as(tp, value):
    """``value`` read as type ``tp``: text becomes the declared type, and so do the items of a list
    or mapping; any other value is returned unchanged for the field's rule to judge. Raises a
    ValueError saying what is expected when text does not read as ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and isinstance(value, str) and value.strip().lower() in ("none", "null", "~"):
            return None
        others = [a for a in args if a is not type(None)]
        try:
            return read_as(others[0], value) if len(others) == 1 else value
        except ValueError as e:
            raise ValueError(f"{e}, or none" if type(None) in args else str(e)) from None
    if tp is bool:
        words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
        if isinstance(value, str) and value.strip().lower() not in words:
            raise ValueError("must be true or false")
        return words[value.strip().lower()] if isinstance(value, str) else value
    if tp is str:                     # YAML reads `forbidden: [666]` as a number; the setting is text
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    if tp in (int, float):
        if not isinstance(value, str):
            return value
        try:
            return tp(value.strip())
        except ValueError:
            raise ValueError("must be an integer" if tp is int else "must be a number, e.g. 0.5 or 1e-3") from None
    if origin in (list, tuple, collections.abc.Sequence) or tp in (list, tuple):
        if not isinstance(value, (str, list, tuple)):
            return value
        item = args[0] if args else str
        try:
            return [read_as(item, x) for x in _split(value)]
        except ValueError:
            raise ValueError(f"must be comma-separated {_PLURALS.get(item, 'values')}") from None
    if origin is dict or tp is dict:
        if isinstance(value, dict):
            return {k: read_as(args[1], v) for k, v in value.items()} if args else value
        if not isinstance(value, (str, list, tuple)):
            return value
        out = {}
        for pair in _split(value):
            if not isinstance(pair, str):     # a YAML list of numbers where a mapping belongs
                raise ValueError(f"got a list {list(value)!r}; give a mapping, or name=value pairs separated by "
                                 "commas, e.g. correct=1,format=0.2")
            key, eq, v = pair.partition("=")
            if not key.strip() or (not eq and not (args and args[1] is float)):
                raise ValueError("give name=value pairs separated by commas, e.g. correct=1,format=0.2")
            if not eq:                        # a weight map: a bare name weighs 1 (`--reward correct,format=0.2`)
                v = "1"
            out[key.strip()] = read_as(args[1], v.strip()) if args else _scalar(v.strip())
        return out
    return value


def read_settings(cls, data: dict, where: str = "") -> dict:
    """A mapping of settings for dataclass ``cls`` (from a file or the command line), each read as
    its field's declared type; an unknown name is refused by name. ``where`` prefixes errors."""
    known = field_types(cls)
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{where}unknown {cls.__name__} setting(s) {unknown}; allowed: {sorted(known)}")
    out = {}
    for name, value in data.items():
        try:
            out[name] = read_as(known[name], value)
        except ValueError as e:
            refuse(cls.__name__, name, value, str(e), where)
    return out
