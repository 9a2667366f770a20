"""Supervised fine-tuning (SFT): teach a fresh tiny GPT-2 the task's format, giving the GRPO anchor.

The loss is the negative log-likelihood of the answer and its EOS given the prompt,
−(1/|y|) Σ_t log π(y_t | x, y_<t), computed with the same ``CausalLMPolicy.log_probs`` that GRPO
uses (a batch of targets is a group of one completion per prompt, P × 1 × T).

The tiny addition anchor imitates a careless teacher: 60% of its SFT answers forget the carries
(``careless``), as an SFT set of imperfect human demonstrations would. It writes well-formed
answers, knows how to carry, but often does not — the imperfect starting point that GRPO with an
exact-answer reward improves on, quickly and on held-out prompts. ``build_anchor`` trains one and saves it with
``save_pretrained`` (model, tokenizer, and ``sft.json`` with its settings and held-out accuracy).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from minigrpo.assets import asset_path
from minigrpo.core.masks import masked_mean
from minigrpo.lm.models import TinyGPT2, build_tiny_gpt2, pick_device, quiet_transformers
from minigrpo.lm.tasks import Problem, Task, make_task
from minigrpo.lm.tokens import char_tokenizer, encode_prompts
from minigrpo.core.validate import SEED, check_fields, integer, is_int, number, optional, refuse, setting
from minigrpo.lm.tasks import TaskWithCarelessAnswers, checked_task


def _fail(name, value, allowed):
    refuse("SFTConfig", name, value, allowed)


@dataclass
class SFTConfig:
    """Settings of one SFT run on a task (all defaulted; validated on construction)."""

    task: str = "addition"                              # a name in tasks.TASKS
    task_args: dict = field(default_factory=dict)       # e.g. {"digits": 3}
    steps: int = setting(1500, integer(1))              # optimizer steps
    batch_size: int = setting(64, integer(1))           # problems per step
    lr: float = setting(3e-3, number(gt=0))             # peak AdamW learning rate (cosine decay, 5% warm-up)
    seed: int = setting(0, SEED)                        # model init and problem draws
    # Fraction of answers written by a careless teacher (``task.careless_answer``: addition without carries); None:
    # the task's ``sft_careless`` (0.6 for addition).
    careless: float | None = setting(None, optional(number(ge=0, le=1)))
    shape: TinyGPT2 = field(default_factory=TinyGPT2)   # the tiny model's size

    def __post_init__(self):
        task = checked_task("SFTConfig", self.task, self.task_args)
        check_fields(self)
        if self.careless is None:
            self.careless = task.sft_careless
        if self.careless and not isinstance(task, TaskWithCarelessAnswers):
            _fail("careless", self.careless, f"needs a task with careless answers; task {self.task!r} has none "
                                             "(addition has)")
        if isinstance(self.shape, dict):
            try:
                self.shape = TinyGPT2(**self.shape)
            except TypeError as e:
                _fail("shape", self.shape, f"must name TinyGPT2 fields {sorted(TinyGPT2.__dataclass_fields__)} ({e})")
        if not isinstance(self.shape, TinyGPT2):
            _fail("shape", self.shape, "must be a TinyGPT2 or a dict of its fields")
        for name in ("n_layer", "n_embd", "n_head", "n_positions"):
            v = getattr(self.shape, name)
            if not (is_int(v) and v >= 1):
                _fail(f"shape.{name}", v, "must be an integer ≥ 1")
        if self.shape.n_embd % self.shape.n_head:
            _fail("shape.n_embd", self.shape.n_embd, f"must be a multiple of shape.n_head={self.shape.n_head}")
        need = task.max_prompt_len + task.max_answer_len + 1
        if self.shape.n_positions < need:
            _fail("shape.n_positions", self.shape.n_positions,
                  f"must be ≥ {need}, the longest prompt + answer + EOS of task {self.task!r}")


def sft_batch(tokenizer, problems, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompts (P, L) left-padded; targets (P, 1, T) = answer + EOS, right-padded; mask (P, 1, T)."""
    prompts = encode_prompts(tokenizer, [p.prompt for p in problems])
    rows = [tokenizer.encode(p.answer, add_special_tokens=False) + [tokenizer.eos_token_id] for p in problems]
    T = max(len(r) for r in rows)
    targets = torch.full((len(rows), 1, T), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(rows), 1, T, dtype=torch.bool)
    for i, r in enumerate(rows):
        targets[i, 0, :len(r)] = torch.tensor(r)
        mask[i, 0, :len(r)] = True
    return prompts.to(device), targets.to(device), mask.to(device)


def sft(policy, tokenizer, task: Task, cfg: SFTConfig, on_step=None) -> list[float]:
    """Train ``policy`` (a ``CausalLMPolicy``) on the task's answers; return the loss of every step."""
    device = policy.device
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=0.0)
    warm = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: min(1.0, (t + 1) / warm) * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * t / cfg.steps)).item()))
    losses = []
    for t in range(cfg.steps):
        problems = task.sample(cfg.batch_size, "train", gen)
        if cfg.careless:
            slips = (torch.rand(len(problems), generator=gen) < cfg.careless).tolist()
            problems = [Problem(p.prompt, task.careless_answer(p.prompt)) if s else p for p, s in zip(problems, slips)]
        prompts, targets, mask = sft_batch(tokenizer, problems, device)
        logp = policy.log_probs(prompts, targets)                                     # (P, 1, T)
        loss = -masked_mean(logp, mask)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(t, losses[-1])
    return losses


def sft_command(cfg: SFTConfig, out) -> str:
    """The `minigrpo sft` command line that rebuilds this anchor."""
    task_args = ",".join(f"{k}={v}" for k, v in cfg.task_args.items())
    default = asdict(TinyGPT2())
    shape = "".join(f" --shape.{k.replace('_', '-')} {v}" for k, v in asdict(cfg.shape).items() if v != default[k])
    return (f"minigrpo sft --task {cfg.task}{' --task-args ' + task_args if task_args else ''} --steps {cfg.steps} "
            f"--batch-size {cfg.batch_size} --lr {cfg.lr} --careless {cfg.careless} --seed {cfg.seed}{shape} --out {out}")


def anchor_dir(task: str, task_args: dict | None = None, root: Path | None = None) -> Path:
    """Where the tiny anchor for a task lives: ``<root>/<task>[-k=v…]``, with ``root`` the shipped
    anchors (package data, ``minigrpo/assets/anchors``) by default."""
    suffix = "".join(f"-{k}{v}" for k, v in sorted((task_args or {}).items()))
    return (Path(root) if root is not None else asset_path("anchors")) / f"{task}{suffix}"


def build_anchor(cfg: SFTConfig, out: str | Path, *, device: str = "auto", eval_size: int = 200,
                 progress: bool = True) -> Path:
    """SFT a fresh tiny GPT-2 on ``cfg.task`` and save it (``save_pretrained``) to ``out``."""
    from tqdm.auto import tqdm

    from minigrpo.lm.evaluate import accuracy
    from minigrpo.lm.policy import CausalLMPolicy

    t0 = time.perf_counter()
    task = make_task(cfg.task, **cfg.task_args)
    tokenizer = char_tokenizer(task.alphabet)
    model = build_tiny_gpt2(tokenizer, cfg.shape, seed=cfg.seed).to(pick_device(device))
    policy = CausalLMPolicy(model, tokenizer.pad_token_id)
    bar = tqdm(total=cfg.steps, desc=f"SFT {cfg.task}", disable=not progress)
    losses = sft(policy, tokenizer, task, cfg, on_step=lambda t, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}")))
    bar.close()
    acc = accuracy(policy, tokenizer, task, task.test_set(eval_size), task.max_answer_len + 1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    cfg_json = asdict(cfg)
    (out / "sft.json").write_text(json.dumps({"config": cfg_json, "test_accuracy": acc, "final_loss": losses[-1],
                                              "wall_seconds": time.perf_counter() - t0,
                                              "command": sft_command(cfg, out)}, indent=2))
    return out
