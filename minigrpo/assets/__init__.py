"""Shipped weights: the tiny SFT anchors (``anchors/<task>``) and the proxy reward model
(``reward_models/addition-column-checker``). They are package data, found with ``importlib.resources``,
so a wheel installed anywhere has them; nothing here is ever written to at run time.

Saving into this folder is refused (``lm/saving.py``) unless ``MINIGRPO_WRITE_ASSETS=1`` is set, which
only rebuilding a shipped asset on purpose needs (the commands in each asset's ``sft.json`` or
``reward_model.json``)."""
from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

WRITE_ASSETS = "MINIGRPO_WRITE_ASSETS"     # set to 1 to let a save replace a shipped asset


def asset_path(*parts: str) -> Path:
    """The path of a shipped asset, e.g. ``asset_path("anchors", "addition")`` (it may not exist)."""
    return Path(str(files(__name__).joinpath(*parts)))


def in_assets(path: str | Path) -> bool:
    """Whether ``path`` is the installed package's assets folder or inside it (symlinks resolved)."""
    root, p = asset_path().resolve(), Path(path).resolve()
    return p == root or root in p.parents


def may_write_assets() -> bool:
    """Whether this process may write into the assets folder: ``MINIGRPO_WRITE_ASSETS=1``."""
    return os.environ.get(WRITE_ASSETS) == "1"
