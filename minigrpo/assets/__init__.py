"""Shipped weights: the tiny SFT anchors (``anchors/<task>``) and the proxy reward model
(``reward_models/addition-column-checker``). They are package data, found with ``importlib.resources``,
so a wheel installed anywhere has them; nothing here is ever written to at run time."""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def asset_path(*parts: str) -> Path:
    """The path of a shipped asset, e.g. ``asset_path("anchors", "addition")`` (it may not exist)."""
    return Path(str(files(__name__).joinpath(*parts)))
