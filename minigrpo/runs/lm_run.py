"""A GRPO training run on a language model: config, run folder, metrics, checkpoints, resume.

The step itself is ``core/step.grpo_step`` — the very function that trains the bandit. This module
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

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from minigrpo.core.optimizer import adamw
from minigrpo.runs.config import TrainConfig
from minigrpo.runs.folder import RunFolder


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
    from minigrpo.lm.sft import SFTConfig, anchor_dir, build_anchor

    shipped = anchor_dir(cfg.task, cfg.task_args)
    if (shipped / "config.json").exists():
        return str(shipped)
    local = anchor_dir(cfg.task, cfg.task_args, root=Path(cfg.out) / "anchors")
    if not (local / "config.json").exists():
        build_anchor(SFTConfig(task=cfg.task, task_args=cfg.task_args), local, device=cfg.device, progress=progress)
    return str(local)


def build_policy(model_src: str, cfg: TrainConfig, device: torch.device, lora_from: str | None = None):
    """(policy, anchor, tokenizer) for a run. ``lora_from``: a checkpoint folder holding a trained adapter."""
    from minigrpo.lm.policy import CausalLMPolicy
    from minigrpo.lm.models import add_lora, load_causal_lm

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
    from minigrpo.rewards.checks import task_reward

    weights = dict(cfg.reward_weights)
    rm_weight = weights.pop("reward_model", None)
    weights.setdefault("correct", 0.0)       # exactness is always logged (reward/correct), trained only if weighted
    reward = task_reward(cfg.task_obj, tokenizer, weights, combine=cfg.reward_combine, forbidden=cfg.forbidden)
    if rm_weight is not None:
        from minigrpo.rewards.reward_model import RewardModelReward

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

    from minigrpo.lm.evaluate import accuracy
    from minigrpo.lm.policy import CausalLMPolicy
    from minigrpo.lm.models import load_causal_lm, pick_device
    from minigrpo.lm.tokens import decode_completions, decode_prompts, encode_prompts
    from minigrpo.core.step import grpo_step

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
        from minigrpo.rewards.compose import RewardSet

        reward = RewardSet(tokenizer, rewards, combine=cfg.reward_combine)
    else:
        reward = rewards
    recipe, beta_ctl = cfg.build_recipe(), cfg.beta_controller()
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
