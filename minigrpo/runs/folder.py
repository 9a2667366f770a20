"""The run folder: the one place a training run writes to disk.

::

    runs/train-addition-20261121-101500/
        config.json          the TrainConfig, as given
        rewards.json         each reward component: weight, function, from the config or from code
                             (code: its import path and a fingerprint of its code)
        metrics.jsonl        one JSON object per step (and the held-out evaluation every N steps)
        tensorboard/         with --report-to tensorboard: the same records, for TensorBoard
        samples.jsonl        a few prompts with their completions and rewards, every N steps
        checkpoints/
            latest           name of the newest complete checkpoint
            step-000050/     model (save_pretrained: safetensors + config + tokenizer),
                             trainer_state.pt (optimizer, scheduler, RNG states, β controller), meta.json
                             (the step, each file's SHA-256, and the settings the run trained with)

A resume continues the run as it was: config.json must still hold the settings recorded in the newest
checkpoint's meta.json (only ``steps`` may be raised), and rewards given in code must be given again —
the same functions (by import path, or by a fingerprint of their code when nothing names them) with the
same weights. Anything else is refused with one line that says what differs.

Every checkpoint is written to a temporary folder, flushed to disk and renamed into place, and
``latest`` is replaced atomically after that, so a run killed at any moment leaves its last good
checkpoint intact. ``meta.json`` is written last and holds the SHA-256 of every other file, so a
truncated or corrupted file is caught by name before anything is loaded. Weights are safetensors;
``trainer_state.pt`` holds only tensors and plain numbers and is read back with
``torch.load(weights_only=True)``. A checkpoint whose weights or optimizer state are not finite is
refused (``FloatingPointError``), so a run that went NaN never overwrites its last good one.

One process writes a run folder: the run takes ``RunLock`` (an exclusive ``flock`` on ``.lock`` in the
folder, which records its PID, host and start time) when it starts or resumes and holds it to the end. A
second writer is refused at once (``RunFolderInUse``, naming the holder). The operating system drops the
lock when its process dies, even by SIGKILL, so a run killed mid-way resumes without any clean-up.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import torch

from minigrpo.lm.saving import fsync_dir as _fsync_dir
from minigrpo.lm.saving import non_finite as _non_finite
from minigrpo.lm.saving import write_text_atomic as _atomic_write_text    # whole or not at all
from minigrpo.runs.lock import RunFolderInUse, RunLock  # noqa: F401  (re-exported: one writer per folder)


def _errors(e: BaseException):
    """``e`` and the exceptions it was raised from or during."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def is_disk_full(e: BaseException, where: Path | None = None) -> bool:
    """Whether ``e`` says the disk (or the quota) is full: an OSError with errno ENOSPC/EDQUOT, or a library's
    error wrapping one (safetensors: "No space left on device (os error 28)"; torch.save: "file write failed"
    from inline_container.cc, which keeps no errno: counted as full when ``where`` has under 64 MiB free)."""
    for x in _errors(e):
        if isinstance(x, OSError) and x.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            return True
        if any(s in str(x) for s in ("No space left on device", "os error 28", "Disk quota exceeded")):
            return True
    if where is not None and any(s in str(e) for s in ("file write failed", "inline_container")):
        with contextlib.suppress(OSError):
            return shutil.disk_usage(where).free < 64 << 20
    return False


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def config_sha256(config: dict) -> str:
    """The fingerprint of a run's settings: the SHA-256 of their canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _tensors_in(obj, prefix: str = ""):
    """(name, tensor) for every tensor in a nested dict/list (an optimizer or trainer state)."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors_in(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors_in(v, f"{prefix}[{i}]")


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.ckpt_root = self.path / "checkpoints"

    @contextlib.contextmanager
    def _writing(self, what: Path):
        """Turn a full disk while writing ``what`` into ``DiskFull``: one line naming it and what to do."""
        try:
            yield
        except Exception as e:
            if not is_disk_full(e, what.parent if what.parent.exists() else self.path):
                raise
            from minigrpo.runs.errors import DiskFull

            latest = self._latest_name()
            then = (f"resume with: minigrpo train --resume {self.path} (from {latest})" if latest else
                    "start the run again (it had no checkpoint yet)")
            full = DiskFull(f"no space left on device while writing {what}; free space and {then}")
            full.errno = errno.ENOSPC
            raise full from None

    def lock(self) -> RunLock:
        """Take this folder's ``RunLock`` (the folder must exist); release it when the run ends."""
        return RunLock().acquire(self.path)

    # --- files written as the run goes -----------------------------------------------------------
    def create(self, config: dict) -> "RunFolder":
        self.path.mkdir(parents=True, exist_ok=True)
        with self._writing(self.path / "config.json"):
            _atomic_write_text(self.path / "config.json", json.dumps(config, indent=2))
        return self

    def read_config(self) -> dict:
        """config.json as a mapping; a missing, unreadable, truncated or non-mapping file is one error naming it."""
        f = self.path / "config.json"
        if not f.exists():
            raise FileNotFoundError(f"run folder {str(self.path)!r} has no config.json; is it a minigrpo run folder?")
        try:
            data = json.loads(f.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{str(f)!r} could not be read as JSON ({e}); it is truncated or was edited by hand: "
                             "restore it (the settings the run started with are in its newest checkpoint's "
                             "meta.json, under 'config')") from None
        if not isinstance(data, dict):
            raise ValueError(f"{str(f)!r} holds {type(data).__name__}, not a mapping of settings; restore it")
        if "steps" not in data:
            raise ValueError(f"{str(f)!r} is incomplete: it has no 'steps'; restore it")
        return data

    def write_json(self, name: str, obj) -> None:
        with self._writing(self.path / name):
            _atomic_write_text(self.path / name, json.dumps(obj, indent=2))

    def read_json(self, name: str):
        """A JSON file of the run folder, or None when it has none."""
        f = self.path / name
        if not f.exists():
            return None
        try:
            return json.loads(f.read_text(encoding="utf-8"))
        except (ValueError, OSError) as e:                # bad JSON, not UTF-8, unreadable
            raise ValueError(f"{str(f)!r} does not read as JSON ({e}); restore it") from None

    def append(self, name: str, record: dict) -> None:
        with self._writing(self.path / name), open(self.path / name, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self, name: str) -> list[dict]:
        """The records of a .jsonl file. A last line with no newline that does not parse is the record a
        killed run was writing: it is dropped (the resumed run writes that step again)."""
        f = self.path / name
        if not f.exists():
            return []
        text = f.read_text()
        lines = text.splitlines()
        records = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                if i == len(lines) - 1 and not text.endswith("\n"):
                    break                                   # torn last line
                raise ValueError(f"{str(f)!r} line {i + 1} is not valid JSON ({e}); the file is corrupted") from e
        return records

    def truncate(self, name: str, after_step: int) -> None:
        """Drop the records of steps after ``after_step`` (those a resumed run will write again)."""
        f = self.path / name
        if f.exists():
            keep = [r for r in self.read(name) if r.get("step", 0) <= after_step]
            with self._writing(f):
                _atomic_write_text(f, "".join(json.dumps(r) + "\n" for r in keep))

    # --- checkpoints -------------------------------------------------------------------------------
    def save_checkpoint(self, step: int, model, tokenizer, state: dict, keep: int = 2,
                        config: dict | None = None) -> Path:
        """Write checkpoint ``step`` atomically, point ``latest`` at it, keep the newest ``keep``.

        ``config``: the settings the run trains with (``TrainConfig.to_dict()``), kept in ``meta.json`` with
        their SHA-256 (``config_sha256``): a resume compares config.json with them (``checkpoint_config``).

        Raises ``FloatingPointError`` before writing anything if a weight or a state tensor is NaN or
        ±inf: a run that went non-finite keeps its last good checkpoint."""
        name = f"step-{step:06d}"
        bad = _non_finite(list(model.state_dict().items()) + list(_tensors_in(state)))
        if bad is not None:
            raise FloatingPointError(f"checkpoint {name} not written: {bad} holds NaN or inf; the last good "
                                     f"checkpoint ({self._latest_name() or 'none yet'}) is kept")
        final, tmp = self.ckpt_root / name, self.ckpt_root / f".tmp-{name}"
        with self._writing(final):
            try:
                self._write_checkpoint(step, name, final, tmp, model, tokenizer, state, config)
            except BaseException:           # a full disk, a signal, an error: no half-written folder is left
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        done = sorted(p for p in self.ckpt_root.glob("step-*") if p.is_dir())
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def _write_checkpoint(self, step, name, final, tmp, model, tokenizer, state, config) -> None:
        """The writes of ``save_checkpoint``: ``tmp`` filled and flushed, renamed to ``final``, ``latest``."""
        self.ckpt_root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        from minigrpo.lm.models import quiet_transformers

        with quiet_transformers():
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        torch.save(state, tmp / "trainer_state.pt")
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        for f in files:                         # on disk before the rename makes the checkpoint visible
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())
        sha256 = {str(f.relative_to(tmp)): _sha256(f) for f in files}
        meta = {"step": step, "sha256": sha256}
        if config is not None:
            meta.update(config=config, config_sha256=config_sha256(config))
        _atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(self.ckpt_root)
        _atomic_write_text(self.ckpt_root / "latest", name)
        _fsync_dir(self.ckpt_root)

    def _latest_name(self) -> str | None:
        pointer = self.ckpt_root / "latest"
        return pointer.read_text().strip() if pointer.exists() else None

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint, verified (``verify_checkpoint``); None if there is none."""
        name = self._latest_name()
        if name is None:
            return None
        ckpt = self.ckpt_root / name
        if not (ckpt / "meta.json").exists():
            raise FileNotFoundError(f"checkpoint {str(ckpt)!r} named by {str(self.ckpt_root / 'latest')!r} "
                                    "is missing or incomplete")
        self.verify_checkpoint(ckpt)
        return ckpt

    @staticmethod
    def verify_checkpoint(ckpt: Path) -> None:
        """Raise a ValueError naming the first file of ``ckpt`` that is missing, truncated or corrupted.

        Files are checked against the SHA-256 sums in ``meta.json``; a checkpoint from before those
        sums existed gets its safetensors headers checked instead (which catches truncation)."""
        ckpt = Path(ckpt)
        try:
            meta = json.loads((ckpt / "meta.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"checkpoint file {str(ckpt / 'meta.json')!r} could not be read ({e})") from e
        for rel, digest in meta.get("sha256", {}).items():
            f = ckpt / rel
            if not f.exists():
                raise ValueError(f"checkpoint file {str(f)!r} is missing")
            if _sha256(f) != digest:
                raise ValueError(f"checkpoint file {str(f)!r} does not match the SHA-256 recorded when it was "
                                 "written; it is truncated or corrupted")
        if "sha256" not in meta:
            from safetensors import safe_open

            for f in sorted(ckpt.glob("*.safetensors")):
                try:
                    with safe_open(str(f), framework="pt"):
                        pass
                except Exception as e:
                    raise ValueError(f"checkpoint file {str(f)!r} could not be read ({type(e).__name__}: {e}); "
                                     "it may be truncated or corrupted") from e

    @staticmethod
    def load_state(ckpt: Path) -> dict:
        f = Path(ckpt) / "trainer_state.pt"
        try:
            return torch.load(f, weights_only=True, map_location="cpu")
        except Exception as e:   # truncated, corrupted, or not a torch file
            raise ValueError(f"checkpoint file {str(f)!r} could not be read ({type(e).__name__}: {e}); "
                             "it may be truncated or corrupted") from e

    @staticmethod
    def checkpoint_config(ckpt: Path) -> dict | None:
        """The settings checkpoint ``ckpt`` was trained with (its meta.json's 'config'); None for a
        checkpoint written before they were recorded."""
        return json.loads((Path(ckpt) / "meta.json").read_text()).get("config")

    @staticmethod
    def step_of(ckpt: Path) -> int:
        return int(json.loads((Path(ckpt) / "meta.json").read_text())["step"])
