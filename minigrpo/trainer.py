"""A GRPO training run on a language model: config, run folder, metrics, checkpoints, resume.

The step itself is ``train.grpo_step`` — the very function that trains the bandit. This module
only feeds it prompts from a task, scores completions with the task's reward, and keeps records:

    for t in steps:
        prompts  = task.sample(P) → left-padded ids (P, L)
        step     = grpo_step(policy, anchor, prompts, reward, recipe, β, optimizer, G, …)
        metrics  → metrics.jsonl;  samples → samples.jsonl;  every N steps: held-out accuracy, checkpoint

The run keeps no global state: its random numbers come from two generators it owns (problems and
sampling), saved in every checkpoint, so a resumed CPU run continues exactly as an uninterrupted
one. Files are written only through ``RunFolder`` (one writer), which is what a data-parallel
version would restrict to rank 0.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

import torch

from .advantages import BASELINES
from .kl import AdaptiveBeta, FixedBeta, parse_kl
from .loss import PLAIN, clipped
from .optim import adamw
from .recipe import Recipe, seed_grpo
from .runfolder import RunFolder
from .validate import checked_task, is_int, is_real, refuse

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
        from .checks import TASK_COMPONENTS
        from .compose import COMBINE

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


@dataclass
class TrainResult:
    run_dir: Path
    metrics: list            # every metrics.jsonl record of this run
    anchor_accuracy: float   # held-out greedy accuracy at step 0
    final_accuracy: float    # … after the last step
    policy: object
    tokenizer: object
    wall_seconds: float


def new_run_dir(parent: Path, prefix: str) -> Path:
    """A fresh folder ``<parent>/<prefix>-<date>-<time>[-n]``, created here so two runs started in the
    same second never share one."""
    parent.mkdir(parents=True, exist_ok=True)
    stem = time.strftime(f"{prefix}-%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        path = parent / (stem if n == 1 else f"{stem}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a new run folder under {str(parent)!r}")


def resolve_model(cfg: TrainConfig, progress: bool = True) -> str:
    """The checkpoint behind ``cfg.model``: for "tiny", the task's anchor under assets/anchors (built by
    SFT into ``<out>/anchors`` on first use if it is not shipped)."""
    if cfg.model != "tiny":
        return cfg.model
    from .sft import SFTConfig, anchor_dir, build_anchor

    shipped = anchor_dir(cfg.task, cfg.task_args)
    if (shipped / "config.json").exists():
        return str(shipped)
    local = anchor_dir(cfg.task, cfg.task_args, root=Path(cfg.out) / "anchors")
    if not (local / "config.json").exists():
        build_anchor(SFTConfig(task=cfg.task, task_args=cfg.task_args), local, device=cfg.device, progress=progress)
    return str(local)


def build_policy(model_src: str, cfg: TrainConfig, device: torch.device, lora_from: str | None = None):
    """(policy, anchor, tokenizer) for a run. ``lora_from``: a checkpoint folder holding a trained adapter."""
    from .lm import CausalLMPolicy
    from .models import add_lora, load_causal_lm

    model, tokenizer = load_causal_lm(model_src, device=device)
    autocast = torch.bfloat16 if cfg.precision == "bf16" else None
    if cfg.lora_r:
        if lora_from is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, lora_from, is_trainable=True)
        else:
            model = add_lora(model, cfg.lora_r)
    policy = CausalLMPolicy(model, tokenizer.pad_token_id, autocast_dtype=autocast,
                            gradient_checkpointing=cfg.gradient_checkpointing)
    return policy, tokenizer


def build_reward(cfg: TrainConfig, tokenizer, device=None):
    """The run's reward from its config: the task's checks weighted by ``reward_weights``, plus the
    ``reward_model`` component when one is named."""
    from .checks import task_reward

    weights = dict(cfg.reward_weights)
    rm_weight = weights.pop("reward_model", None)
    weights.setdefault("correct", 0.0)       # exactness is always logged (reward/correct), trained only if weighted
    reward = task_reward(cfg.task_obj, tokenizer, weights, combine=cfg.reward_combine, forbidden=cfg.forbidden)
    if rm_weight is not None:
        from .reward_model import RewardModelReward

        reward.components["reward_model"] = RewardModelReward.load(cfg.reward_model, device=device)
        reward.weights["reward_model"] = float(rm_weight)
    return reward


def train_lm(cfg: TrainConfig, *, resume: str | Path | None = None, run_dir: str | Path | None = None,
             on_step: Callable[[dict], None] | None = None, progress: bool = True,
             rewards: dict | Callable | None = None) -> TrainResult:
    """Run GRPO on ``cfg.task``; or, with ``resume`` (a run folder), continue it from its last checkpoint
    up to ``cfg.steps`` (the saved config is used, except ``steps``, which may be raised).

    ``rewards`` replaces the configured reward: a mapping name → component or (component, weight) (see
    ``compose.RewardSet``; a plain ``f(prompt, completion)`` function is a component), or any
    ``reward_fn(prompts, completions)``. It is code, so it is not saved: pass it again to resume."""
    from tqdm.auto import tqdm

    from .evaluate import accuracy
    from .lm import CausalLMPolicy
    from .models import load_causal_lm, pick_device
    from .tokens import decode_completions, decode_prompts, encode_prompts
    from .train import grpo_step

    t0 = time.perf_counter()
    if resume is not None:
        folder = RunFolder(resume)
        saved = folder.read_config()
        saved["steps"] = max(saved["steps"], cfg.steps) if cfg is not None else saved["steps"]
        cfg = TrainConfig.from_dict(saved)
        ckpt = folder.latest_checkpoint()
        if ckpt is None:
            raise FileNotFoundError(f"run folder {str(folder.path)!r} has no checkpoint to resume from")
    else:
        pick_device(cfg.device)                  # a device this machine lacks fails before a run folder is made
        run_dir = Path(run_dir) if run_dir is not None else new_run_dir(Path(cfg.out), f"train-{cfg.task}")
        if (run_dir / "checkpoints" / "latest").exists():
            raise FileExistsError(f"run folder {str(run_dir)!r} already holds a run; resume it with "
                                  "--resume, or choose another folder")
        folder = RunFolder(run_dir).create(cfg.to_dict())
        ckpt = None

    device = pick_device(cfg.device)
    task = cfg.task_obj
    anchor_src = resolve_model(cfg, progress)
    T = cfg.new_tokens()
    if ckpt is None or cfg.lora_r:
        policy, tokenizer = build_policy(anchor_src, cfg, device, lora_from=str(ckpt) if ckpt else None)
    else:
        policy, tokenizer = build_policy(str(ckpt), cfg, device)
    if cfg.lora_r:
        anchor = policy.anchor()               # the same weights, adapter off
    else:
        anchor_model, _ = load_causal_lm(anchor_src, device=device)
        anchor = CausalLMPolicy(anchor_model, tokenizer.pad_token_id, autocast_dtype=policy.autocast_dtype).freeze()
    if rewards is None:
        reward = build_reward(cfg, tokenizer, device)
    elif isinstance(rewards, dict):
        from .compose import RewardSet

        reward = RewardSet(tokenizer, rewards, combine=cfg.reward_combine)
    else:
        reward = rewards
    recipe, beta_ctl = cfg.recipe(), cfg.beta_controller()
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = adamw(params, lr=cfg.lr)
    warm = cfg.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: min(1.0, (t + 1) / (warm + 1)))
    data_gen = torch.Generator().manual_seed(cfg.seed)
    sample_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    test = task.test_set(cfg.eval_size)

    start = 0
    if ckpt is not None:
        state = RunFolder.load_state(ckpt)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        data_gen.set_state(state["data_rng"])
        sample_gen.set_state(state["sample_rng"].to(sample_gen.get_state().device))
        beta_ctl.value = state["beta"]
        start = RunFolder.step_of(ckpt)
        folder.truncate("metrics.jsonl", start)
        folder.truncate("samples.jsonl", start)
    records = folder.read("metrics.jsonl")

    def evaluate() -> float:
        return accuracy(policy, tokenizer, task, test, T)

    def checkpoint(step: int) -> None:
        state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "data_rng": data_gen.get_state(), "sample_rng": sample_gen.get_state().cpu(),
                 "beta": float(beta_ctl.value), "step": step}
        folder.save_checkpoint(step, policy.model, tokenizer, state, keep=cfg.keep_checkpoints)

    def emit(record: dict) -> None:
        folder.append("metrics.jsonl", record)
        records.append(record)
        if on_step is not None:
            on_step(record)

    if start == 0:
        emit({"step": 0, "test_accuracy": evaluate()})
    bar = tqdm(total=cfg.steps, initial=start, desc=f"GRPO {cfg.task}", disable=not progress)
    for t in range(start + 1, cfg.steps + 1):
        tic = time.perf_counter()
        problems = task.sample(cfg.prompts_per_step, "train", data_gen)
        prompts = encode_prompts(tokenizer, [p.prompt for p in problems]).to(device)        # (P, L)
        step = grpo_step(policy, anchor, prompts, reward, recipe, beta_ctl.value, optimizer, cfg.group_size,
                         generator=sample_gen, updates=cfg.updates, max_grad_norm=cfg.max_grad_norm,
                         max_new_tokens=T, eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id,
                         temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)
        scheduler.step()
        beta_ctl.update(step)
        record = {"step": t, **step.metrics(), "lr": scheduler.get_last_lr()[0],
                  "step_seconds": time.perf_counter() - tic}
        if t % cfg.eval_every == 0 or t == cfg.steps:
            record["test_accuracy"] = evaluate()
        emit(record)
        if t % cfg.sample_every == 0 or t == cfg.steps:
            texts = decode_completions(tokenizer, step.rollout.completions[:2, :4], step.rollout.mask[:2, :4])
            for p, prompt in enumerate(decode_prompts(tokenizer, prompts[:2])):
                folder.append("samples.jsonl", {"step": t, "prompt": prompt, "answer": problems[p].answer,
                                                "completions": texts[p], "rewards": step.r[p, :4].tolist()})
        if (cfg.save_every and t % cfg.save_every == 0) or t == cfg.steps:
            checkpoint(t)
        bar.update(1)
        bar.set_postfix(reward=f"{record['reward']:.2f}", kl=f"{record['kl']:.3f}",
                        **({"acc": f"{record['test_accuracy']:.2f}"} if "test_accuracy" in record else {}))
    bar.close()
    accs = [r["test_accuracy"] for r in records if "test_accuracy" in r]
    return TrainResult(folder.path, records, accs[0] if accs else float("nan"), accs[-1] if accs else float("nan"),
                       policy, tokenizer, time.perf_counter() - t0)
