"""Reading what a user hands a config: a settings file (YAML or JSON), and a device name.

Every way a file can fail to read, and every device this torch cannot use here, is one error naming the
file or the setting, before any work is done (``TrainConfig``, ``RewardModelJob`` and the command line
use these).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from minigrpo.core.validate import read_settings


def usable_devices() -> list[str]:
    """The devices this torch can run on here: cpu; cuda and cuda:0 … cuda:N−1 when it sees N GPUs;
    mps and xpu when available."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out += ["mps"]
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        out += ["xpu"] + [f"xpu:{i}" for i in range(xpu.device_count())]
    return out


def check_device(name, flag: str = "--device") -> None:
    """Refuse, in one line naming ``flag``, a device this torch cannot use here (``meta``, ``xpu`` without
    one, ``cuda:7`` on a one-GPU machine, a misspelling); ``auto`` is always allowed."""
    if name == "auto":
        return
    usable = usable_devices()
    if isinstance(name, str) and name.strip() in usable:
        return
    if isinstance(name, str) and name.strip().endswith(":0") and name.strip()[:-2] in usable:
        return                                    # mps:0 is mps
    raise ValueError(f"device={name!r} ({flag} {name}) is not allowed: this torch can use "
                     f"{', '.join(['auto'] + usable)} here")


CONFIG_SUFFIXES = {".yaml": "YAML", ".yml": "YAML", ".json": "JSON"}


def _where(e) -> str:
    """' at line L, column C' from a YAML or JSON parser error (1-based), or ''."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    if mark is not None:
        return f" at line {mark.line + 1}, column {mark.column + 1}"
    if getattr(e, "lineno", None) is not None:
        return f" at line {e.lineno}, column {e.colno}"
    return ""


def _load_config_file(path: Path):
    """The parsed contents of a config file; every way it can fail to read is one ValueError naming it."""
    name = str(path)
    kind = CONFIG_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"config file {name!r}: unknown suffix {path.suffix or '(none)'!r}; config files are read "
                         "as YAML (.yaml, .yml) or JSON (.json)")
    if not path.exists():
        raise FileNotFoundError(f"config file {name!r} does not exist")
    if not path.is_file():
        raise ValueError(f"config file {name!r} is not a file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[:e.start].count(b"\n") + 1
        raise ValueError(f"config file {name!r} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at line {line}); "
                         "save it as UTF-8") from None
    except OSError as e:
        raise OSError(e.errno, f"config file {name!r} could not be read ({e.strerror or e})") from None
    if kind == "JSON":
        try:
            return json.loads(text, object_pairs_hook=_once(name)) if text.strip() else None
        except json.JSONDecodeError as e:
            hint = "; a JSON config holds one object" if e.msg == "Extra data" else \
                "; is it truncated?" if e.pos >= len(text.rstrip()) else ""
            raise ValueError(f"config file {name!r} is not valid JSON{_where(e)}: {e.msg}{hint}") from None
    import yaml

    try:
        return yaml.load(text, Loader=_loader(name))
    except yaml.constructor.ConstructorError as e:
        raise ValueError(f"config file {name!r}{_where(e)}: {e.problem} (only plain YAML is read: mappings, lists, "
                         "text, numbers, true/false, null)") from None
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"config file {name!r} is not valid YAML{_where(e)}: {problem}") from None


def _once(name: str):
    """A json ``object_pairs_hook`` that refuses a key given twice (json would keep the last, silently)."""
    def pairs(items: list) -> dict:
        keys = [k for k, _ in items]
        twice = next((k for k in keys if keys.count(k) > 1), None)
        if twice is not None:
            raise ValueError(f"config file {name!r}: {twice!r} is given twice; give each setting once")
        return dict(items)
    return pairs


def _loader(name: str):
    """yaml's SafeLoader, refusing a key given twice in one mapping (PyYAML keeps the last, silently)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, str) and key in seen:
                    raise ValueError(f"config file {name!r}: {key!r} is given twice (lines {seen[key]} and "
                                     f"{key_node.start_mark.line + 1}); give each setting once")
                seen[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep)
    return Loader


def read_settings_file(cls, path: str | Path) -> dict:
    """The settings in a YAML (.yaml/.yml) or JSON (.json) file for config class ``cls``, each read as its
    field's declared type — YAML reads ``lr: 1e-3`` as the text "1e-3"; here it is the number 0.001, and
    ``steps: 1e3`` the integer 1000. A file that does not parse (syntax, a refused tag such as
    ``!!python/object``, bytes that are not UTF-8, extra data after a JSON object, another suffix), a top
    level that is not a mapping, an unknown name, or a value that does not read is one error naming the file."""
    path = Path(path)
    data = _load_config_file(path)
    if data is None:                                # an empty file: no settings
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(path)!r} must hold a mapping of settings (name: value), "
                         f"got {type(data).__name__}")
    if not all(isinstance(k, str) for k in data):
        bad = next(k for k in data if not isinstance(k, str))
        raise ValueError(f"config file {str(path)!r}: setting names are text, got {bad!r}")
    return read_settings(cls, _integers_from_text(cls, data), where=f"config file {str(path)!r}: ")


def _integers_from_text(cls, data: dict) -> dict:
    """An integer setting written in exponent notation (YAML's ``steps: 1e3`` is the text "1e3"; JSON's
    ``1e3`` and YAML's ``1.0e+3`` are floats) as that integer; a value with a fraction is left for the
    field's rule to refuse."""
    import math
    import typing

    from minigrpo.core.validate import field_types

    out = dict(data)
    for name, tp in field_types(cls).items():
        if name not in data or int not in (tp, *typing.get_args(tp)) or float in typing.get_args(tp):
            continue
        value = data[name]
        try:
            x = float(value) if isinstance(value, str) and any(c in value.lower() for c in "e.") else value
        except ValueError:
            continue
        if isinstance(x, float) and math.isfinite(x) and x == int(x):
            out[name] = int(x)
    return out
