"""Command-line checks shared by the bench scripts.

Every value is checked as it is read, so a bad one stops a script before any work with one line,
``<script>: error: argument --flag: <what is wrong> (see --help)``, and exit code 2. The scripts run as
``python bench/<script>.py``, which puts this folder on ``sys.path``: they ``from args import …``.
``write_text_atomic`` (the package's own, ``minigrpo/lm/saving.py``) is how they write a results file: whole or
not at all.
"""
from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path

from minigrpo.lm.saving import write_text_atomic  # noqa: F401  (the scripts' writer of results files)

SEED_MAX = 2 ** 63 - 1                      # TrainConfig's largest seed


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line on stderr, without the usage block; exit code 2.
    A value such as ``-1e-3`` or ``-inf`` is read as a value, so its flag's check names it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$",
                                                   re.IGNORECASE)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {str(message).replace(chr(10), ' ')} (see --help)\n")


def _refuse(message: str):
    raise argparse.ArgumentTypeError(message)


def integer(lo: int, hi: int | None = None):
    """An argparse type: an integer ≥ ``lo`` (and ≤ ``hi``)."""
    allowed = f"an integer ≥ {lo}" if hi is None else \
        f"an integer from {lo} to {'2**63 - 1' if hi == SEED_MAX else hi}"

    def read(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < lo or (hi is not None and value > hi):
            _refuse(f"must be {allowed}, not {text!r}")
        return value

    read.allowed = allowed
    return read


def number(*, gt: float | None = None, ge: float | None = None, le: float | None = None):
    """An argparse type: a finite number with the given bounds (``gt``: >, ``ge``: ≥, ``le``: ≤)."""
    bounds = [f"{sign} {b:g}" for sign, b in ((">", gt), ("≥", ge), ("≤", le)) if b is not None]
    allowed = "a finite number" + (" " + " and ".join(bounds) if bounds else "")

    def read(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if (not math.isfinite(value) or (gt is not None and value <= gt) or (ge is not None and value < ge)
                or (le is not None and value > le)):
            _refuse(f"must be {allowed}, not {text!r}")
        return value

    return read


positive_int = integer(1)
non_negative_int = integer(0)
positive_float = number(gt=0)
non_negative_float = number(ge=0)


def _items(text: str, example: str) -> list[str]:
    """The comma-separated items of ``text``: none empty, none repeated."""
    items = [s.strip() for s in text.split(",")]
    if "" in items:
        _refuse(f"{text!r} has an empty item; give comma-separated values such as {example}")
    twice = sorted({s for s in items if items.count(s) > 1})
    if twice:
        _refuse(f"{', '.join(map(repr, twice))} appears more than once in {text!r}")
    return items


def int_list(lo: int = 0, hi: int | None = None):
    """An argparse type: comma-separated distinct integers, each in ``integer(lo, hi)``; a list of int."""
    item = integer(lo, hi)

    def read(text: str) -> list[int]:
        out = []
        for s in _items(text, "0,1,2"):
            try:
                out.append(item(s))
            except argparse.ArgumentTypeError:
                _refuse(f"{s!r} in {text!r} is not {item.allowed}; give comma-separated integers such as 0,1,2")
        return out

    return read


seed_list = int_list(0, SEED_MAX)


def choice_list(choices):
    """An argparse type: comma-separated distinct names from ``choices``; a list of str."""
    choices = tuple(choices)

    def read(text: str) -> list[str]:
        items = _items(text, ",".join(choices[:2]))
        unknown = [s for s in items if s not in choices]
        if unknown:
            _refuse(f"unknown {', '.join(map(repr, unknown))} in {text!r}; choose from {', '.join(choices)}")
        return items

    return read


def existing_file(text: str) -> str:
    """An argparse type: a file that exists."""
    path = Path(text)
    if path.is_dir():
        _refuse(f"{text!r} is a folder, not a file")
    if not path.is_file():
        _refuse(f"no such file: {text!r}")
    return text


def not_a_folder(text: str) -> str:
    """An argparse type: a file path that may be missing but is not a folder."""
    if text == "" or Path(text).is_dir():
        _refuse(f"{text!r} is a folder, not a file" if text else "an empty path")
    return text


def _writable_below(text: str, path: Path) -> None:
    """Refuse ``path`` when the nearest folder that exists above it is a file or cannot be written."""
    above = path.absolute().parent
    while not above.exists():
        above = above.parent
    if not above.is_dir():
        _refuse(f"{text!r} cannot be made: {str(above)!r} is a file, not a folder")
    if not os.access(above, os.W_OK | os.X_OK):
        _refuse(f"{text!r} cannot be written: the folder {str(above)!r} is not writable")


def output_file(text: str) -> str:
    """An argparse type: a file to write (its folder is made if missing)."""
    not_a_folder(text)
    _writable_below(text, Path(text))
    return text


def output_folder(text: str) -> str:
    """An argparse type: a folder to write into (made if missing)."""
    path = Path(text)
    if text == "" or (path.exists() and not path.is_dir()):
        _refuse(f"{text!r} is a file, not a folder" if text else "an empty path")
    _writable_below(text, path / "x")
    return text


def device(text: str) -> str:
    """An argparse type: a torch device this machine has (``cpu``, ``cuda``, ``cuda:1``)."""
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        _refuse(f"{text!r} is not a torch device; give cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            _refuse(f"{text!r}, but torch sees no CUDA GPU here; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            _refuse(f"{text!r}, but torch sees {torch.cuda.device_count()} CUDA GPU(s) here")
    return text
