"""The ``minigrpo`` command line: demo, bandit, train, sft, reward-model and bench.

Each command's flags are derived with tyro from a config dataclass — every field is a flag, with the
default and the documentation written beside the field — plus the few flags that are not settings
(``--json``, ``train --config/--resume``, ``--digits``, ``bandit --arms``), declared the same way in
a small dataclass per command below.

``cli/flags.py`` derives the flags and reads their text as the fields' declared types (the reading a
YAML config file gets too); the config's own validation judges the values, so any bad input ends in
one line, ``minigrpo <command>: error: …``, and exit code 2: a config file that does not read (named, with
the line and column where the parser gives them), a device this torch cannot use, a full disk (naming the
file and the checkpoint to resume from). ``minigrpo train`` stopped by SIGINT or SIGTERM finishes the step
it is running, writes a checkpoint and says, in one line, how to resume; it exits 130 or 143 (128 + the
signal's number).
"""
from __future__ import annotations

import contextlib
import importlib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from minigrpo.cli.flags import flag_name, parse_flags


# --- the flags that are not settings -------------------------------------------------------------

@dataclass
class DemoFlags:
    out: str = "runs"                  # parent folder for the run folder
    small: bool = False                # a quick, smaller run (used by the tests)


@dataclass
class BanditFlags:
    arms: int | None = None            # number of arms K; without --means, means evenly spaced from 0.1 to 0.9
    json: bool = False                 # print exactly one JSON object


@dataclass
class TrainFlags:
    config: str | None = None          # a YAML or JSON file of TrainConfig settings (flags override it)
    # RUN_DIR: continue a run folder from its last checkpoint, with its saved settings (only --steps, to train
    # further, and --json may be given with it).
    resume: str | None = None
    digits: int | None = None          # addition: digits per operand (sets task_args.digits)
    json: bool = False                 # no progress bar; print one JSON summary


@dataclass
class SFTFlags:
    digits: int | None = None          # addition: digits per operand (sets task_args.digits)
    device: str = "auto"               # auto (cuda, then mps, then cpu), or a device this torch can use here
    # The anchor's folder (checked before training; an earlier anchor there is replaced whole; never the
    # package's shipped assets unless MINIGRPO_WRITE_ASSETS=1); None: a new folder
    # runs/sft-<task, or the data file's name>-<date>-<time>.
    out: str | None = None


@dataclass
class JsonFlag:
    json: bool = False                 # print exactly one JSON object


@dataclass
class NoFlags:
    pass


# --- the commands --------------------------------------------------------------------------------

def _bandit_config(settings: dict, arms: int | None):
    """A validated BanditConfig from the flags; ``--arms K`` spaces K means evenly unless --means gives them."""
    from minigrpo.bandit.config import BanditConfig

    if arms is not None:
        from minigrpo.bandit.config import MAX_ARMS

        if not 2 <= arms <= MAX_ARMS:
            raise ValueError(f"--arms={arms} is not allowed; a bandit needs 2 to {MAX_ARMS:,} arms")
        if "means" not in settings:
            settings["means"] = [0.1 + 0.8 * k / (arms - 1) for k in range(arms)]
        elif len(settings["means"]) != arms:
            raise ValueError(f"--arms={arms} is not allowed with {len(settings['means'])} values of --means; "
                             "give one mean per arm")
    return BanditConfig(**settings)


def _finite_or_null(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite_or_null(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite_or_null(v) for v in x]
    return x


def cmd_bandit(flags: dict, settings: dict) -> int:
    from minigrpo.bandit.runner import run_bandit

    result = run_bandit(_bandit_config(settings, flags["arms"]))
    summary = result.summary()
    if flags["json"]:      # strict JSON: a non-finite number (KL to π* at β = 0 is inf) is null
        print(json.dumps(_finite_or_null(summary), allow_nan=False))
        return 0
    fmt = lambda xs: "[" + ", ".join(f"{x:.4f}" for x in xs) + "]"
    cfg = result.config
    pieces = f"recipe={cfg.recipe}, baseline={cfg.baseline}, kl={cfg.kl}, G={cfg.group_size}"
    data = {"dpo": f"pairs={cfg.pairs}", "ipo": f"pairs={cfg.pairs}",     # DPO/IPO use no recipe piece
            "offline_grpo": f"logged={cfg.logged}, {pieces}"}.get(cfg.method, pieces)
    why = {"ipo": "IPO's own: log(pi/anchor) follows win rates against the anchor, not r/beta",
           "offline_grpo": "pi* on the logged mean rewards; an arm never logged keeps what the run left it"}
    own = "" if "fixed_point" not in summary else (
        f"  fixed point     {fmt(summary['fixed_point'])}  ({why[cfg.method]})\n"
        f"  KL(pi || fixed) {summary['kl_to_fixed_point']:.3e}\n")
    print(f"bandit: method={cfg.method}, {cfg.K} arms, means {fmt(cfg.means)}, beta={cfg.beta}, {data}, "
          f"steps={cfg.steps}, seed={cfg.seed}\n"
          f"  anchor          {fmt(summary['anchor'])}\n  policy          {fmt(summary['policy'])}\n"
          f"  optimum pi*     {fmt(summary['optimum'])}\n  KL(pi || pi*)   {summary['kl_to_optimum']:.3e}\n"
          f"{own}"
          f"  KL(pi || anchor){summary['kl_to_anchor']:.4f}\n"
          f"  expected reward {summary['expected_reward']:.4f}  (pi*: {summary['optimum_expected_reward']:.4f})\n"
          f"  {result.config.steps} steps in {result.wall_seconds:.2f} s")
    return 0


def cmd_demo(flags: dict, settings: dict) -> int:
    from minigrpo.demo import run_demo
    from minigrpo.runs.lm_run import check_run_parent

    check_run_parent(flags["out"], "--out")     # writable, and not inside the package's shipped assets
    run_demo(out=flags["out"], small=flags["small"])
    return 0


def train_config(settings: dict, config_file: str | None = None, digits: int | None = None):
    """A validated TrainConfig: the config file's settings (if any), then the flags' on top."""
    from minigrpo.runs.config import TrainConfig, read_settings_file

    data = read_settings_file(TrainConfig, config_file) if config_file else {}
    from_file = set(data) - set(settings)
    data.update(settings)
    if digits is not None:
        data["task_args"] = {**data.get("task_args", {}), "digits": digits}
    try:
        return TrainConfig(**data)
    except ValueError as e:                     # a setting the file gave: the error names the file too
        if any(str(e).startswith(f"TrainConfig.{k}=") for k in from_file):
            raise ValueError(f"config file {config_file!r}: {e}") from None
        raise


def stopped_line(e) -> str:
    """What ``minigrpo train`` says when a signal stopped it (``runs.errors.Interrupted``)."""
    if e.run_dir is None or e.checkpoint is None:
        return f"minigrpo train: stopped by {e.signal} before the first checkpoint; nothing was saved (no run folder left)"
    if e.step is not None:
        return f"minigrpo train: stopped by {e.signal} after step {e.step}; resume with: minigrpo train --resume {e.run_dir}"
    return (f"minigrpo train: stopped by {e.signal}; resume with: minigrpo train --resume {e.run_dir} (its last "
            f"checkpoint: {e.checkpoint})")


def cmd_train(flags: dict, settings: dict) -> int:
    """``minigrpo train``; SIGINT or SIGTERM stops it at the next safe point (``runs/stop.py``) with one line
    naming the run folder to resume and exit code 128 + the signal's number (130, 143)."""
    from minigrpo.runs.errors import Interrupted
    from minigrpo.runs.stop import GracefulStop, exit_code

    try:
        with GracefulStop() as stop:
            return _train(flags, settings, stop)
    except Interrupted as e:
        print(stopped_line(e), file=sys.stderr, flush=True)
        return exit_code(e.signal)


def _train(flags: dict, settings: dict, stop) -> int:
    from minigrpo.runs.lm_run import train_lm

    if flags["resume"]:
        from minigrpo.runs.resume import code_rewards, resume_config

        ignored = [flag_name(name) for name in settings if name != "steps"]
        ignored += [flag_name(name) for name in ("config", "digits") if flags[name] is not None]
        if ignored:
            raise ValueError(f"{', '.join(ignored)} cannot be given with --resume, which continues the run with its "
                             "saved settings; only --steps (to train further) and --json are allowed")
        cfg = resume_config(flags["resume"], settings.get("steps"))
        rewards = code_rewards(flags["resume"])        # a run trained through the API: its functions, loaded again
        result = train_lm(cfg, resume=flags["resume"], progress=not flags["json"], stop=stop, rewards=rewards)
    else:
        cfg = train_config(settings, flags["config"], flags["digits"])
        result = train_lm(cfg, progress=not flags["json"], stop=stop)
    stop.disarm()                      # the run is over: a signal now is an ordinary interrupt
    if not result.main:                # one of several processes (accelerate launch): the main one reports
        return 0
    nan_to_none = lambda x: None if x != x else x
    summary = {"run_dir": str(result.run_dir), "anchor_accuracy": nan_to_none(result.anchor_accuracy),
               "final_accuracy": nan_to_none(result.final_accuracy), "anchor_reward": nan_to_none(result.anchor_reward),
               "final_reward": nan_to_none(result.final_reward), "steps": result.metrics[-1]["step"],
               "wall_seconds": result.wall_seconds}
    if flags["json"]:      # strict JSON: a non-finite number (KL to π* at β = 0 is inf) is null
        print(json.dumps(_finite_or_null(summary), allow_nan=False))
        return 0
    said = [f"held-out {what} {summary['anchor_' + key]:.3f} (anchor) -> {summary['final_' + key]:.3f}"
            for key, what in (("accuracy", "accuracy"), ("reward", "greedy reward")) if summary["anchor_" + key] is not None]
    print(f"{'; '.join(said) or 'no held-out prompts'} after {summary['steps']} steps, "
          f"{summary['wall_seconds']:.0f} s; run folder {summary['run_dir']}")
    return 0


def cmd_reward_model(flags: dict, settings: dict) -> int:
    """Train a Bradley–Terry reward model from a preference file, a label file, or a synthetic rater."""
    from collections import Counter

    from minigrpo.lm.saving import check_out, check_writable
    from minigrpo.lm.sft import anchor_dir
    from minigrpo.rewards.reward_model import RewardModel, train_reward_model
    from minigrpo.runs.config import RewardModelJob
    from minigrpo.runs.lm_run import new_run_dir

    job = RewardModelJob(**settings)
    if job.out:                                 # a bad --out fails now, not after training
        check_out(job.out)
    else:
        check_writable("runs")
    train, test, skipped = job.pairs()
    rm = RewardModel.from_causal_lm(job.base or anchor_dir(job.task), seed=job.seed)
    history = train_reward_model(rm, train, test or None, job)
    acc = history[-1].get("test_accuracy")
    (n_train, n_test), skipped = rm.pairs_used, dict(Counter(skipped) + rm.skipped)    # pairs the tokenizer merged
    out = Path(job.out or new_run_dir(Path("runs"), f"reward-model-{job.task}"))
    try:
        rm.save(out, pairs=n_train, test_pairs=n_test, test_accuracy=acc, skipped=skipped)
    except BaseException:
        if not job.out and not any(out.iterdir()):     # the new folder made for it: no empty folder left
            out.rmdir()
        raise
    print(json.dumps({"out": str(out), "pairs": n_train, "test_pairs": n_test, "test_accuracy": acc,
                      "skipped": skipped, "train_seconds": rm.train_seconds}))
    return 0


def cmd_sft(flags: dict, settings: dict) -> int:
    """SFT a fresh tiny GPT-2 or --model on a task or on --data into an anchor; without --out it goes to a
    new run folder (made once the data and the model have loaded), never into the installed package (the
    shipped anchors are package data)."""
    from minigrpo.lm.models import pick_device
    from minigrpo.lm.sft import SFTConfig, build_anchor
    from minigrpo.runs.lm_run import new_run_dir

    if flags["digits"] is not None:
        settings["task_args"] = {**settings.get("task_args", {}), "digits": flags["digits"]}
    from minigrpo.runs.config import check_device

    cfg = SFTConfig(**settings)
    check_device(flags["device"])               # only a device this torch can use here (not meta, not cuda:7 on 1 GPU)
    pick_device(flags["device"])                # a device this machine lacks fails before a folder is made
    if not flags["out"]:
        from minigrpo.lm.saving import check_writable

        check_writable("runs")                  # the parent of the new folder: a file there fails now
    new_folder = lambda name: new_run_dir(Path("runs"), f"sft-{name}")    # name: the task or the data file's
    out = build_anchor(cfg, flags["out"] or new_folder, device=flags["device"])
    print(json.dumps({"out": str(out), **{k: v for k, v in json.loads((out / "sft.json").read_text()).items()
                                          if k in ("test_accuracy", "test_loss", "final_loss", "wall_seconds")}}))
    return 0


def cmd_bench(flags: dict, settings: dict) -> int:
    from minigrpo.runs.config_files import check_device
    from minigrpo.runs.speed import BenchConfig, compare, table

    cfg = BenchConfig(**settings)
    check_device(cfg.device)                    # before a worker starts: one line, not the worker's traceback
    say = None if flags["json"] else (lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True))
    try:
        result = compare(cfg, progress=say)
    except RuntimeError as e:                   # a run's own process failed: its last lines say why
        print(f"minigrpo bench: error: {e}", file=sys.stderr)
        return 1
    if flags["json"]:
        print(json.dumps(result))
        return 0
    print(table([result]))
    print(f"device: {result['device']}, torch {result['torch']}, {result['threads']} threads; "
          f"{result['gflop_per_step']:.1f} GFLOP a step; matmul rate {result['matmul_gflops']:.0f} GFLOP/s "
          f"({cfg.precision}); bf16 units: {result['bf16_units']}")
    return 0


@dataclass(frozen=True)
class Command:
    """One subcommand: what it does, its own flags, and the config class whose fields are its other flags."""

    help: str
    run: Callable[[dict, dict], int]           # run(flags, settings): settings holds only the fields given
    flags: type                                # a dataclass of the flags that are not settings
    config: str | None = None                  # "module:Class" of the config, imported when the command runs
    aliases: dict = field(default_factory=dict)   # field name → extra flag names


COMMANDS = {
    "demo": Command("the main job: a complete run that writes plots and metrics into a run folder", cmd_demo,
                    DemoFlags),
    "bandit": Command("train GRPO on a K-armed bandit and compare with the exact optimum pi*", cmd_bandit,
                      BanditFlags, "minigrpo.bandit.config:BanditConfig", {}),
    "train": Command("GRPO on a language model: a task, an anchor, a run folder with metrics and checkpoints",
                     cmd_train, TrainFlags, "minigrpo.runs.config:TrainConfig",
                     {"prompts_per_step": ("--prompts",), "reward_weights": ("--reward",),
                      "reward_fns": ("--reward-fn",)}),
    "sft": Command("supervised fine-tuning into a GRPO anchor: a tiny GPT-2 on a task, or any model on your data",
                   cmd_sft, SFTFlags, "minigrpo.lm.sft:SFTConfig"),
    "reward-model": Command("train a Bradley-Terry reward model from preferences, labels or a synthetic rater",
                            cmd_reward_model, NoFlags, "minigrpo.runs.config:RewardModelJob"),
    "bench": Command("time GRPO steps on a fixed workload", cmd_bench, JsonFlag, "minigrpo.runs.speed:BenchConfig"),
}


def config_class(name: str) -> type:
    """The config dataclass whose fields are flags of ``minigrpo <name>``."""
    module, _, cls = COMMANDS[name].config.partition(":")
    return getattr(importlib.import_module(module), cls)


def parse(name: str, argv: list[str]) -> tuple[dict, dict]:
    """(flags, settings) of ``minigrpo <name> <argv>`` (see ``cli/flags.py``)."""
    command = COMMANDS[name]
    config = config_class(name) if command.config is not None else None
    return parse_flags(f"minigrpo {name}", command.help, command.flags, config, command.aliases, argv)


def usage() -> str:
    width = max(len(n) for n in COMMANDS)
    return "\n".join(["usage: minigrpo COMMAND [FLAGS]   (minigrpo COMMAND --help lists a command's flags)", "",
                      "GRPO written out piece by piece.", "", "commands:",
                      *(f"  {n:<{width}}  {c.help}" for n, c in COMMANDS.items())])


# what to lower when a command runs out of memory
OUT_OF_MEMORY = {"train": "lower --prompts, --group-size, --max-new-tokens, --eval-size or --eval-samples, or use a "
                          "smaller model, LoRA (--lora-r) or --precision bf16",
                 "bandit": "lower --steps (or raise --record-every), --group-size or --arms"}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    import warnings

    from minigrpo.runs.errors import NothingToLearn

    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"minigrpo: error: {name!r} is not a command; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    plain_format = warnings.formatwarning
    warnings.formatwarning = lambda message, *_, **__: f"minigrpo {name}: warning: {message}\n"    # one line each
    from minigrpo.runs.errors import Interrupted
    from minigrpo.runs.stop import GracefulStop, exit_code

    stop = contextlib.nullcontext() if name == "train" else GracefulStop()   # train stops at a safe point itself
    try:
        with stop:                              # SIGINT/SIGTERM: stop now; a save is whole or not made at all
            return COMMANDS[name].run(*parse(name, rest))
    except Interrupted as e:
        print(f"minigrpo {name}: stopped by {e.signal}", file=sys.stderr)
        return exit_code(e.signal)
    except (ValueError, OSError) as e:      # bad settings or paths: one clear line, no traceback
        print(f"minigrpo {name}: error: {str(e).replace(chr(10), ' ')}", file=sys.stderr)
        return 2
    except (FloatingPointError, NothingToLearn) as e:   # non-finite, or nothing to learn
        if name in ("sft", "reward-model"):            # they save only at the end: nothing saved, --lr to fix
            print(f"minigrpo {name}: error: {str(e).replace(chr(10), ' ')}", file=sys.stderr)
            return 2
        print(f"minigrpo {name}: stopped: {str(e).replace(chr(10), ' ')}", file=sys.stderr)   # checkpoints intact
        return 1
    except (MemoryError, RuntimeError) as e:
        from minigrpo.runs.errors import out_of_memory

        if not out_of_memory(e):
            raise
        said = " ".join(str(e).split())[:160]
        lower = OUT_OF_MEMORY.get(name, f"lower the sizes asked for (minigrpo {name} --help lists them)")
        print(f"minigrpo {name}: error: out of memory ({said or type(e).__name__}); {lower}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:               # Ctrl-C outside a run's own handling (flags, imports, other commands)
        print(f"minigrpo {name}: stopped by SIGINT", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = plain_format
