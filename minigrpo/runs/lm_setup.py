"""What a language-model run is built from, before its first step: where its prompts come from, its
reward, and the words it says when a step teaches nothing.

* ``prompt_source(cfg)``: the built-in task (``lm/sources.TaskPrompts``) or your data
  (``lm/sources.DataPrompts``) — the same rows either way, a prompt and its columns.
* ``build_reward(cfg, tokenizer, source)``: one ``compose.RewardSet`` of the built-in checks named in
  ``reward_weights``, the reward model, and your ``reward_fns``, with every column they ask for
  checked against the data before the run starts.
* ``flat_message``: the likely cause when every group's rewards were equal; ``UnjudgedWatch``: a warning
  when a reward component judged none of a step's completions.
"""
from __future__ import annotations

import math
import warnings

from minigrpo.core.protocols import RewardComponent, RolloutReward
from minigrpo.lm.sources import DataPrompts, TaskPrompts, load_train_test
from minigrpo.rewards.compose import RewardSet
from minigrpo.runs.config import TrainConfig
from minigrpo.runs.errors import UnjudgedRewardWarning


def prompt_source(cfg: TrainConfig):
    """The run's prompts: ``cfg.data`` (held out: ``test_data``, a DatasetDict's test split, or
    ``test_fraction``), else ``cfg.task``."""
    if cfg.data is None:
        return TaskPrompts(cfg.task_obj)
    train, test = load_train_test(cfg.data, cfg.test_data, cfg.test_fraction, cfg.prompt_column, cfg.data_config)
    if test is None and cfg.test_fraction:
        warnings.warn(f"data {cfg.data!r}: no row fell in the held-out {cfg.test_fraction:g} ({len(train)} rows), so "
                      "the run is not evaluated on held-out prompts; give test_data or raise test_fraction",
                      stacklevel=3)
    return DataPrompts(train, test, cfg.seed)


def reward_functions(cfg: TrainConfig, source) -> dict:
    """``cfg.reward_fns`` loaded ({name: (RewardFunction, weight)}), each refused in one line if it does not
    load or asks for a column ``source`` lacks: checked before any model is loaded."""
    from minigrpo.rewards.functions import load_reward_functions

    functions = load_reward_functions(cfg.reward_fns)
    for fn, _ in functions.values():
        fn.check_columns(source.columns, _where(source))
    return functions


def _where(source) -> str:
    return f"data {source.name!r}" if isinstance(source, DataPrompts) else f"task {source.name!r}"


def build_reward(cfg: TrainConfig, tokenizer, source, device=None, rewards=None,
                 functions: dict | None = None) -> RewardSet:
    """The run's reward: ``rewards`` when given (a mapping of components, one function, or a RewardSet),
    else the config's built-in checks, reward model and reward functions (``functions``, already loaded by
    ``reward_functions``, or loaded here). Refuses a column a reward function asks for that ``source`` lacks."""
    if isinstance(rewards, RewardSet):
        reward = rewards
    elif isinstance(rewards, dict):
        reward = RewardSet(tokenizer, rewards, combine=cfg.reward_combine)
    elif isinstance(rewards, RolloutReward):
        return _Fixed(rewards)
    elif rewards is not None:
        if not (callable(rewards) or isinstance(rewards, RewardComponent)):
            raise ValueError(f"train_lm: rewards={rewards!r}; give a mapping name → component, a reward function "
                             "or a RewardSet")
        reward = RewardSet(tokenizer, {getattr(rewards, "name", None) or getattr(rewards, "__name__", "reward"):
                                       rewards}, combine=cfg.reward_combine)
    else:
        parts = _builtin_parts(cfg, tokenizer, source, device)
        functions = reward_functions(cfg, source) if functions is None else functions
        for name, part in functions.items():
            parts[name if name not in parts else f"fn:{name}"] = part
        reward = RewardSet(tokenizer, parts, combine=cfg.reward_combine, name=f"{cfg.name}_reward")
    reward.check_columns(source.columns, _where(source))
    return reward


def describe_reward(reward, from_code: bool) -> dict:
    """What a run's rewards.json records: each component's weight, its function (module.name), whether it
    came from the config (rebuilt on resume) or from code (``train_lm(rewards=…)``), and for code its
    ``import_path`` ("module:qualname", or "FILE.py:name" for a function loaded from a file; None when it
    cannot be named: a lambda, a closure, a function of ``__main__`` or a notebook) and a ``fingerprint`` of
    its code (``code_fingerprint``), which tells a changed function from the one the run trained with."""
    if not isinstance(reward, RewardSet):
        return {"reward": _record(reward.reward, 1.0, "code")}
    return {k: _record(getattr(fn, "fn", fn), reward.weights[k], "code" if from_code else "config")
            for k, fn in reward.components.items()}


def _record(fn, weight: float, origin: str) -> dict:
    out = {"weight": weight, "function": _qualified(fn), "from": origin}
    if origin == "code":
        out.update(import_path=import_path(fn), fingerprint=code_fingerprint(fn))
    return out


def _qualified(fn) -> str:
    owner = fn if callable(fn) and hasattr(fn, "__qualname__") else type(fn)
    return f"{getattr(owner, '__module__', '?')}.{getattr(owner, '__qualname__', repr(owner))}"


def import_path(fn) -> str | None:
    """"module:qualname" that imports ``fn`` again (its class for an object), "FILE.py:name" for a function
    loaded from a file (``--reward-fn FILE.py:name``); None when nothing names it (a lambda, a closure, a
    function defined in ``__main__`` or a notebook, or a name that now holds something else)."""
    import importlib
    import sys

    target = fn if hasattr(fn, "__qualname__") and hasattr(fn, "__module__") else type(fn)
    module, qual = getattr(target, "__module__", None), getattr(target, "__qualname__", "")
    if not module or module == "__main__" or "<" in qual or not qual:
        return None
    if module.startswith("minigrpo_user_rewards."):           # functions.load_function's name for a file
        file = getattr(sys.modules.get(module), "__file__", None)
        return f"{file}:{qual}" if file and "." not in qual else None
    try:
        obj = importlib.import_module(module)
        for part in qual.split("."):
            obj = getattr(obj, part)
    except Exception:
        return None
    return f"{module}:{qual}" if obj is target else None


def code_fingerprint(fn) -> str | None:
    """A short SHA-256 of what a Python function does: its code object (bytecode, constants and names, nested
    functions included, line numbers left out), its default values and the plain values it closes over. The
    same source gives the same fingerprint (on the same Python version); an edited body, constant or captured
    number does not. An object is fingerprinted by its class's ``score`` or ``__call__``; None when there is
    no Python code to read."""
    import hashlib

    target = getattr(fn, "__func__", fn)
    if getattr(target, "__code__", None) is None:
        method = getattr(type(fn), "score", None) or getattr(type(fn), "__call__", None)
        target = getattr(method, "__func__", method)
        if getattr(target, "__code__", None) is None:
            return None
    h = hashlib.sha256()
    _hash_code(h, target.__code__)
    h.update(_plain(getattr(target, "__defaults__", None)).encode())
    h.update(_plain(getattr(target, "__kwdefaults__", None)).encode())
    for cell in getattr(target, "__closure__", None) or ():
        try:
            h.update(_plain(cell.cell_contents).encode())
        except ValueError:                                   # an empty cell
            h.update(b"<empty>")
    return h.hexdigest()[:16]


def _hash_code(h, code) -> None:
    h.update(code.co_name.encode())
    h.update(code.co_code)
    h.update(repr((code.co_names, code.co_varnames, code.co_freevars)).encode())
    for c in code.co_consts:
        if hasattr(c, "co_code"):
            _hash_code(h, c)
        else:
            h.update(_plain(c).encode())


def _plain(x) -> str:
    """A repr that is the same in every process: numbers, text, None and containers of them; the type's
    name for anything else (an object's repr may hold its address)."""
    if x is None or isinstance(x, (bool, int, float, complex, str, bytes)):
        return repr(x)
    if isinstance(x, (tuple, list)):
        return type(x).__name__ + "(" + ",".join(_plain(v) for v in x) + ")"
    if isinstance(x, (frozenset, set)):
        return type(x).__name__ + "(" + ",".join(sorted(_plain(v) for v in x)) + ")"
    if isinstance(x, dict):
        return "dict(" + ",".join(sorted(f"{_plain(k)}:{_plain(v)}" for k, v in x.items())) + ")"
    if hasattr(x, "__code__"):
        return f"fn:{code_fingerprint(x)}"
    return f"<{type(x).__module__}.{type(x).__qualname__}>"


def _named(name: str, rec: dict) -> str:
    """One recorded code component in words: how to pass it again."""
    path = rec.get("import_path")
    if path:
        return f"{name} = {path} (weight {rec['weight']:g})"
    return (f"{name} = {rec['function']} (weight {rec['weight']:g}; no import path, e.g. a lambda or a function "
            f"defined in __main__ or a notebook; code fingerprint {rec.get('fingerprint')})")


def check_resumed_reward(recorded: dict | None, reward, from_code: bool, run_dir) -> None:
    """Refuse to resume with a reward other than the one the run trained with: rewards given in code must
    be given again, and the same components must come back with the same weights, import paths and code
    (fingerprints). Each refusal is one line that says what differs."""
    if recorded is None:                                     # a run folder from before rewards.json
        return
    coded = sorted(k for k, v in recorded.items() if v["from"] == "code")
    if coded and not from_code:
        raise ValueError(f"run folder {str(run_dir)!r} was trained with rewards given in code ({', '.join(coded)}); "
                         "resuming with the configured reward would change what it learns. Resume from Python with "
                         "the same rewards: train_lm(cfg, resume=RUN_DIR, rewards={...}) with "
                         + "; ".join(_named(k, recorded[k]) for k in coded))
    now = describe_reward(reward, from_code)
    if sorted(now) != sorted(recorded):
        raise ValueError(f"run folder {str(run_dir)!r} was trained with the reward components {sorted(recorded)}; "
                         f"the reward given now has {sorted(now)}; resume with the same components")
    if from_code and not coded:
        raise ValueError(f"run folder {str(run_dir)!r} was trained with the reward its config.json describes; "
                         "resume it without rewards=")
    differ = []
    for k in sorted(recorded):
        was, new = recorded[k], now[k]
        if float(was["weight"]) != float(new["weight"]):
            differ.append(f"{k} weight {was['weight']:g} -> {new['weight']:g}")
        if was["from"] != "code":
            continue
        if was.get("import_path") != new.get("import_path") and "import_path" in was:
            differ.append(f"{k} import path {was['import_path']} -> {new['import_path']}")
        elif was.get("fingerprint") != new.get("fingerprint") and "fingerprint" in was:
            differ.append(f"{k} code {new['function']} differs from the {was['function']} the run trained with "
                          f"(fingerprint {was['fingerprint']} -> {new['fingerprint']})")
    if differ:
        raise ValueError(f"run folder {str(run_dir)!r}: the rewards given differ from those it was trained with: "
                         f"{'; '.join(differ)}; resume with the same functions and weights, or start a new run")


def _builtin_parts(cfg: TrainConfig, tokenizer, source, device) -> dict:
    """{name: (component, weight)} for ``cfg.reward_weights``: the task's checks, or for data the
    checks that need only an answer column and the text, plus the reward model."""
    from minigrpo.rewards import checks

    weights = dict(cfg.reward_weights)
    rm_weight = weights.pop("reward_model", None)
    has_answer = "answer" in source.columns
    if isinstance(source, TaskPrompts):
        task_set = checks.task_reward(cfg.task_obj, tokenizer, {"correct": 0.0, **weights},
                                      combine=cfg.reward_combine, forbidden=cfg.forbidden)
        parts = {k: (fn, task_set.weights[k]) for k, fn in task_set.components.items()}
    else:
        if "correct" in weights and not has_answer:
            raise ValueError(f"data {source.name!r} has no 'answer' column for the built-in 'correct' check (its "
                             f"columns: {source.columns or 'prompt only'}); give your own reward with --reward-fn "
                             "FILE.py:NAME, or add an answer column")
        makers = {"correct": lambda: checks.exact_answer(),
                  "length": lambda: checks.length_penalty(max(source.longest_answer(tokenizer), 1)),
                  "safety": lambda: checks.forbidden_strings(cfg.forbidden)}
        parts = {k: (makers[k](), w) for k, w in weights.items()}
        if has_answer and "correct" not in parts:
            parts["correct"] = (checks.exact_answer(), 0.0)          # logged (reward/correct), not trained
    if rm_weight is not None:
        from minigrpo.rewards.reward_model import RewardModelReward

        parts["reward_model"] = (RewardModelReward.load(cfg.reward_model, device=device), float(rm_weight))
    return parts


class _Fixed:
    """A reward that reads the rollout but no data rows (a ``RolloutReward`` given as ``rewards``)."""

    def __init__(self, reward):
        self.reward, self.name = reward, getattr(reward, "name", type(reward).__name__)

    def bind(self, rows, source=None):
        return self.reward

    def check_columns(self, columns, source) -> None:
        pass


def flat_message(record: dict, step, max_new_tokens: int) -> str:
    """Why a step taught nothing, in the words of its likely cause."""
    if record.get("reward_valid_fraction", 1.0) == 0.0:
        return ("No reward component judged any completion (every one returned None): check that the data has the "
                "columns the reward reads and what the reward functions return.")
    if record.get("ended_fraction", 1.0) == 0.0:
        return (f"Every group's rewards were equal, and no completion ended within max_new_tokens={max_new_tokens} "
                "(no EOS): the model never finishes its answer — fine-tune it first (minigrpo sft), or raise "
                "max_new_tokens.")
    r = step.r
    if bool((r == r.flatten()[0]).all()):
        return (f"Every completion got the same reward, {r.flatten()[0].item():g}, so the reward cannot tell them "
                "apart: if it never matches, check the data's answers against what the model writes (e.g. ' 7' for "
                "'7') and that the model suits the data; if every answer is already right, the prompts are too easy "
                "to learn from.")
    return ("Every group's completions got equal rewards (each prompt all right or all wrong), so no advantage is "
            "left: raise group_size or temperature, or use a reward with partial credit.")


class UnjudgedWatch:
    """Says when a reward component judged none of a step's completions (it returned None for every one),
    which leaves it out of that step: a warning the first time for each component, and at the end of the
    run one for the components that judged nothing in any step (a bug, not a sparse reward)."""

    def __init__(self):
        self.steps, self.never, self.told = 0, None, set()

    def see(self, step, t: int) -> None:
        if step is None or step.scored is None:
            return
        none = {k for k, m in step.scored.applicable.items() if not bool(m.any())}
        self.steps += 1
        self.never = none if self.never is None else self.never & none
        for k in sorted(none - self.told):
            self.told.add(k)
            warnings.warn(f"reward component {k!r} judged none of the {step.r.numel()} completions at step {t} (it "
                          "returned None for every one), so it gave that step no signal; None means 'does not "
                          "apply': check the columns it reads and what it returns", UnjudgedRewardWarning,
                          stacklevel=2)

    def finish(self) -> None:
        if self.steps > 1 and self.never:
            names = ", ".join(map(repr, sorted(self.never)))
            warnings.warn(f"reward component{'s' if len(self.never) > 1 else ''} {names} judged no completion in any "
                          f"of the {self.steps} steps of this run, so {'they' if len(self.never) > 1 else 'it'} did "
                          "not shape training", UnjudgedRewardWarning, stacklevel=2)


def sample_rows(tokenizer, step, prompts, rows, n_prompts: int = 2, n_completions: int = 4) -> list[dict]:
    """A few prompts with their first completions and rewards, for samples.jsonl and the reporters."""
    from minigrpo.lm.tokens import decode_completions, decode_prompts

    ro = step.rollout
    texts = decode_completions(tokenizer, ro.completions[:n_prompts, :n_completions],
                               ro.mask[:n_prompts, :n_completions], prompts=prompts[:n_prompts])
    out = []
    for p, prompt in enumerate(decode_prompts(tokenizer, prompts[:n_prompts])):
        answer = rows[p].columns.get("answer")
        rewards = [x if math.isfinite(x) else None for x in step.r[p, :n_completions].tolist()]
        out.append({"prompt": prompt, **({"answer": answer} if answer is not None else {}),
                    "completions": texts[p], "rewards": rewards})
    return out


def flat_samples(samples: list[dict]) -> list[dict]:
    """``sample_rows``' records as one row per completion (a table for the reporters)."""
    return [{"prompt": s["prompt"], **({"answer": s["answer"]} if "answer" in s else {}), "completion": c,
             "reward": r} for s in samples for c, r in zip(s["completions"], s["rewards"])]
