"""What a resume may continue: the settings a run folder says, checked against what its checkpoint trained with.

A resume continues a run as it was. ``resume_config`` reads config.json (one error naming the file if it
does not read) and takes a new ``steps`` target only above the steps done; ``check_config_unchanged``
refuses a config.json edited since the newest checkpoint, listing each differing field; ``code_rewards``
loads again, for ``minigrpo train --resume``, the reward functions a run trained through the API was given in
code (rewards.json records their import paths), or refuses, saying how to resume it from Python.
"""
from __future__ import annotations

import json
from pathlib import Path

from minigrpo.runs.config import TrainConfig
from minigrpo.runs.folder import RunFolder


def resume_config(run: str | Path, steps: int | None = None) -> TrainConfig:
    """The settings to resume run folder ``run`` with: its config.json, with ``steps`` as the new target when
    given. A config.json that does not read or validate is one error naming the file; ``steps`` at or below
    the steps already done is refused (a resume continues a run, it cannot undo steps). A target below the
    configured one but above the steps done is allowed (a run resumed with a long target and stopped can be
    finished sooner), and config.json then says so."""
    folder = RunFolder(run)
    saved = folder.read_config()
    f = folder.path / "config.json"
    try:
        cfg = TrainConfig.from_dict(saved)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{str(f)!r}: {e}; restore it") from None
    if steps is None or steps == cfg.steps:
        return cfg
    latest = folder._latest_name() or ""
    done = int(latest[5:]) if latest.startswith("step-") and latest[5:].isdigit() else 0
    if steps <= done:
        raise ValueError(f"steps={steps} (--steps {steps}) is not above the {done} steps run folder "
                         f"{str(folder.path)!r} has done (of {cfg.steps}); a resume continues a run and cannot undo "
                         f"steps: leave --steps out to finish it, or give more than {done}")
    return TrainConfig.from_dict({**saved, "steps": steps})


def _shown(value) -> str:
    return json.dumps(value) if not isinstance(value, float) else f"{value:g}"


def check_config_unchanged(folder: RunFolder, saved: dict, ckpt: Path) -> None:
    """Refuse to resume when config.json (``saved``) differs, apart from ``steps``, from the settings
    checkpoint ``ckpt`` was trained with (its meta.json): the error lists each differing field, recorded
    value -> value now. A checkpoint from before settings were recorded is not checked."""
    recorded = RunFolder.checkpoint_config(ckpt)
    if recorded is None:
        return
    now = json.loads(json.dumps(TrainConfig.from_dict(saved).to_dict()))
    differ = []
    for k, was in recorded.items():
        if k == "steps":
            continue
        if k not in saved:
            differ.append(f"{k} {_shown(was)} -> (missing)")
        elif k in now and now[k] != was:
            differ.append(f"{k} {_shown(was)} -> {_shown(now[k])}")
    if differ:
        raise ValueError(f"config.json of {str(folder.path)!r} was edited after the run started: {', '.join(differ)}; "
                         "resume continues a run as it was: restore the file (the settings it trained with are "
                         f"under 'config' in {str(ckpt / 'meta.json')!r}), or start a new run")


def code_rewards(run: str | Path) -> dict | None:
    """The rewards a run trained through ``train_lm(rewards=…)`` was given, loaded again from the import paths
    its rewards.json records, as ``{name: (function, weight)}`` for ``train_lm(resume=…, rewards=…)`` (which then
    checks each function's code against the recorded fingerprint); None for a run whose reward its config.json
    describes. A reward with no import path (a lambda, a closure, a function of ``__main__`` or a notebook), an
    object (its constructor's arguments are not recorded) or a path that no longer loads is refused in one line
    that says how to resume from Python."""
    from minigrpo.rewards.functions import load_function
    from minigrpo.runs.lm_setup import _named

    folder = RunFolder(run)
    recorded = folder.read_json("rewards.json")
    if not recorded or not any(rec.get("from") == "code" for rec in recorded.values()):
        return None
    out, missing = {}, []
    for name, rec in recorded.items():
        path = rec.get("import_path")
        try:
            fn = load_function(path) if path else None
        except (ValueError, OSError) as e:
            raise ValueError(f"run folder {str(folder.path)!r} was trained with the reward {name!r} = {path}, which "
                             f"no longer loads ({e}); restore it, or resume from Python with train_lm(cfg, "
                             "resume=RUN_DIR, rewards={...})") from None
        if fn is None or isinstance(fn, type):
            missing.append(name)
        out[name] = (fn, float(rec["weight"]))
    if missing:
        raise ValueError(f"run folder {str(folder.path)!r} was trained with rewards given in code "
                         f"({', '.join(missing)}) that the command line cannot load again; resume from Python with "
                         "the same rewards: train_lm(cfg, resume=RUN_DIR, rewards={...}) with "
                         + "; ".join(_named(k, recorded[k]) for k in missing))
    return out
