"""Saving a trained model folder (an SFT anchor, a reward model): checked before training starts, written
whole or not at all, never into the installed package.

* ``check_out(path)``, before training: ``path`` is not inside the package's shipped assets (unless
  ``MINIGRPO_WRITE_ASSETS=1``, for rebuilding one on purpose); it is a new folder, an empty one or an earlier
  save (a folder holding ``config.json``), never a file or a folder of other files; and the nearest folder
  that exists on its way takes new files.
* ``save_folder(path, write, tensors)``, after: refuses NaN or ±inf weights by name; ``write(tmp)`` fills a
  temporary sibling ``.<name>.tmp-XXXX``, its files are flushed to disk, and it is renamed into place. An
  earlier save at ``path`` is first renamed away (``.<name>.old-XXXX``) and deleted once the new one is in
  place, so a failure at any moment leaves the earlier save or the new one, never a mix of the two (killed
  between the two renames, the earlier save is the ``.old-`` folder beside ``path``).

``runs/folder.py`` writes checkpoints the same way.
"""
from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import torch

from minigrpo.assets import WRITE_ASSETS, asset_path, in_assets, may_write_assets


def check_writable(path: str | Path, flag: str = "--out") -> Path:
    """Raise an ``OSError`` naming ``flag`` unless ``path`` is a folder that takes new files or could be made
    (the nearest existing folder on its way is a folder and takes new files). Creates nothing."""
    path = Path(path)
    there = next(p for p in (path.absolute(), *path.absolute().parents) if p.exists())
    if not there.is_dir():
        what = "is a file, not a folder" if there == path.absolute() else f"cannot be made: {str(there)!r} is a file"
        raise NotADirectoryError(f"{flag} {str(path)!r} {what}; choose a folder")
    try:
        with tempfile.TemporaryFile(dir=there):           # root passes os.access; a real write tells
            pass
    except OSError as e:
        raise PermissionError(f"{flag} {str(path)!r} cannot be written: {str(there)!r} takes no new files "
                              f"({e.strerror or e}); choose another folder") from e
    return path


def check_out(path: str | Path, flag: str = "--out") -> Path:
    """Check, before training, that a model can be saved to ``path`` (see the module docstring); raise an
    ``OSError`` naming ``flag`` and ``path`` if not. Creates nothing."""
    path = Path(path)
    if in_assets(path) and not may_write_assets():
        raise PermissionError(f"{flag} {str(path)!r} is inside the installed package's shipped assets "
                              f"({asset_path()}), which minigrpo never overwrites; choose another folder (to rebuild "
                              f"a shipped asset on purpose, set {WRITE_ASSETS}=1)")
    if path.is_dir() and any(path.iterdir()) and not (path / "config.json").exists():
        raise FileExistsError(f"{flag} {str(path)!r} is a folder of other files, not an earlier saved model; "
                              "choose a new folder (an earlier one is replaced whole)")
    return check_writable(path, flag)


def non_finite(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first floating-point tensor holding NaN or ±inf, or None."""
    for name, t in named_tensors:
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` (its folder made if missing) whole or not at all: a new temporary file beside it
    (created with the usual mode; an existing file's mode is kept), flushed to disk, then renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (new names, renames) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_folder(path: str | Path, write: Callable[[Path], None],
                tensors: Iterable[tuple[str, torch.Tensor]] = (), flag: str = "--out") -> Path:
    """Save a model folder at ``path`` whole or not at all: ``write(tmp)`` writes its files into a temporary
    sibling, renamed into place (replacing an earlier save, see the module docstring). Raises
    ``FloatingPointError`` before writing anything if one of ``tensors`` (name, tensor) holds NaN or ±inf."""
    path = Path(path)
    check_out(path, flag)                              # again: the folder may have changed while training ran
    bad = non_finite(tensors)
    if bad is not None:
        raise FloatingPointError(f"{str(path)!r} not written: {bad} holds NaN or inf")
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = secrets.token_hex(4)
    tmp, old = path.parent / f".{path.name}.tmp-{tag}", path.parent / f".{path.name}.old-{tag}"
    tmp.mkdir()                                        # (mkdir, not mkdtemp: the folder keeps the usual mode)
    try:
        write(tmp)
        for f in sorted(p for p in tmp.rglob("*") if p.is_file()):    # on disk before the rename shows them
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())
        if path.exists():
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)                  # put the earlier save back
                raise
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return path
