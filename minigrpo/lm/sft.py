"""Supervised fine-tuning (SFT): teach a model the format of its answers, giving the GRPO anchor.

The loss is the negative log-likelihood of the answer and its EOS given the prompt,
−(1/|y|) Σ_t log π(y_t | x, y_<t), computed with the same ``CausalLMPolicy.log_probs`` that GRPO
uses (a batch of targets is a group of one completion per prompt, P × 1 × T).

Two sources of (prompt, answer) pairs, one loop (``sft_steps``):

* a built-in task (``task``): a fresh tiny GPT-2 with a character tokenizer. The tiny addition anchor
  imitates a careless teacher: 60% of its SFT answers forget the carries (``careless``), as an SFT set
  of imperfect human demonstrations would. It writes well-formed answers, knows how to carry, but
  often does not — the imperfect starting point that GRPO with an exact-answer reward improves on,
  quickly and on held-out prompts.
* your data (``data``): rows of a prompt and a completion (``sft_data.SFTData``), in shuffled epochs
  (``sources.DataPrompts``), into a fresh tiny GPT-2 sized to the data or any causal LM you name
  (``model``, all its weights trained) — "SFT, then GRPO".

``build_anchor`` trains one and saves it with ``save_pretrained`` (model, tokenizer, and ``sft.json``
with its settings, losses, held-out accuracy and the command that rebuilds it). Like a GRPO run, it stops
on a non-finite loss and saves nothing non-finite; its folder is checked before training and written
atomically, never into the package's shipped assets (``lm/saving.py``).
"""
from __future__ import annotations

import json
import math
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from minigrpo.assets import WRITE_ASSETS, asset_path, in_assets
from minigrpo.core.masks import masked_mean
from minigrpo.lm.models import TinyGPT2, build_tiny_gpt2, pick_device, quiet_transformers
from minigrpo.lm.saving import check_out, save_folder
from minigrpo.lm.tasks import Problem, Task, make_task
from minigrpo.lm.tokens import char_tokenizer, encode_prompts
from minigrpo.core.validate import SEED, check_fields, integer, is_int, number, optional, refuse, setting, text
from minigrpo.lm.tasks import TaskWithCarelessAnswers, checked_task


def _fail(name, value, allowed):
    refuse("SFTConfig", name, value, allowed)


TINY_LR, PRETRAINED_LR = 3e-3, 5e-5     # SFTConfig.lr's defaults: a fresh tiny model, a pretrained one


@dataclass
class SFTConfig:
    """Settings of one SFT run, on a task or on your data (all defaulted; validated on construction)."""

    # "tiny": a fresh tiny GPT-2 (shape below) with a character tokenizer; or a save_pretrained folder or
    # hub id of any causal LM, all of whose weights are trained.
    model: str = setting("tiny", text("must be 'tiny', a save_pretrained folder or a hub id such as 'gpt2'"))
    # A dataset of prompts and completions (.jsonl, .csv, .parquet, a save_to_disk folder or a hub name) with a
    # 'prompt' column (text or chat messages) and a completion column; None: the built-in task.
    data: str | None = setting(None, optional(text("must be a data file, a save_to_disk folder or a hub name")))
    # data: the column of each row's prompt (e.g. question for a hub dataset)
    prompt_column: str = setting("prompt", text("must name the data's prompt column, e.g. 'prompt' or 'question'"))
    # data: a hub dataset's configuration, e.g. main for openai/gsm8k; None: its default
    data_config: str | None = setting(None, optional(text("must name a hub dataset's configuration, e.g. 'main'")))
    # data: the column of each row's completion (text, or for chat data the assistant's messages)
    completion_column: str = setting("completion", text("must name the data's completion column"))
    # data: the share of rows held out for the test loss and accuracy, chosen by a hash of the prompt (fixed)
    test_fraction: float = setting(0.1, number(ge=0, lt=1))
    task: str = "addition"                              # a name in tasks.TASKS (without data)
    task_args: dict = field(default_factory=dict)       # e.g. {"digits": 3}
    steps: int = setting(1500, integer(1))              # optimizer steps
    batch_size: int = setting(64, integer(1))           # problems per step
    # Peak AdamW learning rate (cosine decay, 5% warm-up); None: 3e-3 for a fresh tiny model, 5e-5 for a pretrained
    # one (a tiny model's rate would wreck its weights).
    lr: float | None = setting(None, optional(number(gt=0)))
    seed: int = setting(0, SEED)                        # model init and problem draws (data: the row order)
    # Fraction of answers written by a careless teacher (``task.careless_answer``: addition without carries); None:
    # the task's ``sft_careless`` (0.6 for addition). Tasks only: data brings its own completions.
    careless: float | None = setting(None, optional(number(ge=0, le=1)))
    # The tiny model's size; with data, n_positions grows to the longest prompt + 2 × the longest completion + 1.
    shape: TinyGPT2 = field(default_factory=TinyGPT2)

    def __post_init__(self):
        task = checked_task("SFTConfig", self.task, self.task_args)
        check_fields(self)
        if self.lr is None:
            self.lr = TINY_LR if self.is_tiny else PRETRAINED_LR
        if self.data is None and self.data_config is not None:
            _fail("data_config", self.data_config, "needs data (a hub dataset's configuration goes with its name)")
        if self.data is not None:
            if self.careless is not None:
                _fail("careless", self.careless, "careless applies to the built-in tasks only (a careless teacher's "
                                                 "answers); with data the completions are the data's own")
            if self.task != "addition" or self.task_args:
                name, value = ("task_args", self.task_args) if self.task_args else ("task", self.task)
                _fail(name, value, f"{name} applies without data only; with data the prompts and completions come "
                                   "from the data")
        elif self.careless is None:
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
        if self.model != "tiny" and self.shape != TinyGPT2():
            _fail("shape", asdict(self.shape), f"shape sizes only a fresh tiny model (model='tiny'); model "
                                               f"{self.model!r} keeps its own shape")
        need = task.max_prompt_len + task.max_answer_len + 1
        if self.model == "tiny" and self.data is None and self.shape.n_positions < need:
            _fail("shape.n_positions", self.shape.n_positions,
                  f"must be ≥ {need}, the longest prompt + answer + EOS of task {self.task!r}")

    @property
    def is_tiny(self) -> bool:
        return self.model == "tiny"


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


def diverged(what: str, value: float, step: int, steps: int, lr: float) -> str:
    """The one-line error of an SFT or reward-model run that went non-finite at ``step`` (counted from 1)."""
    return (f"training diverged: {what} is {value} at step {step} of {steps}, so the weights were not updated; "
            f"the learning rate lr={lr} (--lr) is the likely cause: lower it")


def sft_steps(policy, tokenizer, batch: Callable[[int], list[Problem]], cfg: SFTConfig, on_step=None) -> list[float]:
    """Train ``policy`` (a ``CausalLMPolicy``) for ``cfg.steps`` steps on ``batch(t)``, the (prompt,
    answer) pairs of step t = 0, 1, …; return the loss of every step. A NaN or ±inf loss or gradient norm
    raises ``FloatingPointError`` (naming the step and ``lr``) before the optimizer touches the weights."""
    device = policy.device
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=0.0)
    warm = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: min(1.0, (t + 1) / warm) * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * t / cfg.steps)).item()))
    losses = []
    for t in range(cfg.steps):
        prompts, targets, mask = sft_batch(tokenizer, batch(t), device)
        logp = policy.log_probs(prompts, targets)                                     # (P, 1, T)
        loss = -masked_mean(logp, mask)
        if not torch.isfinite(loss):
            raise FloatingPointError(diverged("the SFT loss", loss.item(), t + 1, cfg.steps, cfg.lr))
        opt.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        if not torch.isfinite(norm):         # clipping a NaN gradient leaves NaN: the step would write it in
            raise FloatingPointError(diverged("the gradient norm", norm.item(), t + 1, cfg.steps, cfg.lr))
        opt.step()
        sched.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(t, losses[-1])
    return losses


def sft(policy, tokenizer, task: Task, cfg: SFTConfig, on_step=None) -> list[float]:
    """Train ``policy`` (a ``CausalLMPolicy``) on the task's answers; return the loss of every step."""
    gen = torch.Generator().manual_seed(cfg.seed)

    def batch(t):
        problems = task.sample(cfg.batch_size, "train", gen)
        if cfg.careless:
            slips = (torch.rand(len(problems), generator=gen) < cfg.careless).tolist()
            problems = [Problem(p.prompt, task.careless_answer(p.prompt)) if s else p for p, s in zip(problems, slips)]
        return problems

    return sft_steps(policy, tokenizer, batch, cfg, on_step)


def sft_on_data(policy, tokenizer, data, cfg: SFTConfig, on_step=None) -> list[float]:
    """Train ``policy`` on ``data`` (an ``sft_data.SFTData`` whose ``pairs`` are made): each step the next
    ``batch_size`` training rows of a shuffled pass (``sources.DataPrompts``, seeded by ``cfg.seed``)."""
    from minigrpo.lm.sources import DataPrompts

    rows = DataPrompts(data.train, data.test, cfg.seed)
    return sft_steps(policy, tokenizer, lambda t: data.problems(rows.train_rows(t + 1, cfg.batch_size)), cfg, on_step)


@torch.no_grad()
def held_out_loss(policy, tokenizer, problems: list[Problem], batch_size: int = 64) -> float | None:
    """The SFT loss on ``problems`` as one token mean (every answer token + EOS of every problem)."""
    total, count = 0.0, 0
    for i in range(0, len(problems), batch_size):
        prompts, targets, mask = sft_batch(tokenizer, problems[i:i + batch_size], policy.device)
        logp = policy.log_probs(prompts, targets)                                     # (P, 1, T)
        total -= (logp * mask).sum().item()
        count += int(mask.sum())
    return total / count if count else None


def sft_command(cfg: SFTConfig, out) -> str:
    """The `minigrpo sft` command line that rebuilds this anchor (with ``MINIGRPO_WRITE_ASSETS=1`` before it
    when ``out`` is a shipped asset, which is otherwise never written)."""
    default = asdict(TinyGPT2())
    shape = "".join(f" --shape.{k.replace('_', '-')} {v}" for k, v in asdict(cfg.shape).items() if v != default[k])
    model = "" if cfg.is_tiny else f" --model {shlex.quote(cfg.model)}"
    env = f"{WRITE_ASSETS}=1 " if in_assets(out) else ""
    if cfg.data is not None:
        return (f"{env}minigrpo sft{model or ' --model tiny'} --data {shlex.quote(cfg.data)}"
                f"{'' if cfg.prompt_column == 'prompt' else ' --prompt-column ' + shlex.quote(cfg.prompt_column)}"
                f"{'' if cfg.data_config is None else ' --data-config ' + shlex.quote(cfg.data_config)}"
                f" --completion-column {shlex.quote(cfg.completion_column)} --test-fraction {cfg.test_fraction} "
                f"--steps {cfg.steps} --batch-size {cfg.batch_size} --lr {cfg.lr} --seed {cfg.seed}{shape} "
                f"--out {shlex.quote(str(out))}")
    task_args = ",".join(f"{k}={v}" for k, v in cfg.task_args.items())
    return (f"{env}minigrpo sft{model} --task {cfg.task}{' --task-args ' + task_args if task_args else ''} "
            f"--steps {cfg.steps} --batch-size {cfg.batch_size} --lr {cfg.lr} --careless {cfg.careless} "
            f"--seed {cfg.seed}{shape} --out {out}")


def anchor_dir(task: str, task_args: dict | None = None, root: Path | None = None) -> Path:
    """Where the tiny anchor for a task lives: ``<root>/<task>[-k=v…]``, with ``root`` the shipped
    anchors (package data, ``minigrpo/assets/anchors``) by default."""
    suffix = "".join(f"-{k}{v}" for k, v in sorted((task_args or {}).items()))
    return (Path(root) if root is not None else asset_path("anchors")) / f"{task}{suffix}"


def build_anchor(cfg: SFTConfig, out: str | Path | Callable[[str], Path], *, device: str = "auto",
                 eval_size: int = 200, progress: bool = True,
                 on_step: Callable[[int, float], None] | None = None) -> Path:
    """SFT ``cfg.model`` on ``cfg.task`` or ``cfg.data`` and save it (``save_pretrained``) to ``out``: a
    folder, or a function of the run's name (the task, or the data file's stem) that makes one, called
    once the data and the model have loaded and passed their checks, so a bad input leaves no empty
    folder. Held-out accuracy and loss are measured on at most ``eval_size`` held-out prompts. ``progress``
    shows a tqdm bar; ``on_step(t, loss)`` hears every step, t = 0, 1, … (a notebook's ``CellProgress``).

    ``out`` is checked before anything loads (``saving.check_out``: a folder that can be written, not inside
    the package's shipped assets). The save is atomic (``saving.save_folder``): an earlier anchor at ``out``
    is replaced whole or kept. A run that goes non-finite — a NaN or ±inf loss or gradient norm during
    training, or weights or a held-out loss that are not finite after it — raises ``FloatingPointError``
    and saves nothing."""
    from tqdm.auto import tqdm

    from minigrpo.lm.evaluate import exact_match
    from minigrpo.lm.models import load_causal_lm
    from minigrpo.lm.policy import CausalLMPolicy, context_length

    t0 = time.perf_counter()
    if not callable(out):
        check_out(out)                      # a bad --out fails now, not after training
    dev = pick_device(device)
    info = {}
    if cfg.data is None:
        task = make_task(cfg.task, **cfg.task_args)
        if cfg.is_tiny:
            tokenizer = char_tokenizer(task.alphabet)
            model = build_tiny_gpt2(tokenizer, cfg.shape, seed=cfg.seed).to(dev)
        else:
            model, tokenizer = load_causal_lm(cfg.model, device=dev)
        name, test, max_new_tokens = cfg.task, task.test_set(eval_size), task.max_answer_len + 1
        train = lambda policy, on_step: sft(policy, tokenizer, task, cfg, on_step)
    else:
        from minigrpo.lm.sft_data import SFTData, tiny_shape, tiny_tokenizer

        data = SFTData(cfg.data, cfg.completion_column, cfg.test_fraction, cfg.prompt_column, cfg.data_config)
        if cfg.is_tiny:
            tokenizer = tiny_tokenizer(data)
            shape = tiny_shape(cfg.shape, data, tokenizer)
            model = build_tiny_gpt2(tokenizer, shape, seed=cfg.seed).to(dev)
            info["model_shape"] = asdict(shape)
        else:
            model, tokenizer = load_causal_lm(cfg.model, device=dev)
        pairs = data.pairs(tokenizer, context_length(model))
        test = [pairs[r.index] for r in data.test.rows[:eval_size]]
        name, context = data.name, context_length(model) or 10 ** 9
        longest = lambda texts: max((len(tokenizer.encode(t, add_special_tokens=False)) for t in texts), default=0)
        # room for the longest held-out completion and its EOS, within the model's context
        max_new_tokens = min(longest([p.answer for p in test]) + 1, context - longest([p.prompt for p in test]))
        info |= {"train_rows": len(data.train), "test_rows": len(test)}
        train = lambda policy, on_step: sft_on_data(policy, tokenizer, data, cfg, on_step)
    made = callable(out)                    # a folder made for this run: removed again if nothing is saved in it
    out = Path(out(name) if made else out)
    policy = CausalLMPolicy(model, tokenizer.pad_token_id)
    bar = tqdm(total=cfg.steps, desc=f"SFT {name}", disable=not progress)

    def step_done(t: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")
        if on_step is not None:
            on_step(t, loss)
    try:
        check_out(out)
        losses = train(policy, step_done)
        bar.close()
        acc = exact_match(policy, tokenizer, test, max_new_tokens)
        test_loss = held_out_loss(policy, tokenizer, test)
        if test_loss is not None and not math.isfinite(test_loss):     # e.g. weights finite but huge (--lr 1e30)
            raise FloatingPointError(f"training diverged: the held-out loss after the last step ({cfg.steps}) is "
                                     f"{test_loss}; the learning rate lr={cfg.lr} (--lr) is the likely cause: lower it")
        summary = {"config": asdict(cfg), **info, "test_accuracy": acc, "test_loss": test_loss,
                   "first_loss": losses[0], "final_loss": losses[-1], "wall_seconds": time.perf_counter() - t0,
                   "command": sft_command(cfg, out)}

        def write(folder: Path) -> None:
            with quiet_transformers():
                model.save_pretrained(folder)
                tokenizer.save_pretrained(folder)
            (folder / "sft.json").write_text(json.dumps(summary, indent=2))
        return save_folder(out, write, model.state_dict().items())
    except BaseException as e:
        bar.close()
        if made and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        if isinstance(e, FloatingPointError):
            raise FloatingPointError(f"{e}; nothing was saved to {str(out)!r}") from e
        raise
