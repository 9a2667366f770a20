"""Your reward functions: plain Python, loaded from a file or a module, in either of two signatures.

=====================================================  ==============================================
per completion (minigrpo)                              batched (TRL's ``reward_funcs``)
=====================================================  ==============================================
``def exact(prompt, completion, answer, **columns)``   ``def exact(prompts, completions, answer, **kw)``
called once per completion                             called once per step, with P·G completions
returns a float, None (does not apply), or a list      returns a list of P·G floats or None
(one reward per step of the completion)
``answer``: this row's value                           ``answer``: a list, one value per completion
=====================================================  ==============================================

Which signature a function has is read off its parameter names: ``completions`` (plural) means
batched, ``completion`` means per completion. Every other named parameter is a column of the data
(``answer`` above) — a column the data lacks is refused before the run starts — and ``**kwargs``
receives every column. The batched form also gets ``completion_ids`` (a list of token-id lists) if
it asks for it. For chat data, as in TRL, a prompt is its list of messages and a completion is
``[{"role": "assistant", "content": text}]``.

``--reward-fn rewards.py:exact`` loads ``exact`` from the file ``rewards.py``; ``--reward-fn
mypkg.rewards:exact`` imports it from a module. ``=0.5`` after it sets its weight (1 by default).
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import re
import sys
from pathlib import Path

import torch

from minigrpo.core.validate import is_real

# what each signature's own parameters are called; anything else named is a data column
BATCHED_ARGS = ("prompts", "completions", "completion_ids")
PER_COMPLETION_ARGS = ("prompt", "completion")


class RewardFunctionError(ValueError):
    """A reward function misbehaved (raised, returned the wrong thing): names the function and the row."""


def parse_spec(spec: str) -> tuple[str, float]:
    """``"rewards.py:exact=0.5"`` → ("rewards.py:exact", 0.5); no ``=WEIGHT``: weight 1."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"reward_fns: {spec!r} is not allowed; write FILE.py:NAME or module:NAME, optionally "
                         "=WEIGHT, e.g. rewards.py:exact=1.0")
    m = re.fullmatch(r"(.+?)=([^=:/\\]+)", spec)
    if m is None:
        return spec, 1.0
    try:
        weight = float(m.group(2))
    except ValueError:
        raise ValueError(f"reward_fns: the weight in {spec!r} is {m.group(2)!r}; it must be a number, e.g. "
                         "rewards.py:exact=0.5") from None
    return m.group(1), weight


def load_function(spec: str):
    """The callable named by ``FILE.py:NAME`` or ``package.module:NAME``; every failure one line."""
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise ValueError(f"reward function {spec!r}: write FILE.py:NAME or package.module:NAME (the function's "
                         "name after the colon)")
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"reward function {spec!r}: the file {where!r} does not exist")
        module_name = f"minigrpo_user_rewards.{re.sub(r'[^0-9A-Za-z_]', '_', str(path.resolve()))}"
        module = sys.modules.get(module_name)
        if module is None:
            loader_spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(loader_spec)
            try:
                loader_spec.loader.exec_module(module)
            except (Exception, SystemExit) as e:             # sys.exit() at import is a failed load, not our exit
                raise ValueError(f"reward function {spec!r}: the file {where!r} failed to load: "
                                 f"{type(e).__name__}: {e}") from None
            sys.modules[module_name] = module
    else:
        if "" not in sys.path and str(Path.cwd()) not in sys.path:   # as `python -m` has it: a module beside you
            sys.path.append(str(Path.cwd()))                         # imports from the `minigrpo` command too
        try:
            module = importlib.import_module(where)
        except (Exception, SystemExit) as e:
            raise ValueError(f"reward function {spec!r}: the module {where!r} failed to import: "
                             f"{type(e).__name__}: {e}") from None
    fn = getattr(module, name, None)
    if fn is None:
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        raise ValueError(f"reward function {spec!r}: {where!r} has no {name!r} (its functions: {found or 'none'})")
    if not callable(fn):
        raise ValueError(f"reward function {spec!r}: {name!r} is a {type(fn).__name__}, not a function")
    return fn


class RewardFunction:
    """A user function as a reward component (``protocols.RewardComponent``): ``score(batch)`` calls it in
    its own signature, with the data's columns, and checks what it returns, naming itself and the row."""

    def __init__(self, fn, name: str | None = None):
        if not callable(fn):
            raise ValueError(f"reward function {name or fn!r} is not callable")
        self.fn, self.name = fn, name or getattr(fn, "__name__", type(fn).__name__)
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            raise ValueError(f"reward function {self.name!r}: its signature cannot be read; define it with def")
        names = list(params)
        self.takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
        positional = [p.name for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if "completions" in names:
            self.batched, own = True, BATCHED_ARGS
        elif "completion" in names:
            self.batched, own = False, PER_COMPLETION_ARGS
        elif len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params.values()):
            self.batched, own = False, tuple(positional[:2])      # f(p, c): per completion, by position
        else:
            raise ValueError(f"reward function {self.name!r}{inspect.signature(fn)}: name its parameters like "
                             "f(prompt, completion, **columns) (one completion) or f(prompts, completions, **columns) "
                             "(TRL's batched form)")
        plain = [p for p in params.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        self.columns = [p.name for p in plain if p.name not in own]
        self.required = [p.name for p in plain if p.name not in own and p.default is p.empty]

    def check_columns(self, available, source: str) -> None:
        """Refuse, before the run, a column this function needs that the data lacks."""
        missing = [c for c in self.required if c not in available]
        if missing:
            raise ValueError(f"reward function {self.name!r} asks for the column{'s' if len(missing) > 1 else ''} "
                             f"{', '.join(map(repr, missing))}, which {source} lacks (its columns: "
                             f"{sorted(available) or 'prompt only'})")

    # --- calling it ------------------------------------------------------------------------------
    def _kwargs(self, columns: dict) -> dict:
        return dict(columns) if self.takes_all else {k: v for k, v in columns.items() if k in self.columns}

    def score(self, batch):
        P, G, T = batch.shape
        prompts, texts = batch.row_prompts(), batch.texts
        chat = [isinstance(p, list) for p in prompts]
        completion = lambda p, g: [{"role": "assistant", "content": texts[p][g]}] if chat[p] else texts[p][g]
        if self.batched:
            return self._score_batched(batch, prompts, completion)
        out = []
        for p in range(P):
            kwargs = self._kwargs(batch.row_columns(p))
            row = []
            for g in range(G):
                try:
                    value = self.fn(prompts[p], completion(p, g), **kwargs)
                except Exception as e:
                    raise RewardFunctionError(f"reward function {self.name!r} raised {type(e).__name__}: {e} "
                                              f"{batch.where(p, g)}") from e
                row.append(self._checked(value, batch, p, g, steps_ok=True))
            out.append(row)
        return out

    def _score_batched(self, batch, prompts, completion):
        P, G, _ = batch.shape
        flat = [(p, g) for p in range(P) for g in range(G)]                  # prompt-major, as TRL repeats them
        kwargs = {}
        names = set().union(*(batch.row_columns(p).keys() for p in range(P)))
        for name in names:
            if self.takes_all or name in self.columns:
                kwargs[name] = [batch.row_columns(p).get(name) for p, g in flat]
        if "completion_ids" in self.columns or self.takes_all:
            ids, keep = batch.ids.tolist(), (batch.mask & (batch.ids != batch.tokenizer.eos_token_id)).tolist()
            kwargs["completion_ids"] = [[t for t, k in zip(ids[p][g], keep[p][g]) if k] for p, g in flat]
        try:
            values = self.fn(prompts=[prompts[p] for p, g in flat], completions=[completion(p, g) for p, g in flat],
                             **kwargs)
        except Exception as e:
            raise RewardFunctionError(f"reward function {self.name!r} raised {type(e).__name__}: {e} (called on "
                                      f"{len(flat)} completions of {batch.where(0, None).strip('( )')} …)") from e
        if isinstance(values, torch.Tensor):
            values = values.tolist()
        if hasattr(values, "tolist") and not isinstance(values, (list, tuple)):       # numpy
            values = values.tolist()
        if not isinstance(values, (list, tuple)):
            raise RewardFunctionError(f"reward function {self.name!r} returned {type(values).__name__}; the batched "
                                      f"form returns a list of {len(flat)} numbers or None, one per completion")
        if len(values) != len(flat):
            raise RewardFunctionError(f"reward function {self.name!r} returned {len(values)} values for {len(flat)} "
                                      f"completions ({P} prompts × {G}); return one per completion, in order")
        out = [[None] * G for _ in range(P)]
        for (p, g), v in zip(flat, values):
            out[p][g] = self._checked(v, batch, p, g, steps_ok=False)
        return out

    def _checked(self, value, batch, p: int, g: int, steps_ok: bool):
        if value is None:
            return None
        if isinstance(value, (list, tuple)) and steps_ok:
            for s, x in enumerate(value):
                if x is not None and not is_real(x):
                    raise RewardFunctionError(f"reward function {self.name!r} returned step reward {x!r} for step "
                                              f"{s} {batch.where(p, g)}; step rewards are finite numbers or None")
            return [None if x is None else float(x) for x in value]
        if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:                 # a 0-d tensor / numpy number
            value = value.item()
        if not isinstance(value, (int, float)):                    # bool is an int: True/False count 1/0
            raise RewardFunctionError(f"reward function {self.name!r} returned {value!r} "
                                      f"({type(value).__name__}) {batch.where(p, g)}; return a number, or None "
                                      "when it does not apply")
        if not math.isfinite(value):
            raise RewardFunctionError(f"reward function {self.name!r} returned {value} {batch.where(p, g)}; return "
                                      "a finite number, or None when it does not apply")
        return float(value)


def load_reward_functions(specs: dict) -> dict:
    """{spec: weight} → {name: (RewardFunction, weight)}, each loaded and its signature read; two
    functions with the same name are told apart by their file/module."""
    out = {}
    for spec, weight in specs.items():
        if not is_real(weight):
            raise ValueError(f"reward_fns: the weight of {spec!r} is {weight!r}; it must be a finite number")
        fn = load_function(spec)
        name = spec.rpartition(":")[2]
        if name in out:
            name = spec
        out[name] = (RewardFunction(fn, name), float(weight))
    return out
