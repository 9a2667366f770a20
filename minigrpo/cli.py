"""The ``minigrpo`` command line: demo, bandit, train, reward-model, sft and bench."""
from __future__ import annotations

import argparse
import json
import sys


def _floats(text: str, name: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip() != ""]
    except ValueError:
        raise ValueError(f"{name}={text!r} is not allowed: give comma-separated numbers, e.g. 0.2,0.5,0.8")


def bandit_config_from_args(args):
    """Build a validated BanditConfig from CLI flags (errors name the flag, its value and what is allowed)."""
    from minigrpo.bandit.config import BanditConfig

    means = _floats(args.means, "means") if args.means else None
    if args.arms is not None:
        if args.arms <= 1:
            raise ValueError(f"arms={args.arms} is not allowed: a bandit needs at least 2 arms")
        if means is None:
            means = [0.1 + 0.8 * k / (args.arms - 1) for k in range(args.arms)]
        elif len(means) != args.arms:
            raise ValueError(f"arms={args.arms} but --means has {len(means)} values; give one mean per arm")
    kwargs = dict(beta=args.beta, baseline=args.baseline, kl=args.kl, steps=args.steps, group_size=args.group_size,
                  lr=args.lr, seed=args.seed, noise=args.noise)
    if means is not None:
        kwargs["means"] = means
    if args.anchor:
        kwargs["anchor"] = _floats(args.anchor, "anchor")
    return BanditConfig(**kwargs)


def cmd_bandit(args) -> int:
    from minigrpo.bandit.runner import run_bandit

    result = run_bandit(bandit_config_from_args(args))
    summary = result.summary()
    if args.json:
        print(json.dumps(summary))
        return 0
    fmt = lambda xs: "[" + ", ".join(f"{x:.4f}" for x in xs) + "]"
    cfg = result.config
    print(f"bandit: {cfg.K} arms, means {fmt(cfg.means)}, beta={cfg.beta}, baseline={cfg.baseline}, kl={cfg.kl}, "
          f"G={cfg.group_size}, steps={cfg.steps}, seed={cfg.seed}")
    print(f"  anchor          {fmt(summary['anchor'])}")
    print(f"  policy          {fmt(summary['policy'])}")
    print(f"  optimum pi*     {fmt(summary['optimum'])}")
    print(f"  KL(pi || pi*)   {summary['kl_to_optimum']:.3e}")
    print(f"  KL(pi || anchor){summary['kl_to_anchor']:.4f}")
    print(f"  expected reward {summary['expected_reward']:.4f}  (pi*: {summary['optimum_expected_reward']:.4f})")
    print(f"  {result.config.steps} steps in {result.wall_seconds:.2f} s")
    return 0


def cmd_demo(args) -> int:
    from minigrpo.demo import run_demo

    run_demo(out=args.out, small=args.small)
    return 0


# flag → TrainConfig field, for the flags of `minigrpo train` (None: not given, keep the file's or default value)
TRAIN_FLAGS = {"task": str, "model": str, "beta": float, "kl_target": float, "kl": str, "baseline": str,
               "group_size": int, "prompts_per_step": int, "lr": float, "steps": int, "seed": int,
               "max_new_tokens": int, "temperature": float, "top_k": int, "top_p": float, "eval_every": int,
               "eval_size": int, "save_every": int, "out": str, "device": str, "precision": str, "lora_r": int}


def parse_weights(text: str) -> dict[str, float]:
    """'correct=1,format=0.2' → {"correct": 1.0, "format": 0.2}."""
    out = {}
    for part in (x.strip() for x in text.split(",") if x.strip()):
        name, eq, w = part.partition("=")
        try:
            out[name.strip()] = float(w) if eq else 1.0
        except ValueError:
            raise ValueError(f"reward={text!r} is not allowed: give name=weight pairs, e.g. correct=1,format=0.2") from None
    if not out:
        raise ValueError(f"reward={text!r} is not allowed: give name=weight pairs, e.g. correct=1,format=0.2")
    return out


def train_config_from_args(args):
    """A validated TrainConfig: the --config file (YAML/JSON) if given, then every flag given on top."""
    from minigrpo.runs.config import TrainConfig

    data = TrainConfig.from_file(args.config).to_dict() if args.config else {}
    for name in TRAIN_FLAGS:
        v = getattr(args, name)
        if v is not None:
            data[name] = v
    if args.gradient_checkpointing:
        data["gradient_checkpointing"] = True
    if args.digits is not None:
        data["task_args"] = {**data.get("task_args", {}), "digits": args.digits}
    if args.reward is not None:
        data["reward_weights"] = parse_weights(args.reward)
    if args.reward_combine is not None:
        data["reward_combine"] = args.reward_combine
    if args.forbidden is not None:
        data["forbidden"] = [w for w in args.forbidden.split(",") if w]
    if args.reward_model is not None:
        data["reward_model"] = args.reward_model
    return TrainConfig.from_dict({k: v for k, v in data.items() if k != "task_obj"})


def cmd_train(args) -> int:
    from minigrpo.runs.lm_run import train_lm

    if args.resume:
        from minigrpo.runs.folder import RunFolder
        from minigrpo.runs.config import TrainConfig

        ignored = [n for n in TRAIN_FLAGS if n != "steps" and getattr(args, n) is not None]
        ignored += ["config"] * bool(args.config) + ["digits"] * (args.digits is not None) + \
            ["gradient_checkpointing"] * args.gradient_checkpointing
        if ignored:
            flags = ", ".join("--prompts" if n == "prompts_per_step" else "--" + n.replace("_", "-") for n in ignored)
            raise ValueError(f"{flags} cannot be given with --resume, which continues the run with its saved "
                             "settings; only --steps (to train further) and --json are allowed")
        saved = RunFolder(args.resume).read_config()
        cfg = TrainConfig.from_dict({**saved, "steps": args.steps if args.steps is not None else saved["steps"]})
        result = train_lm(cfg, resume=args.resume, progress=not args.json)
    else:
        result = train_lm(train_config_from_args(args), progress=not args.json)
    summary = {"run_dir": str(result.run_dir), "anchor_accuracy": result.anchor_accuracy,
               "final_accuracy": result.final_accuracy, "steps": result.metrics[-1]["step"],
               "wall_seconds": result.wall_seconds}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"held-out accuracy {summary['anchor_accuracy']:.3f} (anchor) -> {summary['final_accuracy']:.3f} "
              f"after {summary['steps']} steps, {summary['wall_seconds']:.0f} s; run folder {summary['run_dir']}")
    return 0


def cmd_reward_model(args) -> int:
    """Train a Bradley–Terry reward model from a preference file, a label file, or a synthetic rater."""
    import torch

    from minigrpo.rewards.labels import labels_to_pairs, load_labels
    from minigrpo.rewards.preferences import RATERS, load_preferences, synthetic_preferences
    from minigrpo.rewards.reward_model import RewardModel, RMTrainConfig, train_reward_model
    from minigrpo.lm.sft import anchor_dir
    from minigrpo.lm.tasks import in_test_split, make_task

    sources = [x for x in (args.prefs, args.labels, args.synthetic) if x]
    if len(sources) != 1:
        raise ValueError("reward-model: give exactly one of --prefs FILE, --labels FILE, --synthetic RATER")
    cfg = RMTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    skipped = {}
    if args.synthetic:
        if args.synthetic not in RATERS:
            raise ValueError(f"synthetic={args.synthetic!r} is not allowed; choose one of {sorted(RATERS)}")
        task = make_task(args.task)
        rule = RATERS[args.synthetic](task)
        train = synthetic_preferences(task, rule, args.prompts, "train", 8, torch.Generator().manual_seed(args.seed))
        test = synthetic_preferences(task, rule, max(args.prompts // 6, 10), "test", 8,
                                     torch.Generator().manual_seed(args.seed + 1))
    else:
        if args.prefs:
            pairs, report = load_preferences(args.prefs, strict=not args.skip_bad)
            skipped = dict(report.skipped)
        else:
            labels, bad = load_labels(args.labels, strict=not args.skip_bad)
            pairs, skipped = labels_to_pairs(labels), dict(bad)
        test = [p for p in pairs if in_test_split(p.prompt, 0.1)]        # held out by prompt
        train = [p for p in pairs if not in_test_split(p.prompt, 0.1)]
        if not train:
            raise ValueError("reward-model: no training pairs left (every pair's prompt fell in the held-out 10%)")
    rm = RewardModel.from_causal_lm(args.base or anchor_dir(args.task), seed=args.seed)
    history = train_reward_model(rm, train, test or None, cfg)
    acc = history[-1].get("test_accuracy")
    out = rm.save(args.out, pairs=len(train), test_pairs=len(test), test_accuracy=acc, skipped=skipped)
    print(json.dumps({"out": str(out), "pairs": len(train), "test_pairs": len(test), "test_accuracy": acc,
                      "skipped": skipped, "train_seconds": rm.train_seconds}))
    return 0


def cmd_sft(args) -> int:
    from minigrpo.lm.sft import SFTConfig, anchor_dir, build_anchor

    task_args = {"digits": args.digits} if args.digits is not None else {}
    cfg = SFTConfig(task=args.task, task_args=task_args, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                    seed=args.seed, careless=args.careless)
    out = build_anchor(cfg, args.out or anchor_dir(args.task, task_args), device=args.device)
    print(json.dumps({"out": str(out), **{k: v for k, v in json.loads((out / "sft.json").read_text()).items()
                                          if k in ("test_accuracy", "final_loss", "wall_seconds")}}))
    return 0


def cmd_bench(args) -> int:
    from minigrpo.runs.speed import BenchConfig, compare, table

    cfg = BenchConfig(size=args.size, prompts=args.prompts, group_size=args.group_size, new_tokens=args.new_tokens,
                      precision=args.precision, steps=args.steps, warmup=args.warmup, rounds=args.rounds,
                      threads=args.threads, vocab=args.vocab, device=args.device, seed=args.seed,
                      gradient_checkpointing=args.gradient_checkpointing)
    say = None if args.json else (lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True))
    try:
        result = compare(cfg, peer=args.peer, progress=say)
    except RuntimeError as e:                   # a run's own process failed: its last lines say why
        print(f"minigrpo bench: error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
        return 0
    print(table([result]))
    print(f"device: {result['device']}, torch {result['torch']}, {result['threads']} threads; "
          f"{result['gflop_per_step']:.1f} GFLOP a step; matmul rate {result['matmul_gflops']:.0f} GFLOP/s "
          f"({cfg.precision})")
    if args.peer:
        print(f"speedup (TRL s/step ÷ minigrpo s/step): {result['speedup']:.2f}×; "
              f"peak memory minigrpo/TRL: {result['memory_ratio']:.2f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from minigrpo.bandit.config import BASELINE_CHOICES

    p = argparse.ArgumentParser(prog="minigrpo", description="GRPO written out piece by piece.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="the main job: a complete run that writes plots and metrics into a run folder")
    d.add_argument("--out", default="runs", help="parent folder for the run folder (default: runs)")
    d.add_argument("--small", action="store_true", help="a quick, smaller run (used by the tests)")
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser("bandit", help="train GRPO on a K-armed bandit and compare with the exact optimum pi*")
    b.add_argument("--arms", type=int, default=None, help="number of arms K (default: from --means, else 5)")
    b.add_argument("--means", default=None, help="comma-separated arm means, e.g. 0.1,0.5,0.9")
    b.add_argument("--anchor", default=None, help="comma-separated anchor probabilities (sum 1); default: a skewed SFT-like prior")
    b.add_argument("--beta", type=float, default=0.1, help="KL coefficient beta >= 0 (default 0.1)")
    b.add_argument("--baseline", default="group_mean", choices=BASELINE_CHOICES, help="advantage baseline")
    b.add_argument("--kl", default="reward:k1", help="KL placement:estimator, e.g. reward:k1, loss:k3, none")
    b.add_argument("--steps", type=int, default=4000)
    b.add_argument("--group-size", type=int, default=128, help="G, completions per prompt per step (default 128)")
    b.add_argument("--lr", type=float, default=0.03, help="Adam learning rate, decayed linearly to 1%% of it")
    b.add_argument("--noise", default="bernoulli", help="arm reward noise: bernoulli, gaussian or none")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--json", action="store_true", help="print exactly one JSON object")
    b.set_defaults(func=cmd_bandit)

    t = sub.add_parser("train", help="GRPO on a language model: a task, an anchor, a run folder with metrics and checkpoints")
    t.add_argument("--config", default=None, help="a YAML or JSON file of TrainConfig settings (flags override it)")
    t.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a run folder from its last checkpoint")
    t.add_argument("--task", help="addition or chain (default addition)")
    t.add_argument("--digits", type=int, default=None, help="addition: digits per operand")
    t.add_argument("--model", help="'tiny' (the task's shipped anchor), a save_pretrained folder, or a hub id like gpt2")
    t.add_argument("--beta", type=float, help="KL coefficient beta (default 0.02)")
    t.add_argument("--kl-target", type=float, help="adapt beta toward this KL per completion")
    t.add_argument("--kl", help="KL placement, e.g. reward:k1 (default), loss:k3, none")
    t.add_argument("--baseline", help="group_mean (default), group_mean_std, leave_one_out, batch_mean, none")
    t.add_argument("--group-size", type=int, help="G completions per prompt (default 8)")
    t.add_argument("--prompts", dest="prompts_per_step", type=int, help="P prompts per step (default 16)")
    t.add_argument("--lr", type=float, help="AdamW learning rate (default 2e-4)")
    t.add_argument("--steps", type=int, help="GRPO steps (default 200)")
    t.add_argument("--seed", type=int)
    t.add_argument("--max-new-tokens", type=int)
    t.add_argument("--temperature", type=float)
    t.add_argument("--top-k", type=int)
    t.add_argument("--top-p", type=float)
    t.add_argument("--eval-every", type=int)
    t.add_argument("--eval-size", type=int)
    t.add_argument("--save-every", type=int)
    t.add_argument("--out", help="parent folder of the run folder (default runs)")
    t.add_argument("--device", help="auto (default), cpu, cuda, mps")
    t.add_argument("--precision", help="fp32 (default) or bf16")
    t.add_argument("--gradient-checkpointing", action="store_true")
    t.add_argument("--lora-r", type=int, help="train a LoRA adapter of this rank (needs peft)")
    t.add_argument("--reward", help="reward components and weights, e.g. correct=1,format=0.2,length=0.5 "
                                    "(components: correct, format, length, safety, steps, reward_model)")
    t.add_argument("--reward-combine", help="sum (default) or normalised (each component z-scored in its group)")
    t.add_argument("--forbidden", help="comma-separated strings the 'safety' component penalises")
    t.add_argument("--reward-model", help="a reward-model folder (minigrpo reward-model, or any HF sequence "
                                          "classifier): the 'reward_model' component")
    t.add_argument("--json", action="store_true", help="no progress bar; print one JSON summary")
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("reward-model", help="train a Bradley-Terry reward model from preferences, labels or a synthetic rater")
    r.add_argument("--prefs", help="JSONL of {prompt, chosen, rejected} pairs and/or {prompt, ranking} lists")
    r.add_argument("--labels", help="JSONL of good/bad labels (each good completion preferred to each bad one)")
    r.add_argument("--synthetic", help="a hidden rater standing in for people: closeness or column_checker")
    r.add_argument("--task", default="addition", help="the task (for --synthetic and the default base)")
    r.add_argument("--prompts", type=int, default=600, help="--synthetic: prompts to draw (8 pairs each)")
    r.add_argument("--base", default=None, help="causal LM folder to start from (default: the task's anchor)")
    r.add_argument("--steps", type=int, default=300)
    r.add_argument("--batch-size", type=int, default=64)
    r.add_argument("--lr", type=float, default=1e-3)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--skip-bad", action="store_true", help="skip and count bad records instead of stopping")
    r.add_argument("--out", required=True, help="output folder (save_pretrained + reward_model.json)")
    r.set_defaults(func=cmd_reward_model)

    k = sub.add_parser("bench", help="time GRPO steps on a fixed workload, optionally side by side with TRL's GRPOTrainer")
    k.add_argument("--size", default="tiny", help="tiny (4 layers, width 128) or gpt2 (12 layers, width 768)")
    k.add_argument("--prompts", type=int, default=8, help="P prompts per step (default 8)")
    k.add_argument("--group-size", type=int, default=8, help="G completions per prompt (default 8)")
    k.add_argument("--new-tokens", type=int, default=32, help="T tokens per completion, all generated (default 32)")
    k.add_argument("--precision", default="fp32", help="fp32 (default) or bf16, for both implementations")
    k.add_argument("--peer", default=None, help="trl: also run TRL's GRPOTrainer (pip install -e '.[bench]')")
    k.add_argument("--steps", type=int, default=5, help="measured steps per run (default 5)")
    k.add_argument("--warmup", type=int, default=2, help="unmeasured steps at the start of each run (default 2)")
    k.add_argument("--rounds", type=int, default=2, help="runs per implementation, alternating (default 2)")
    k.add_argument("--threads", type=int, default=None, help="torch threads in every run (default: torch's)")
    k.add_argument("--vocab", type=int, default=None, help="pad the vocabulary to this size, e.g. 50257 (GPT-2)")
    k.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    k.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute activations in the backward, in both implementations (TRL's default)")
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--json", action="store_true", help="print exactly one JSON object")
    k.set_defaults(func=cmd_bench)

    s = sub.add_parser("sft", help="train a tiny GPT-2 anchor on a task by supervised fine-tuning")
    s.add_argument("--task", default="addition")
    s.add_argument("--digits", type=int, default=None)
    s.add_argument("--steps", type=int, default=1500)
    s.add_argument("--careless", type=float, default=None,
                   help="fraction of careless teacher answers (addition: forgotten carries); default: the task's (0.6 for addition)")
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--lr", type=float, default=3e-3)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto")
    s.add_argument("--out", default=None, help="output folder (default assets/anchors/<task>)")
    s.set_defaults(func=cmd_sft)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as e:      # bad settings or paths: one clear line, no traceback
        print(f"minigrpo {args.command}: error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:         # the run went non-finite; its last checkpoint is intact
        print(f"minigrpo {args.command}: stopped: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
