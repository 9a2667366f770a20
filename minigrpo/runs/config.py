"""``TrainConfig``: every setting of a GRPO run on a language model, declared once.

Each field carries its default and its meaning; the command line (``minigrpo train``) and config
files (YAML/JSON) are derived from these fields, and ``__post_init__`` validates them.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch

from minigrpo.core.advantages import BASELINES
from minigrpo.core.kl import AdaptiveBeta, FixedBeta, parse_kl
from minigrpo.core.loss import PLAIN, clipped
from minigrpo.core.recipe import Recipe, seed_grpo
from minigrpo.core.validate import is_int, is_real, refuse
from minigrpo.lm.tasks import checked_task

PRECISIONS = ("fp32", "bf16")


def _fail(name, value, allowed):
    refuse("TrainConfig", name, value, allowed)


def _is_torch_device(name: str) -> bool:
    try:
        torch.device(name)
        return True
    except (RuntimeError, ValueError):
        return False


@dataclass
class TrainConfig:
    """Every setting of an LM GRPO run (defaulted, validated on construction; also a YAML/JSON file)."""

    task: str = "addition"                 # a name in tasks.TASKS
    task_args: dict = field(default_factory=dict)   # e.g. {"digits": 3}
    model: str = "tiny"                    # "tiny": the task's shipped SFT anchor; or a save_pretrained folder / hub id
    beta: float = 0.02                     # KL coefficient β (initial β when kl_target is set)
    kl_target: float | None = None         # adapt β toward this KL per completion (Ziegler et al.); None: fixed β
    kl_horizon: float = 10_000.0           # the adaptive β's horizon in samples: smaller reacts faster
    kl: str = "reward:k1"                  # KL placement: reward:k1|k2|k3, loss:k1|k2|k3, none
    baseline: str = "group_mean"           # one of advantages.BASELINES
    group_size: int = 8                    # G completions per prompt
    prompts_per_step: int = 16             # P prompts per step
    lr: float = 2e-4                       # AdamW learning rate (after a short warm-up)
    warmup_steps: int = 10                 # linear learning-rate warm-up
    steps: int = 200                       # GRPO steps
    updates: int = 1                       # optimizer updates per rollout (> 1 is where clip_eps matters)
    clip_eps: float | None = None          # PPO clip ε; None: the plain policy gradient
    max_grad_norm: float | None = 1.0      # clip ‖∇θ‖; None: no clipping
    max_new_tokens: int | None = None      # None: the task's longest answer + EOS
    temperature: float = 1.0               # sampling temperature
    top_k: int | None = None               # sample from the k most likely tokens; None: all
    top_p: float | None = None             # nucleus sampling; None: off
    reward_weights: dict = field(default_factory=lambda: {"correct": 1.0})   # reward components → weights:
                                           # correct, format, length, safety, steps (checks.py), reward_model
    reward_combine: str = "sum"            # "sum": Σ w·c; "normalised": each component z-scored in its group first
    forbidden: list = field(default_factory=list)   # strings the "safety" component penalises
    reward_model: str | None = None        # a reward-model folder (reward_model.py / HF sequence classifier):
                                           # the "reward_model" component
    seed: int = 0                          # problem draws and sampling
    eval_every: int = 25                   # held-out accuracy every N steps (and at steps 0 and last)
    eval_size: int = 200                   # held-out problems
    sample_every: int = 25                 # log sample completions every N steps
    save_every: int = 50                   # checkpoint every N steps (and at the last step); 0: only at the end
    keep_checkpoints: int = 2              # newest checkpoints kept
    out: str = "runs"                      # parent folder of run folders
    device: str = "auto"                   # auto (cuda, then mps, then cpu), or a torch device
    precision: str = "fp32"                # fp32, or bf16 autocast
    gradient_checkpointing: bool = False   # recompute activations in backward (saves memory)
    lora_r: int = 0                        # > 0: train a LoRA adapter of this rank; the anchor is the adapter off

    def __post_init__(self):
        self.task_obj = checked_task("TrainConfig", self.task, self.task_args)
        if not (isinstance(self.model, str) and self.model):
            _fail("model", self.model, "must be 'tiny', a save_pretrained folder or a hub id such as 'gpt2'")
        for name in ("group_size", "prompts_per_step", "steps", "updates", "eval_every", "eval_size",
                     "sample_every", "keep_checkpoints"):
            v = getattr(self, name)
            if not (is_int(v) and v >= 1):
                _fail(name, v, "must be an integer ≥ 1")
        for name in ("warmup_steps", "save_every", "lora_r"):
            v = getattr(self, name)
            if not (is_int(v) and v >= 0):
                _fail(name, v, "must be an integer ≥ 0")
        if not (is_int(self.seed) and 0 <= self.seed < 2 ** 63):
            _fail("seed", self.seed, "must be an integer from 0 to 2**63 − 1")
        if not (is_real(self.beta) and self.beta >= 0):
            _fail("beta", self.beta, "must be a finite number ≥ 0")
        if self.kl_target is not None and not (is_real(self.kl_target) and self.kl_target > 0 and self.beta > 0):
            _fail("kl_target", self.kl_target, "must be a finite number > 0 (with beta > 0), or None for a fixed β")
        if not (is_real(self.kl_horizon) and self.kl_horizon > 0):
            _fail("kl_horizon", self.kl_horizon, "must be a finite number > 0 (samples)")
        if not (is_real(self.lr) and self.lr > 0):
            _fail("lr", self.lr, "must be a finite number > 0")
        parse_kl(self.kl)
        if not (isinstance(self.baseline, str) and self.baseline in BASELINES):
            _fail("baseline", self.baseline, f"choose one of {sorted(BASELINES)}")
        if BASELINES[self.baseline].min_group > self.group_size:
            _fail("group_size", self.group_size, f"baseline {self.baseline!r} needs a group of at least "
                                                 f"{BASELINES[self.baseline].min_group}")
        if self.clip_eps is not None and not (is_real(self.clip_eps) and 0 < self.clip_eps < 1):
            _fail("clip_eps", self.clip_eps, "must be in (0, 1), or None")
        if self.max_grad_norm is not None and not (is_real(self.max_grad_norm) and self.max_grad_norm > 0):
            _fail("max_grad_norm", self.max_grad_norm, "must be a finite number > 0, or None")
        if self.max_new_tokens is not None and not (is_int(self.max_new_tokens) and self.max_new_tokens >= 1):
            _fail("max_new_tokens", self.max_new_tokens, "must be an integer ≥ 1, or None")
        if not (is_real(self.temperature) and self.temperature > 0):
            _fail("temperature", self.temperature, "must be a finite number > 0")
        if self.top_k is not None and not (is_int(self.top_k) and self.top_k >= 1):
            _fail("top_k", self.top_k, "must be an integer ≥ 1, or None")
        if self.top_p is not None and not (is_real(self.top_p) and 0 < self.top_p <= 1):
            _fail("top_p", self.top_p, "must be in (0, 1], or None")
        if isinstance(self.out, os.PathLike):
            self.out = os.fspath(self.out)
        if not (isinstance(self.out, str) and self.out):
            _fail("out", self.out, "must be a folder path (the parent of run folders), e.g. 'runs'")
        if not (isinstance(self.device, str) and (self.device == "auto" or _is_torch_device(self.device))):
            _fail("device", self.device, "must be 'auto' or a torch device such as 'cpu', 'cuda', 'cuda:1', 'mps'")
        if self.precision not in PRECISIONS:
            _fail("precision", self.precision, f"choose one of {PRECISIONS}")
        if not isinstance(self.gradient_checkpointing, bool):
            _fail("gradient_checkpointing", self.gradient_checkpointing, "must be true or false")
        if self.reward_model is not None and not (isinstance(self.reward_model, str) and self.reward_model):
            _fail("reward_model", self.reward_model, "must be a reward-model folder, or None")
        from minigrpo.rewards.checks import TASK_COMPONENTS
        from minigrpo.rewards.compose import COMBINE

        allowed = TASK_COMPONENTS + ("reward_model",)
        if not isinstance(self.reward_weights, dict) or not self.reward_weights:
            _fail("reward_weights", self.reward_weights, "must be a non-empty mapping of component name → weight")
        for k, w in self.reward_weights.items():
            if k not in allowed:
                _fail("reward_weights", self.reward_weights, f"component {k!r} is unknown; choose from {list(allowed)}")
            if not is_real(w):
                _fail("reward_weights", self.reward_weights, f"the weight of {k!r} must be a finite number")
        if self.reward_combine not in COMBINE:
            _fail("reward_combine", self.reward_combine, f"choose one of {sorted(COMBINE)}")
        if not (isinstance(self.forbidden, (list, tuple)) and all(isinstance(w, str) and w for w in self.forbidden)):
            _fail("forbidden", self.forbidden, "must be a list of non-empty strings")
        if "safety" in self.reward_weights and not self.forbidden:
            _fail("forbidden", self.forbidden, "the 'safety' reward component needs at least one forbidden string")
        if ("reward_model" in self.reward_weights) != (self.reward_model is not None):
            _fail("reward_model", self.reward_model, "give a reward-model folder exactly when reward_weights "
                                                     "names 'reward_model'")
        if "steps" in self.reward_weights and not hasattr(self.task_obj, "steps"):
            _fail("reward_weights", self.reward_weights, f"'steps' needs a multi-step task; {self.task!r} has none")

    # --- construction from files and flags ----------------------------------------------------------
    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig setting(s) {unknown}; allowed: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        """Read a YAML (.yaml/.yml) or JSON file of TrainConfig fields."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"config file {str(path)!r} does not exist")
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"config file {str(path)!r} must hold a mapping of settings, got {type(data).__name__}")
        return cls.from_dict(data)

    # --- the pieces it composes --------------------------------------------------------------------
    def recipe(self) -> Recipe:
        surrogate = PLAIN if self.clip_eps is None else clipped(self.clip_eps)
        return replace(seed_grpo(), name="lm", kl=parse_kl(self.kl), baseline=BASELINES[self.baseline],
                       surrogate=surrogate)

    def beta_controller(self):
        return FixedBeta(float(self.beta)) if self.kl_target is None else \
            AdaptiveBeta(self.beta, self.kl_target, self.kl_horizon)

    def new_tokens(self) -> int:
        return self.max_new_tokens or self.task_obj.max_answer_len + 1
