"""Command-line flags derived from config dataclasses with tyro, and read as the fields' declared types.

``parse_flags(prog, help, flags, config, aliases, argv)`` derives one command's flags: every field of
the ``config`` dataclass (its default, and its documentation as written beside the field: a trailing
``#`` comment, comment lines above it or a docstring below it) plus the fields of ``flags``, a small
dataclass of the command's flags that are not settings.

tyro only collects the text given to each flag (``Given``). That text is read as the field's declared
type by ``core/validate.read_as`` — the reading a YAML config file gets too — and the config's own
validation judges the value later, once, after the flags are merged with a config file. Anything
tyro itself rejects (an unknown flag, a missing value) becomes a ValueError of one line.
"""
from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import io
import itertools
import re
import typing
from dataclasses import dataclass, field
from typing import Annotated

from minigrpo.core.validate import read_as


class Given(tuple):
    """The texts one flag was given on the command line: tyro hands them over unread."""


def _is_optional(tp) -> bool:
    return type(None) in typing.get_args(tp)


def _core(tp):
    """``X`` of ``X | None``; any other type unchanged."""
    return next(a for a in typing.get_args(tp) if a is not type(None)) if _is_optional(tp) else tp


def _is_many(tp) -> bool:
    """A list, sequence or mapping: a flag of one or more values (comma-separated or not)."""
    return (typing.get_origin(_core(tp)) or _core(tp)) in (list, tuple, dict, collections.abc.Sequence)


_WORDS = {int: "INT", float: "FLOAT", str: "STR"}


def _metavar(tp) -> str:
    """INT, FLOAT|None, FLOAT,… (a list), NAME=FLOAT,… (a mapping): what a flag's text should look like."""
    core, args = _core(tp), typing.get_args(_core(tp))
    if (typing.get_origin(core) or core) is dict:
        word = f"NAME={_WORDS.get(args[1], 'VALUE') if args else 'VALUE'},…"
    else:
        word = f"{_WORDS.get(args[0] if args else str, 'VALUE')},…" if _is_many(core) else _WORDS.get(core, "VALUE")
    return word + ("|None" if _is_optional(tp) else "")


def _shown(value) -> list[str]:
    """A default as the flag would spell it (for --help)."""
    if isinstance(value, dict):
        return [",".join(f"{k}={v}" for k, v in value.items())]
    if isinstance(value, (list, tuple)):
        return [",".join(str(v) for v in value)]
    return [str(value)]


def _registry():
    """tyro reads every flag's text unconverted (bools stay switches; dataclasses stay groups)."""
    from tyro.constructors import ConstructorRegistry, PrimitiveConstructorSpec

    registry = ConstructorRegistry()

    @registry.primitive_rule
    def unread(info):
        if info.type is bool or dataclasses.is_dataclass(info.type):
            return None
        return PrimitiveConstructorSpec(nargs="*" if _is_many(info.type) else 1, metavar=_metavar(info.type),
                                        instance_from_str=Given, is_instance=lambda v: True, str_from_instance=_shown)

    return registry


def _collecting(cls: type, aliases: dict) -> type:
    """``cls`` with the same fields, defaults and documentation (tyro reads it from ``cls``'s source),
    built without validation: tyro fills it with the flags' texts, and the real config is built once,
    from those merged with a config file and the convenience flags."""
    import tyro

    hints = typing.get_type_hints(cls)
    ns = {"__post_init__": lambda self: None, "__doc__": cls.__doc__, "__annotations__": {},
          "__module__": cls.__module__, "__qualname__": cls.__qualname__}    # where tyro finds the source
    for f in dataclasses.fields(cls):
        choices = f.metadata["rule"].choices if "rule" in f.metadata else None
        metavar = "{" + ",".join(choices) + "}" + ("|None" if _is_optional(hints[f.name]) else "") if choices else None
        metavar = f.metadata.get("metavar", metavar)              # a field may spell its own
        ns["__annotations__"][f.name] = Annotated[hints[f.name],
                                                  tyro.conf.arg(aliases=aliases.get(f.name), metavar=metavar)]
        ns[f.name] = dataclasses.field(default=f.default, default_factory=f.default_factory)
    return dataclass(type(cls.__name__, (cls,), ns))


def flag_name(name: str) -> str:
    """The flag of a field: ``prompts_per_step`` → ``--prompts-per-step``."""
    return "--" + name.replace("_", "-")


def _read(obj, argv: list[str], aliases: dict, prefix: str = "") -> dict:
    """The fields of ``obj`` (filled by tyro) that the command line gave, read as their declared types."""
    given_options = {tok.split("=", 1)[0] for tok in argv if tok.startswith("--")}
    types = typing.get_type_hints(type(obj))
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        flag = next((a for a in aliases.get(f.name, ()) if a in given_options), flag_name(prefix + f.name))
        if isinstance(value, Given):
            text = ",".join(value) if _is_many(types[f.name]) else value[0]
            try:
                out[f.name] = read_as(types[f.name], text)
            except ValueError as e:
                raise ValueError(f"{flag}={' '.join(value)!r} is not allowed; {e}") from None
        elif dataclasses.is_dataclass(value):          # a nested dataclass: its flags are --<field>.<name>
            inner = _read(value, argv, {}, f"{prefix}{f.name}.")
            if inner:
                out[f.name] = inner
        elif types[f.name] is bool and {flag, "--no-" + flag[2:]} & given_options:
            out[f.name] = value
    return out


def _one_line(text: str) -> str:
    """tyro's boxed error message as one line: the rows of the box after its title, up to its first rule."""
    rows = [r for r in (line.strip(" │╭╮╰╯") for line in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines()) if r]
    rows = itertools.dropwhile(lambda r: r.startswith("─"), rows)
    return " ".join(itertools.takewhile(lambda r: not r.startswith("─"), rows))


def merge_repeats(argv: list[str], groups: dict[str, str]) -> list[str]:
    """A flag of many values may be repeated: ``--reward-fn a.py:f --reward-fn a.py:g=0.2`` becomes one
    flag with both values, at the first one's place. ``groups`` maps each such flag (and its aliases)
    to its field, so ``--reward x --reward-weights y`` merge too."""
    out, seen, i = [], {}, 0
    while i < len(argv):
        name, eq, value = argv[i].partition("=")
        if name not in groups:
            out.append(argv[i])
            i += 1
            continue
        values, i = ([value], i + 1) if eq else ([], i + 1)
        while not eq and i < len(argv) and not argv[i].startswith("--"):
            values.append(argv[i])
            i += 1
        if groups[name] in seen:
            seen[groups[name]].extend(values)
        else:
            seen[groups[name]] = values
            out.append((name, values))
    return [tok for item in out for tok in ([item[0], *item[1]] if isinstance(item, tuple) else [item])]


def _many_flags(config: type | None, aliases: dict) -> dict[str, str]:
    if config is None:
        return {}
    hints = typing.get_type_hints(config)
    return {flag: f.name for f in dataclasses.fields(config) if _is_many(hints[f.name])
            for flag in (flag_name(f.name), *aliases.get(f.name, ()))}


def parse_flags(prog: str, description: str, flags: type, config: type | None, aliases: dict,
                argv: list[str]) -> tuple[dict, dict]:
    """(flags, settings) of ``<prog> <argv>``: every field of ``flags`` (given or its default), and the
    fields of ``config`` the command line gave, each read as its declared type. ``aliases`` maps a
    config field to extra flag names (``{"prompts_per_step": ("--prompts",)}``). A flag of a list or
    mapping may be repeated (``merge_repeats``)."""
    import tyro

    argv = merge_repeats(list(argv), _many_flags(config, aliases))

    parts = [("flags", Annotated[flags, tyro.conf.arg(name="")], field(default_factory=flags))]
    if config is not None:
        collecting = _collecting(config, aliases)
        parts.append(("settings", Annotated[collecting, tyro.conf.arg(name="")], field(default_factory=collecting)))
    shape = dataclasses.make_dataclass(prog.replace(" ", "_").replace("-", "_"), parts)
    stderr = io.StringIO()
    try:
        with _registry(), contextlib.redirect_stderr(stderr):
            parsed = tyro.cli(shape, args=argv, prog=prog, description=description)
    except SystemExit as e:
        if e.code in (0, None):                 # --help
            raise
        raise ValueError(f"{_one_line(stderr.getvalue()) or 'the flags could not be read'} "
                         f"({prog} --help lists the flags)") from None
    given = {f.name: getattr(parsed.flags, f.name) for f in dataclasses.fields(parsed.flags)}
    given.update(_read(parsed.flags, argv, {}))
    empty = [f"--{k.replace('_', '-')}" for k, v in given.items() if v == "" and isinstance(v, str)]
    if empty:                                   # '' is not "not given": a path left empty by a shell variable
        raise ValueError(f"{empty[0]} '' is empty; give a path, or leave the flag out ({prog} --help lists the flags)")
    return given, (_read(parsed.settings, argv, aliases) if config is not None else {})
