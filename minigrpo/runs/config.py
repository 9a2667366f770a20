"""``TrainConfig``: every setting of a GRPO run on a language model, declared once; and
``RewardModelJob``, the settings of ``minigrpo reward-model``.

Each field carries its default, its rule (``core/validate.py``) and its meaning; the command line
(``minigrpo train``) and config files (YAML/JSON) are derived from these fields, and
``__post_init__`` checks them: the rules field by field, then the few that relate two fields.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from minigrpo.core.kl import AdaptiveBeta, FixedBeta
from minigrpo.core.recipe import (AGGREGATIONS, BASELINES, KLS, METHODS, PIECES, PRESETS, Recipe, compose,
                                  method_and_recipe, pieces)
from minigrpo.core.validate import (FLAG, SEED, Rule, check_fields, integer, is_real, number, one_of, optional,
                                    read_settings, refuse, setting, text)
from minigrpo.lm.tasks import TaskWithSteps, checked_task, in_test_split, make_task
from minigrpo.rewards.checks import TASK_COMPONENTS
from minigrpo.rewards.compose import COMBINE
from minigrpo.rewards.labels import labels_to_pairs, load_labels
from minigrpo.rewards.preferences import RATERS, load_preferences, synthetic_preferences
from minigrpo.rewards.reward_model import RMTrainConfig
from minigrpo.runs.config_files import check_device, read_settings_file, usable_devices  # noqa: F401  (re-exported)

PRECISIONS = ("fp32", "bf16")
OFFLINE = ("dpo", "ipo", "offline_grpo")      # methods that learn from data built (or logged) before training
# built-in components that read nothing but the answer column and the text (a task's 'format' and 'steps' need it)
DATA_COMPONENTS = ("correct", "length", "safety", "reward_model")
# Upper bounds on sizes, far above any real run, so a typo (a few extra zeros) is refused at once rather than
# sampling for hours or ending in an out-of-memory traceback: a step holds all its P·G completions at once.
MAX_COMPLETIONS = 65_536          # prompts_per_step × group_size
MAX_GROUP = 4_096                 # group_size (DeepSeekMath used 64)
MAX_EVAL = 100_000                # eval_size
MAX_EVAL_SAMPLES = 256            # eval_samples per held-out prompt (pass@k up to 256)


def _fail(name, value, allowed):
    refuse("TrainConfig", name, value, allowed)


@dataclass
class TrainConfig:
    """Every setting of an LM GRPO run (defaulted, validated on construction; also a YAML/JSON file).

    ``recipe`` names a preset of ``core/recipe.py``; each piece left None (``kl``, ``baseline``,
    ``clip_eps``, ``clip_eps_high``, ``aggregation``) is filled in from it on construction, so the
    config — and a run's saved config.json — says exactly what runs. (To switch the preset of an
    existing config, set the pieces back to None: ``replace(cfg, recipe="rloo", **dict.fromkeys(PIECES))``.)
    """

    task: str = "addition"                 # a built-in task (addition, chain, judge); unused when data is given
    task_args: dict = field(default_factory=dict)   # e.g. {"digits": 3}
    # Your prompts instead of a task: a .jsonl/.csv/.parquet file, a save_to_disk folder or a hub dataset name, with a
    # 'prompt' column (text or chat messages); the other columns reach reward functions by name.
    data: str | None = setting(None, optional(text("must be a data file, a save_to_disk folder or a hub dataset name")))
    # The column of data (and test_data) that holds the prompts, e.g. question for a hub dataset.
    prompt_column: str = setting("prompt", text("must name the data's prompt column, e.g. 'prompt' or 'question'"))
    # A hub dataset's configuration, e.g. main for openai/gsm8k; None: its default.
    data_config: str | None = setting(None, optional(text("must name a hub dataset's configuration, e.g. 'main'")))
    # Held-out prompts for evaluation (same form as data); None: the test split of a DatasetDict folder, else
    # test_fraction of data.
    test_data: str | None = setting(None, optional(text("must be a data file, a folder or a hub dataset name")))
    # Fraction of data held out for evaluation, fixed by a hash of each prompt (0: none).
    test_fraction: float = setting(0.1, number(ge=0, lt=1))
    # "tiny": the task's shipped SFT anchor; or a save_pretrained folder (e.g. from `minigrpo sft`) or a hub id.
    model: str = setting("tiny", text("must be 'tiny', a save_pretrained folder or a hub id such as 'gpt2'"))
    beta: float = setting(0.02, number(ge=0))   # KL coefficient β (initial β when kl_target is set); DPO's β, IPO's τ
    # Adapt β toward this KL per completion (Ziegler et al. 2019); None: a fixed β.
    kl_target: float | None = setting(None, optional(number(gt=0)))
    kl_horizon: float = setting(10_000.0, number(gt=0))   # the adaptive β's horizon in samples: smaller reacts faster
    # β_step of the per-step KL (core/step_kl.py): on a multi-step task (chain) each reasoning step s earns
    # −β_step·KL_s as a step reward, baselined per step across the group; 0: the per-step KL is only measured
    # (kl/step_* metrics).
    step_kl_beta: float = setting(0.0, number(ge=0))
    # What trains the policy: grpo (online, any recipe), ppo (recipe ppo: a critic and GAE), dpo or ipo (preference
    # pairs: prefs, labels, or pairs built from anchor samples), offline_grpo (logged scored completions); None: ppo
    # when recipe is ppo, else grpo (runs/methods.py).
    method: str | None = setting(None, optional(one_of(METHODS)))
    # The recipe: seed, deepseek, dr_grpo, rloo, dapo_like or ppo (core/recipe.py); None: ppo for method ppo, else
    # seed. The pieces below that are left None are the preset's own.
    recipe: str | None = setting(None, optional(one_of(PRESETS)))
    # KL placement and estimator: reward:k1|k2|k3, loss:k1|k2|k3 or none; None: the preset's (seed: reward:k1).
    kl: str | None = setting(None, optional(one_of(KLS)))
    # Advantage baseline (core/advantages.py); None: the preset's (seed: group_mean).
    baseline: str | None = setting(None, optional(one_of(BASELINES)))
    # PPO clip ε: the ratio ρ is clipped to [1 − ε, 1 + ε]; None: the preset's (seed and rloo: no clip, the plain
    # policy gradient; deepseek: 0.2).
    clip_eps: float | None = setting(None, optional(number(gt=0, lt=1)))
    # Upper clip ε_high: ρ ≤ 1 + ε_high (DAPO's clip-higher); None: clip_eps if that is given, else the preset's
    # (dapo_like: 0.28).
    clip_eps_high: float | None = setting(None, optional(number(gt=0, lt=10)))
    # How token losses are averaged: seq_mean_token_mean, token_mean or constant_normaliser (core/loss.py); None:
    # the preset's (seed: seq_mean_token_mean).
    aggregation: str | None = setting(None, optional(one_of(AGGREGATIONS)))
    group_size: int = setting(8, integer(1, MAX_GROUP))  # G completions per prompt
    prompts_per_step: int = setting(16, integer(1, MAX_COMPLETIONS))   # P prompts per step
    # AdamW learning rate (after a short warm-up); None: 2e-4, or 5e-5 for ppo, whose 4 epochs × 4 minibatches take
    # 16 steps per rollout (at 2e-4 PPO fell below the anchor on chain: bench/RESULTS.md).
    lr: float | None = setting(None, optional(number(gt=0)))
    warmup_steps: int = setting(10, integer(0))           # linear learning-rate warm-up
    steps: int = setting(200, integer(1))                 # GRPO steps
    # Epochs over each rollout (> 1 is where clipping acts); None: 4 for ppo, else 1.
    updates: int | None = setting(None, optional(integer(1)))
    # Minibatches per epoch, split by prompt; None: 4 for ppo (at most prompts_per_step), else 1.
    minibatches: int | None = setting(None, optional(integer(1)))
    critic_lr: float = setting(1e-4, number(gt=0))        # ppo: Adam learning rate of the critic (lm/critic.py)
    gae_lambda: float = setting(0.95, number(ge=0, le=1))  # ppo: GAE's λ (1: Monte-Carlo returns)
    gae_gamma: float = setting(1.0, number(ge=0, le=1))    # ppo: discount γ over the tokens of a completion
    value_clip: float | None = setting(0.2, optional(number(gt=0)))  # ppo: clip of the value loss; None: plain MSE
    # dpo/ipo: a JSONL file of {prompt, chosen, rejected} pairs and/or {prompt, ranking} lists (rewards/preferences.py).
    prefs: str | None = setting(None, optional(text("must be a preference file (JSONL)")))
    # dpo/ipo: a JSONL file of good/bad labels (rewards/labels.py); each good completion is preferred to each bad one.
    labels: str | None = setting(None, optional(text("must be a label file (JSONL)")))
    # offline_grpo: logged completions with a reward (and the sampler's per-token logp) per row (lm/logged.py);
    # None, and for dpo/ipo without prefs/labels: sampled from the anchor and scored once, before training.
    offline_data: str | None = setting(None, optional(text("must be a data file of scored completions")))
    # Prompts sampled from the anchor (group_size completions each) when the offline data or pairs are built.
    offline_prompts: int = setting(256, integer(1))
    # offline_grpo: fresh online prompts per step beside the logged ones (the hybrid); 0: offline only.
    online_prompts: int = setting(0, integer(0))
    max_grad_norm: float | None = setting(1.0, optional(number(gt=0)))   # clip ‖∇θ‖; None: no clipping
    max_new_tokens: int | None = setting(None, optional(integer(1)))     # None: the task's longest answer + EOS
    temperature: float = setting(1.0, number(gt=0))       # sampling temperature
    top_k: int | None = setting(None, optional(integer(1)))             # sample from the k likeliest tokens; None: all
    top_p: float | None = setting(None, optional(number(gt=0, le=1)))   # nucleus sampling; None: off
    # Built-in reward components and their weights: correct, format, length, safety, steps (checks.py), reward_model;
    # None: {correct: 1}, or none when reward_fns are given. With data, 'correct' compares with the answer column.
    reward_weights: dict[str, float] | None = None
    # Your reward functions and their weights: FILE.py:NAME or package.module:NAME → weight (the flag repeats:
    # --reward-fn rewards.py:exact=1.0 --reward-fn rewards.py:short=0.2). Signatures: rewards/functions.py.
    reward_fns: dict[str, float] = field(default_factory=dict, metadata={"metavar": "FILE.py:NAME[=WEIGHT]"})
    # "sum": Σ w·c; "normalised": each component z-scored in its group first.
    reward_combine: str = setting("sum", one_of(COMBINE))
    # Strings the "safety" component penalises.
    forbidden: list[str] = setting(factory=list, rule=Rule(
        lambda v: isinstance(v, (list, tuple)) and all(isinstance(w, str) and w for w in v),
        "must be a list of non-empty strings"))
    # A reward-model folder (reward_model.py, or any HF sequence classifier): the "reward_model" component.
    reward_model: str | None = setting(None, optional(text("must be a reward-model folder")))
    seed: int = setting(0, SEED)                          # problem draws and sampling
    eval_every: int = setting(25, integer(1))             # evaluate on held-out prompts every N steps (and at 0 and last)
    eval_size: int = setting(200, integer(1, MAX_EVAL))   # held-out prompts evaluated (at most)
    # Completions sampled per held-out prompt for eval/sampled/* and pass@k; 0: greedy decoding only.
    eval_samples: int = setting(4, integer(0, MAX_EVAL_SAMPLES))
    # Stop when each of the first N steps taught nothing (every group's rewards equal, or no completion judged);
    # 0: never stop.
    stop_after_flat: int = setting(20, integer(0))
    # Also log to tensorboard, trackio or wandb (the run folder's metrics.jsonl is always written).
    report_to: list[str] = setting(factory=list, rule=Rule(
        lambda v: isinstance(v, (list, tuple)) and all(isinstance(w, str) for w in v),
        "must be a list of names: tensorboard, trackio, wandb"))
    sample_every: int = setting(25, integer(1))           # log sample completions every N steps
    save_every: int = setting(50, integer(0))             # checkpoint every N steps (and at the last); 0: only at the end
    keep_checkpoints: int = setting(2, integer(1))        # newest checkpoints kept
    # Parent folder of run folders.
    out: str = setting("runs", text("must be a folder path (the parent of run folders), e.g. 'runs'"))
    # auto (cuda, then mps, then cpu), or a device this torch can use here: cpu, cuda, cuda:N, mps.
    device: str = setting("auto", text("must be 'auto' or a device this torch can use, such as 'cpu', 'cuda', "
                                       "'cuda:1', 'mps'"))
    precision: str = setting("fp32", one_of(PRECISIONS))  # fp32, or bf16 autocast
    gradient_checkpointing: bool = setting(False, FLAG)   # recompute activations in backward (saves memory)
    lora_r: int = setting(0, integer(0))                  # > 0: train a LoRA adapter of this rank (the anchor: it off)

    def __post_init__(self):
        if isinstance(self.out, os.PathLike):
            self.out = os.fspath(self.out)
        self.task_obj = checked_task("TrainConfig", self.task, self.task_args)
        check_fields(self)
        check_device(self.device)             # only a device this torch can use here
        self._fill_method()
        # the recipe's pieces: the preset's own where None (compose also makes clip_eps alone symmetric)
        for name, value in pieces(self.build_recipe()).items():
            setattr(self, name, value)
        if BASELINES[self.baseline].min_group > self.group_size and self.method not in ("dpo", "ipo"):
            _fail("group_size", self.group_size, f"baseline {self.baseline!r} needs a group of at least "
                                                 f"{BASELINES[self.baseline].min_group}")
        self._check_data_and_rewards()
        allowed = TASK_COMPONENTS + ("reward_model",) if self.data is None else DATA_COMPONENTS
        for k, w in self.reward_weights.items():
            if k not in allowed:
                hint = "; a function of your own goes in reward_fns (--reward-fn FILE.py:NAME)" if ":" in k else \
                    " (with data; 'format' and 'steps' check a built-in task's answers)" if k in TASK_COMPONENTS else ""
                _fail("reward_weights", self.reward_weights, f"component {k!r} is unknown; choose from "
                                                             f"{list(allowed)}{hint}")
            if not is_real(w):
                _fail("reward_weights", self.reward_weights, f"the weight of {k!r} must be a finite number")
        if "safety" in self.reward_weights and not self.forbidden:
            _fail("forbidden", self.forbidden, "the 'safety' reward component needs at least one forbidden string")
        if ("reward_model" in self.reward_weights) != (self.reward_model is not None):
            _fail("reward_model", self.reward_model, "give a reward-model folder exactly when reward_weights "
                                                     "names 'reward_model'")
        if self.kl_target is not None and not self.beta > 0:
            _fail("kl_target", self.kl_target, "needs beta > 0 (an adaptive β starts from beta)")
        if "steps" in self.reward_weights and not isinstance(self.task_obj, TaskWithSteps):
            _fail("reward_weights", self.reward_weights, f"'steps' needs a multi-step task; {self.task!r} has none")
        if self.step_kl_beta > 0 and not self.has_steps:
            _fail("step_kl_beta", self.step_kl_beta, "> 0 needs completions with reasoning steps: a multi-step task "
                  f"such as 'chain' ({'your data has' if self.data is not None else repr(self.task) + ' has'} none)")
        if self.step_kl_beta > 0 and self.method not in ("grpo", "ppo"):
            _fail("step_kl_beta", self.step_kl_beta, f"> 0 needs an online method, grpo or ppo (method is "
                                                     f"{self.method!r})")

    def _fill_method(self) -> None:
        """method and recipe from each other (ppo is recipe 'ppo', and only it), and the settings that
        belong to one method only."""
        self.method, self.recipe = method_and_recipe(self.method, self.recipe, "TrainConfig")
        if self.updates is None:
            self.updates = 4 if self.method == "ppo" else 1
        if self.lr is None:
            self.lr = 5e-5 if self.method == "ppo" else 2e-4
        if self.minibatches is None:
            self.minibatches = min(4, self.prompts_per_step) if self.method == "ppo" else 1
        if self.prompts_per_step * self.group_size > MAX_COMPLETIONS:
            _fail("group_size", self.group_size, f"prompts_per_step × group_size = {self.prompts_per_step:,} × "
                                                 f"{self.group_size:,} is over {MAX_COMPLETIONS:,} completions a step, "
                                                 "which a step holds in memory at once; lower either")
        if self.minibatches > self.prompts_per_step + self.online_prompts:
            _fail("minibatches", self.minibatches, f"must be at most the prompts a step learns from (prompts_per_step + "
                                                   f"online_prompts = {self.prompts_per_step + self.online_prompts})")
        for name, methods in (("prefs", ("dpo", "ipo")), ("labels", ("dpo", "ipo")), ("offline_data", ("offline_grpo",)),
                              ("online_prompts", ("offline_grpo",))):
            if getattr(self, name) and self.method not in methods:
                _fail(name, getattr(self, name), f"belongs to method {' or '.join(methods)} (method is {self.method!r})")
        if self.method in ("dpo", "ipo") and not self.beta > 0:
            _fail("beta", self.beta, f"method {self.method} needs beta > 0 (DPO's β, IPO's τ)")
        if self.prefs and self.labels:
            _fail("labels", self.labels, "give prefs or labels, not both")
        from minigrpo.lm.models import looks_like_path

        for name in ("prefs", "labels", "offline_data"):
            value = getattr(self, name)
            if value and (name != "offline_data" or looks_like_path(value, (".jsonl", ".json", ".csv", ".parquet"))) \
                    and not Path(value).exists():
                _fail(name, value, "names no file: it does not exist")
        if self.method in ("dpo", "ipo") and not (self.prefs or self.labels) and self.group_size < 2:
            _fail("group_size", self.group_size, "dpo/ipo without prefs builds pairs from groups of anchor samples: "
                                                 "it needs group_size ≥ 2")

    def _check_data_and_rewards(self) -> None:
        from minigrpo.rewards.functions import parse_spec
        from minigrpo.runs.report import check_report_to

        if self.data is None and self.test_data is not None:
            _fail("test_data", self.test_data, "needs data (held-out prompts of your own go with your own prompts)")
        if self.data is None and self.data_config is not None:
            _fail("data_config", self.data_config, "needs data (a hub dataset's configuration goes with its name)")
        if self.data is not None and self.model == "tiny":
            _fail("model", self.model, "'tiny' is a built-in task's anchor; with data give a model folder, e.g. the "
                                       "one `minigrpo sft --model tiny --data FILE --out DIR` writes, or a hub id")
        if not isinstance(self.reward_fns, dict):
            _fail("reward_fns", self.reward_fns, "must be a mapping FILE.py:NAME → weight")
        fns = {}
        for spec, w in self.reward_fns.items():
            name, weight = parse_spec(spec)
            if name != spec and w != 1.0:
                _fail("reward_fns", self.reward_fns, f"{spec!r} has a weight in its name and another ({w})")
            fns[name] = weight if name != spec else w
            if not is_real(fns[name]):
                _fail("reward_fns", self.reward_fns, f"the weight of {name!r} must be a finite number")
        self.reward_fns = fns
        if self.reward_weights is None:
            self.reward_weights = {} if fns else {"correct": 1.0}
        if not isinstance(self.reward_weights, dict):
            _fail("reward_weights", self.reward_weights, "must be a mapping of component name → weight")
        if not self.reward_weights and not fns:
            _fail("reward_weights", self.reward_weights, "is empty and no reward_fns are given: the run has no reward")
        check_report_to(self.report_to)

    # --- construction from files and flags ----------------------------------------------------------
    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """A config from a mapping of settings (a run's saved config.json, a parsed file): an unknown
        name is refused, and text is read as the field's declared type (``"1e-3"`` → 0.001)."""
        return cls(**read_settings(cls, d))

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        """Read a YAML (.yaml/.yml) or JSON file of TrainConfig fields."""
        return cls(**read_settings_file(cls, path))

    # --- the pieces it composes --------------------------------------------------------------------
    def build_recipe(self) -> Recipe:
        """The preset with this config's pieces (``core/recipe.compose``)."""
        return compose(self.recipe, **{name: getattr(self, name) for name in PIECES})

    def beta_controller(self):
        return FixedBeta(float(self.beta)) if self.kl_target is None else \
            AdaptiveBeta(self.beta, self.kl_target, self.kl_horizon)

    def new_tokens(self, longest_answer: int = 0) -> int:
        """max_new_tokens, or: a task's longest answer + EOS; with data, twice the longest answer (or
        completion) in tokens + EOS, or 64 when the data has neither."""
        if self.max_new_tokens:
            return self.max_new_tokens
        if self.data is None:
            return self.task_obj.max_answer_len + 1
        return 2 * longest_answer + 1 if longest_answer else 64

    @property
    def has_steps(self) -> bool:
        """Whether completions have reasoning steps: a built-in multi-step task (``TaskWithSteps``), not data."""
        return self.data is None and isinstance(self.task_obj, TaskWithSteps)

    @property
    def name(self) -> str:
        """The run's name: the task's, or the data's (``lm/data.data_name``)."""
        from minigrpo.lm.data import data_name

        return self.task if self.data is None else data_name(self.data)


@dataclass
class RewardModelJob(RMTrainConfig):
    """``minigrpo reward-model``: Bradley–Terry training (the ``RMTrainConfig`` fields) on pairs from
    exactly one source — a preference file, a label file, or a synthetic rater on a task."""

    # A JSONL file of {prompt, chosen, rejected} pairs and/or {prompt, ranking} lists.
    prefs: str | None = setting(None, optional(text()))
    # A JSONL file of good/bad labels (each good completion is preferred to each bad one).
    labels: str | None = setting(None, optional(text()))
    # A hidden rater standing in for people: closeness or column_checker.
    synthetic: str | None = setting(None, optional(one_of(RATERS)))
    task: str = "addition"                                 # the task (for synthetic, and the default base)
    prompts: int = setting(600, integer(1))                # synthetic: prompts to draw (8 pairs each)
    base: str | None = setting(None, optional(text()))     # causal LM folder to start from; None: the task's anchor
    skip_bad: bool = setting(False, FLAG)                  # skip and count bad records instead of stopping
    # Output folder (save_pretrained + reward_model.json; checked before training, replaced whole, never the
    # package's shipped assets unless MINIGRPO_WRITE_ASSETS=1); None: a new folder
    # runs/reward-model-<task>-<date>-<time>.
    out: str | None = setting(None, optional(text()))

    def __post_init__(self):
        super().__post_init__()
        checked_task("RewardModelJob", self.task, {})
        given = [name for name in ("prefs", "labels", "synthetic") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"RewardModelJob: give exactly one of prefs (a preference file), labels (a label file) "
                             f"or synthetic (a rater); got {given or 'none'}")

    def pairs(self) -> tuple[list, list, dict]:
        """(training pairs, held-out pairs, skipped records by reason) from the job's one source: a
        synthetic rater draws both sets; a file's pairs are split by prompt, 10% held out."""
        if self.synthetic:
            task = make_task(self.task)
            rule = RATERS[self.synthetic](task)
            train = synthetic_preferences(task, rule, self.prompts, "train", 8, torch.Generator().manual_seed(self.seed))
            test = synthetic_preferences(task, rule, max(self.prompts // 6, 10), "test", 8,
                                         torch.Generator().manual_seed(self.seed + 1))
            return train, test, {}
        if self.prefs:
            pairs, report = load_preferences(self.prefs, strict=not self.skip_bad)
            skipped = dict(report.skipped)
        else:
            labels, bad = load_labels(self.labels, strict=not self.skip_bad)
            pairs, skipped = labels_to_pairs(labels), dict(bad)
        train = [p for p in pairs if not in_test_split(p.prompt, 0.1)]
        if not train:
            source = self.prefs or self.labels
            prompts = len({p.prompt for p in pairs})
            raise ValueError(f"{str(source)!r}: all {len(pairs)} pairs were held out for testing: the held-out 10% is "
                             f"chosen by a hash of the prompt, and all {prompts} distinct prompt(s) fell in it; give "
                             "pairs on more prompts (tens at least)")
        return train, [p for p in pairs if in_test_split(p.prompt, 0.1)], skipped
