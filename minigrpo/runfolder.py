"""The run folder: the one place a training run writes to disk.

::

    runs/train-addition-20261121-101500/
        config.json          the TrainConfig, as given
        metrics.jsonl        one JSON object per step (and held-out accuracy every N steps)
        samples.jsonl        a few prompts with their completions and rewards, every N steps
        checkpoints/
            latest           name of the newest complete checkpoint
            step-000050/     model (save_pretrained: safetensors + config + tokenizer),
                             trainer_state.pt (optimizer, scheduler, RNG states, β controller), meta.json

Every checkpoint is written to a temporary folder and renamed into place, and ``latest`` is
replaced atomically after that, so a run killed at any moment leaves its last good checkpoint
intact. ``trainer_state.pt`` holds only tensors and plain numbers and is read back with
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.ckpt_root = self.path / "checkpoints"

    # --- files written as the run goes -----------------------------------------------------------
    def create(self, config: dict) -> "RunFolder":
        self.path.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(self.path / "config.json", json.dumps(config, indent=2))
        return self

    def read_config(self) -> dict:
        f = self.path / "config.json"
        if not f.exists():
            raise FileNotFoundError(f"run folder {str(self.path)!r} has no config.json; is it a minigrpo run folder?")
        return json.loads(f.read_text())

    def append(self, name: str, record: dict) -> None:
        with open(self.path / name, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self, name: str) -> list[dict]:
        f = self.path / name
        return [json.loads(line) for line in f.read_text().splitlines() if line.strip()] if f.exists() else []

    def truncate(self, name: str, after_step: int) -> None:
        """Drop the records of steps after ``after_step`` (those a resumed run will write again)."""
        f = self.path / name
        if f.exists():
            keep = [r for r in self.read(name) if r.get("step", 0) <= after_step]
            _atomic_write_text(f, "".join(json.dumps(r) + "\n" for r in keep))

    # --- checkpoints -------------------------------------------------------------------------------
    def save_checkpoint(self, step: int, model, tokenizer, state: dict, keep: int = 2) -> Path:
        """Write checkpoint ``step`` atomically, point ``latest`` at it, keep the newest ``keep``."""
        self.ckpt_root.mkdir(parents=True, exist_ok=True)
        name = f"step-{step:06d}"
        final, tmp = self.ckpt_root / name, self.ckpt_root / f".tmp-{name}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        from .models import quiet_transformers

        with quiet_transformers():
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        torch.save(state, tmp / "trainer_state.pt")
        _atomic_write_text(tmp / "meta.json", json.dumps({"step": step}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _atomic_write_text(self.ckpt_root / "latest", name)
        done = sorted(p for p in self.ckpt_root.glob("step-*") if p.is_dir())
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def latest_checkpoint(self) -> Path | None:
        pointer = self.ckpt_root / "latest"
        if not pointer.exists():
            return None
        ckpt = self.ckpt_root / pointer.read_text().strip()
        if not (ckpt / "meta.json").exists():
            raise FileNotFoundError(f"checkpoint {str(ckpt)!r} named by {str(pointer)!r} is missing or incomplete")
        return ckpt

    @staticmethod
    def load_state(ckpt: Path) -> dict:
        f = Path(ckpt) / "trainer_state.pt"
        try:
            return torch.load(f, weights_only=True, map_location="cpu")
        except Exception as e:   # truncated, corrupted, or not a torch file
            raise ValueError(f"checkpoint file {str(f)!r} could not be read ({type(e).__name__}: {e}); "
                             "it may be truncated or corrupted") from e

    @staticmethod
    def step_of(ckpt: Path) -> int:
        return int(json.loads((Path(ckpt) / "meta.json").read_text())["step"])
