"""A training run on a language model: config, run folder, metrics, checkpoints, resume.

The step itself is ``core/step.grpo_step`` — the very function that trains the bandit — or, for the
other methods, the step ``runs/methods.py`` picks (PPO's is the same function with a critic; offline
GRPO, DPO and IPO learn from data built before the first step). This module only feeds the step and
keeps records:

    for t in steps:
        prompts  = task.sample(P) → left-padded ids (P, L)
        step     = grpo_step(policy, anchor, prompts, reward, recipe, β, optimizer, G, …)
        metrics  → metrics.jsonl;  samples → samples.jsonl;  every N steps: held-out accuracy, checkpoint

The run keeps no global state: its random numbers come from two generators it owns (problems and
minibatch order), saved in every checkpoint, and from the seed, the step and the prompt (each
prompt's completions), so a resumed CPU run continues exactly as an uninterrupted one. Files are
written only through ``RunFolder`` (one writer).

Launched on n processes (``accelerate launch --num_processes n -m minigrpo train …``), each process
runs this same loop on its share of every step's prompts (``runs/parallel.py``); only the main
process writes the run folder, and a run resumes on any number of processes.
"""
from __future__ import annotations

import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from minigrpo.core.optimizer import adamw
from minigrpo.runs.config import OFFLINE, TrainConfig
from minigrpo.runs.errors import DiskFull, Interrupted, NothingToLearn, NothingToLearnWarning, out_of_memory
from minigrpo.runs.folder import RunFolder
from minigrpo.runs.lock import RunLock
from minigrpo.runs.resume import check_config_unchanged, resume_config  # noqa: F401  (resume_config re-exported)
from minigrpo.runs.lm_setup import (UnjudgedWatch, build_reward, check_resumed_reward, describe_reward, flat_message,
                                    flat_samples, prompt_source, reward_functions, sample_rows)
from minigrpo.runs.parallel import Processes, refuse_unshared


FLAT_WARNING = 3          # warn after this many steps in a row that taught nothing


@dataclass
class TrainResult:
    run_dir: Path
    metrics: list            # every metrics.jsonl record of this run
    anchor_accuracy: float   # held-out greedy accuracy at step 0 (NaN when the rows have no answer)
    final_accuracy: float    # … after the last step
    policy: object
    tokenizer: object
    wall_seconds: float
    anchor_reward: float = float("nan")   # held-out greedy reward (eval/greedy/reward) at step 0
    final_reward: float = float("nan")    # … after the last step
    main: bool = True                     # this process wrote the run folder (the one of several that does)


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
    if cfg.model != "tiny" or cfg.data is not None:
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
        else:                  # the adapter's random start from the seed: the same on every run and process
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(cfg.seed)
                model = add_lora(model, cfg.lora_r)
    policy = CausalLMPolicy(model, tokenizer.pad_token_id, autocast_dtype=autocast,
                            gradient_checkpointing=cfg.gradient_checkpointing)
    return policy, tokenizer


def train_lm(cfg: TrainConfig, *, resume: str | Path | None = None, run_dir: str | Path | None = None,
             on_step: Callable[[dict], None] | None = None, progress: bool = True,
             rewards: dict | Callable | None = None, stop=None) -> TrainResult:
    """Run GRPO on ``cfg.task`` or ``cfg.data``; or, with ``resume`` (a run folder), continue it from its
    last checkpoint up to ``cfg.steps`` (the saved config is used, except ``steps``, which may be raised;
    ``cfg`` may be None). A resume refuses a config.json edited since the run started (the settings each
    checkpoint was trained with are in its meta.json), steps below the run's own, and rewards other than
    those it trained with (``lm_setup.check_resumed_reward``): each with one line saying what differs.

    ``rewards`` replaces the configured reward: a mapping name → component or (component, weight) (see
    ``compose.RewardSet``; a plain ``f(prompt, completion, **columns)`` or TRL-style ``f(prompts,
    completions, **columns)`` function is a component), or one such function. It is code, so it is not
    saved: pass it again to resume (rewards.json records each function's import path and a fingerprint of
    its code, and a resume with other functions or weights is refused; ``minigrpo train --resume`` loads
    functions that have an import path again, ``resume.code_rewards``). Everything that can be checked — the data, the model, the reward
    functions and the columns they ask for, the prompt lengths — is checked before the run folder is made.

    Started by ``accelerate launch`` on n processes (a script that calls it, or ``-m minigrpo train``), each
    runs this on its share of every step's prompts (``runs/parallel.py``): the same samples and, to float
    rounding, the same weights and metrics as one process. Only the main process writes the run folder and
    calls ``on_step`` (``TrainResult.main`` says which process returned).

    That process holds the run folder's lock (``folder.RunLock``) from the start, or the resume, to the end:
    a second writer of the same folder (another ``train --resume RUN``) is refused at once with
    ``RunFolderInUse``, naming the holder's PID. A run killed outright leaves no lock behind.

    ``stop``: a ``runs.stop.GracefulStop`` (the command line's): on SIGINT or SIGTERM the step running
    finishes, a checkpoint is written and ``errors.Interrupted`` is raised, naming the step and the
    checkpoint to resume from; a signal during setup raises it at once.

    A failed start leaves no half-made run folder: a folder this call made is removed when setup fails after
    it was made, and when a signal or a full disk (``errors.DiskFull``) ends the run before its first
    checkpoint. (A run that stops later for other reasons keeps its folder: its metrics say what happened.)"""
    lock = RunLock()
    made: list = []                    # the run folder this call made, once it is made
    try:
        return _train_lm(cfg, resume, run_dir, on_step, progress, rewards, lock, stop, made)
    except BaseException as e:
        folder = RunFolder(made[0]) if made else None
        started = bool(made) and made[1]
        if folder is not None and folder._latest_name() is None and folder.path.exists() and \
                (not started or isinstance(e, (Interrupted, DiskFull, KeyboardInterrupt)) or out_of_memory(e)):
            shutil.rmtree(folder.path, ignore_errors=True)
            folder = None
        if isinstance(e, Interrupted):
            if folder is None and resume is not None:
                folder = RunFolder(resume)
            if folder is not None and e.run_dir is None:
                e.run_dir = folder.path
                e.checkpoint = folder._latest_name()
        raise
    finally:
        lock.release()


def check_run_parent(path, flag: str) -> None:
    """Before any work: the run folder (or the folder it goes in) can be written, and is not inside the
    package's shipped assets; an ``OSError`` naming ``flag`` and the path if not."""
    from minigrpo.lm.saving import check_writable, in_assets, may_write_assets

    if in_assets(Path(path)) and not may_write_assets():
        raise PermissionError(f"{flag} {str(path)!r} is inside the installed package's shipped assets, which "
                              "minigrpo never writes into; choose another folder, e.g. runs")
    check_writable(path, flag)


def _train_lm(cfg: TrainConfig, resume, run_dir, on_step, progress: bool, rewards, lock: RunLock, stop,
              made: list) -> TrainResult:
    from tqdm.auto import tqdm

    from minigrpo.lm.models import load_causal_lm, pick_device
    from minigrpo.lm.policy import CausalLMPolicy, context_length
    from minigrpo.lm.precision import require_bf16
    from minigrpo.runs.evaluation import evaluate
    from minigrpo.runs.methods import RunParts, make_steps, read_pairs
    from minigrpo.runs.report import open_reporters

    t0 = time.perf_counter()
    ckpt = folder = None
    if resume is not None:
        folder = RunFolder(resume)
        cfg = resume_config(resume, cfg.steps if cfg is not None else None)
    else:
        run_dir = Path(run_dir) if run_dir is not None else None
        if run_dir is not None and (run_dir / "checkpoints" / "latest").exists():
            raise FileExistsError(f"run folder {str(run_dir)!r} already holds a run; resume it with "
                                  "--resume, or choose another folder")
        check_run_parent(run_dir if run_dir is not None else cfg.out, "run_dir" if run_dir is not None else "--out")
    processes = Processes.from_environment(cfg.device)    # one, or those accelerate launched
    refuse_unshared(cfg, processes.count)
    if stop is not None and processes.count > 1:            # each process would stop alone: the default handlers
        stop.disarm()
        stop = None
    main = processes.is_main                  # the one process that writes the run folder
    if folder is not None:
        if main:                              # before the checkpoint is read: another writer could be replacing it
            lock.acquire(folder.path)
        ckpt = folder.latest_checkpoint()
        if ckpt is None:
            raise FileNotFoundError(f"run folder {str(folder.path)!r} has no checkpoint to resume from")
        saved = folder.read_config()
        check_config_unchanged(folder, saved, ckpt)        # config.json as the run trained, but for steps
        if main and saved["steps"] != cfg.steps:           # steps raised: config.json says what the run does
            folder.write_json("config.json", {**saved, "steps": cfg.steps})
    device = processes.device(pick_device(cfg.device))   # a device this machine lacks fails before a run folder is made
    if cfg.precision == "bf16":
        require_bf16(device)                  # … and so does bf16 where it would be emulated, ~400× slower
    source = prompt_source(cfg)
    functions = reward_functions(cfg, source) if rewards is None else None    # they load, with their columns, first
    pairs = read_pairs(cfg) if cfg.prefs or cfg.labels else None    # dpo/ipo: a bad file fails before the model loads
    anchor_src = resolve_model(cfg, progress)
    if ckpt is None or cfg.lora_r:
        policy, tokenizer = build_policy(anchor_src, cfg, device, lora_from=str(ckpt) if ckpt else None)
    else:
        policy, tokenizer = build_policy(str(ckpt), cfg, device)
    reward = build_reward(cfg, tokenizer, source, device, rewards, functions)
    if folder is not None:                     # resuming: the reward the run trained with, or a clear refusal
        check_resumed_reward(folder.read_json("rewards.json"), reward, rewards is not None, folder.path)
    T = cfg.new_tokens(source.longest_answer(tokenizer))
    source.check(tokenizer, T, context_length(policy.model))
    if cfg.lora_r:
        anchor = policy.anchor()               # the same weights, adapter off
    else:
        anchor_model, _ = load_causal_lm(anchor_src, device=device)
        anchor = CausalLMPolicy(anchor_model, tokenizer.pad_token_id, autocast_dtype=policy.autocast_dtype).freeze()
    recipe, beta_ctl = cfg.build_recipe(), cfg.beta_controller()
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = adamw(params, lr=cfg.lr)
    warm = cfg.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: min(1.0, (t + 1) / (warm + 1)))
    data_gen = torch.Generator().manual_seed(cfg.seed)
    sample_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    test_rows = source.test_rows(cfg.eval_size)

    def run_eval() -> dict:
        return evaluate(policy, tokenizer, test_rows, reward, T, samples=cfg.eval_samples,
                        temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p, seed=cfg.seed + 2,
                        source=source.test_name, anchor=anchor)

    # the anchor's evaluation calls every reward once: a reward that fails does so before a run folder exists
    first = {"step": 0, **run_eval()} if ckpt is None else None
    parts = RunParts(cfg, policy, anchor, tokenizer, reward, source, optimizer, recipe, T, device, data_gen, sample_gen,
                     processes, pairs)
    tic = time.perf_counter()
    take_step = make_steps(parts)     # the method's data, read or built from the anchor (runs/methods.py)
    data_seconds = time.perf_counter() - tic
    if folder is None:
        if main:
            if run_dir is None:
                folder = RunFolder(new_run_dir(Path(cfg.out), f"train-{cfg.name}"))
                made[:] = [folder.path, False]
            else:
                folder = RunFolder(run_dir)
                if not folder.path.exists():
                    folder.path.mkdir(parents=True)
                    made[:] = [folder.path, False]
            lock.acquire(folder.path)          # before a file is written: a run given the same run_dir is refused
            folder.create(cfg.to_dict())
            folder.write_json("rewards.json", describe_reward(reward, rewards is not None))
        folder = RunFolder(processes.broadcast(folder.path if main else None))    # the other processes only read it
    for name, write in take_step.data_files.items():
        if main and not (folder.path / name).exists():
            write(folder.path / name)
    start = 0
    if ckpt is not None:
        state = RunFolder.load_state(ckpt)
        take_step.load_state(state)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        data_gen.set_state(state["data_rng"])
        sample_gen.set_state(state["sample_rng"].to(sample_gen.get_state().device))
        beta_ctl.value = state["beta"]
        start = RunFolder.step_of(ckpt)
        if main:
            folder.truncate("metrics.jsonl", start)
            folder.truncate("samples.jsonl", start)
    if main:
        records = folder.read("metrics.jsonl")
    else:                                     # the main process may be writing it: its lines up to the checkpoint
        records = [] if ckpt is None else [r for r in folder.read("metrics.jsonl") if r.get("step", 0) <= start]
    reporters = open_reporters(cfg.report_to if main else [], folder.path, cfg.to_dict(), folder.path.name)

    def checkpoint(step: int) -> None:
        if main:                              # the state is the same on every process
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "data_rng": data_gen.get_state(), "sample_rng": sample_gen.get_state().cpu(),
                     "beta": float(beta_ctl.value), "step": step, **take_step.state()}
            folder.save_checkpoint(step, policy.model, tokenizer, state, keep=cfg.keep_checkpoints,
                                   config=cfg.to_dict())
        processes.wait()                      # no process runs ahead of a checkpoint being written

    def emit(record: dict, samples: list | None = None) -> None:
        records.append(record)
        if not main:
            return
        folder.append("metrics.jsonl", record)
        listened = record if samples is None else {**record, "samples": flat_samples(samples)}
        reporters(listened)
        if on_step is not None:
            on_step(listened)

    flat_run, flat_streak, warned = start == 0, 0, False
    unjudged = UnjudgedWatch()
    bar = tqdm(total=cfg.steps, initial=start, desc=f"{cfg.method.upper()} {cfg.name}", disable=not (progress and main))
    try:
        if first is not None:
            emit(first)
        if made:
            made[1] = True                    # setup is done: the run has started
        if stop is not None:
            stop.in_loop = True               # a signal now waits for the step to end
        for t in range(start + 1, cfg.steps + 1):
            tic = time.perf_counter()
            out = take_step(t, beta_ctl.value)             # runs/methods.py: grpo, ppo, offline_grpo, dpo, ipo
            step = out.step
            scheduler.step()
            record = {"step": t, **out.record, "lr": scheduler.get_last_lr()[0],
                      "step_seconds": time.perf_counter() - tic}
            if t == 1 and cfg.method in OFFLINE:
                record["data_seconds"] = data_seconds     # building the method's data (sampling, scoring)
            if step is not None:
                beta_ctl.update(step)
                ended = (step.rollout.completions == tokenizer.eos_token_id) & step.rollout.mask
                record["ended_fraction"] = ended.any(-1).float().mean().item()
            if main:
                unjudged.see(step, t)
            flat_streak = flat_streak + 1 if record.get("frac_flat_groups") == 1.0 else 0
            if flat_streak == FLAT_WARNING and not warned:       # one flat batch is chance; three in a row is not
                warnings.warn(flat_message(record, step, T), NothingToLearnWarning, stacklevel=3)
                warned = True
            flat_run = flat_run and flat_streak > 0
            if t % cfg.eval_every == 0 or t == cfg.steps:
                record.update(run_eval())
            samples = None
            if out.prompts is not None and (t % cfg.sample_every == 0 or t == cfg.steps):
                samples = sample_rows(tokenizer, step, out.prompts, out.rows)
                for row in samples if main else ():
                    folder.append("samples.jsonl", {"step": t, **row})
            emit(record, samples)
            if flat_run and cfg.stop_after_flat and t >= cfg.stop_after_flat:
                raise NothingToLearn(f"{flat_message(record, step, T)} Stopped after {t} steps that all taught "
                                     "nothing (run folder kept: " + str(folder.path) + "); to train anyway set "
                                     "stop_after_flat=0 (--stop-after-flat 0)")
            saved = (cfg.save_every and t % cfg.save_every == 0) or t == cfg.steps
            if saved:
                checkpoint(t)
            if stop is not None and stop.requested and t < cfg.steps:   # SIGINT/SIGTERM: step t is done; save, stop
                if not saved:
                    checkpoint(t)
                raise Interrupted(stop.requested, t, folder.path, folder._latest_name())
            bar.update(1)
            bar.set_postfix(**{k: f"{record[k]:.3f}" for k in ("reward", "kl", "loss") if k in record},
                            **({"acc": f"{record['test_accuracy']:.2f}"} if "test_accuracy" in record else {}))
        unjudged.finish()
    finally:
        if stop is not None:
            stop.in_loop = False
        bar.close()
        reporters.close()
    pick = lambda key: [r[key] for r in records if key in r]
    accs, rewards_ = pick("test_accuracy"), pick("eval/greedy/reward")
    nan = float("nan")
    return TrainResult(folder.path, records, accs[0] if accs else nan, accs[-1] if accs else nan, policy, tokenizer,
                       time.perf_counter() - t0, rewards_[0] if rewards_ else nan, rewards_[-1] if rewards_ else nan,
                       main)
