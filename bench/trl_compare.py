"""minigrpo side by side with TRL's GRPOTrainer: speed at two sizes and two precisions, and learning.

    make bench-trl                                   # installs the bench extra (TRL) into .venv, runs all
    python bench/trl_compare.py                      # the same, in an environment that has TRL
    python bench/trl_compare.py --only speed --sizes tiny --precisions fp32
    python bench/trl_compare.py --only speed --sizes gpt2 --vocab 50257 --new-tokens 128 --group-size 16 --device cuda
    python bench/trl_compare.py --only learning --seeds 0,1,2,3

Speed: for each size × precision, ``minigrpo.runs.speed.compare`` with TRL as the peer (each run its
own process, runs alternating A B B A, median s/step after warm-up); TRL's worker is
``bench/peer_trl.py``. Learning: ``learning_parity`` below (mean exact-answer reward over the first
50 steps from the shipped addition anchor, per seed). The TRL peer stays here, outside the package:
nothing in ``minigrpo`` imports it.
Prints Markdown tables for bench/RESULTS.md and writes everything to runs/trl-compare.json.
"""
from __future__ import annotations

import importlib.util
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from minigrpo.lm.sft import anchor_dir
from minigrpo.lm.tasks import AdditionTask
from minigrpo.runs.speed import (DIGITS, MINIGRPO_WORKER, PRECISIONS, SIZES, BenchConfig, compare, device_name,
                                 require_bf16, run_isolated, table, workload)

from args import (Parser, choice_list, device, integer, non_negative_int, output_file, positive_int, seed_list,
                  write_text_atomic)

PEER_WORKER = (str(Path(__file__).resolve().parent / "peer_trl.py"),)   # python argv of TRL's worker
WORKERS = {"minigrpo": MINIGRPO_WORKER, "trl": PEER_WORKER}


def peer_available(peer: str | None) -> None:
    """Raise a clear error when the peer's library is not installed."""
    if peer is None:
        return
    if peer not in WORKERS or peer == "minigrpo":
        raise ValueError(f"peer={peer!r} is not allowed; choose 'trl'")
    if importlib.util.find_spec("trl") is None:
        raise ValueError("peer='trl' needs TRL, which is a benchmark-only extra: pip install -e '.[bench]' "
                         "(or `make bench-trl`, which installs it into .venv)")


def learning_parity(seeds=(0, 1, 2, 3), steps: int = 50, peer: str | None = "trl", prompts: int = 16, group_size: int = 8,
                    lr: float = 2e-4, beta: float = 0.04, threads: int | None = None, equal_length: bool = False,
                    progress=None) -> dict:
    """Does speed cost learning? Train from the shipped addition anchor with the exact-answer reward, the
    same settings in minigrpo and in ``peer`` (completions end at EOS here), ``steps`` steps per seed,
    and compare the mean reward over those steps. A seed fixes the prompts, the same in both, so the
    comparison is paired: d_s = mean_minigrpo,s − mean_peer,s. "Within noise" means |mean d| ≤ 2
    standard errors of mean d. ``equal_length``: prompts of one length only (no left padding)."""
    say = progress or (lambda msg: None)
    if peer is not None:
        peer_available(peer)
    model_dir = anchor_dir("addition", {})
    if not (Path(model_dir) / "config.json").exists():
        raise FileNotFoundError(f"the addition anchor {str(model_dir)!r} is missing; it ships with the repository")
    T = AdditionTask(DIGITS).max_answer_len + 1
    impls = ["minigrpo"] + ([peer] if peer else [])
    per_seed = {i: [] for i in impls}
    curves = {i: [] for i in impls}
    for k, seed in enumerate(seeds):
        cfg = BenchConfig(prompts=prompts, group_size=group_size, new_tokens=T, lr=lr, beta=beta, steps=steps,
                          warmup=0, rounds=1, threads=threads, seed=seed)
        work = workload(cfg, model_dir, n_steps=steps, full_length=False, equal_length=equal_length)
        for impl in (impls if k % 2 == 0 else impls[::-1]):
            say(f"seed {seed}: {impl}")
            out = run_isolated(impl, WORKERS[impl], cfg, work)
            curves[impl].append(out["rewards"])
            per_seed[impl].append(statistics.fmean(out["rewards"][:steps]))
    summary = {"seeds": list(seeds), "steps": steps, "prompts": prompts, "group_size": group_size, "lr": lr,
               "beta": beta, "new_tokens": T, "equal_length": equal_length, "per_seed": per_seed, "curves": curves}
    for impl in impls:
        xs = per_seed[impl]
        sd = statistics.stdev(xs) if len(xs) > 1 else float("nan")
        summary[impl] = {"mean": statistics.fmean(xs), "sd": sd, "se": sd / math.sqrt(len(xs))}
    if peer:
        d = [a - b for a, b in zip(per_seed["minigrpo"], per_seed[peer])]
        diff = statistics.fmean(d)
        se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
        summary.update(difference=diff, difference_se=se, within_noise=bool(abs(diff) <= 2 * se))
    return summary

TARGETS = {("tiny", "fp32"): "time ≤ 0.5 × TRL", ("gpt2", "fp32"): "≥ 75 % of the fp32 matmul rate",
           ("gpt2", "bf16"): "time ≤ 0.6 × TRL"}


def verdict(r: dict) -> str:
    c = r["config"]
    key = (c["size"], c["precision"])
    if c.get("gradient_checkpointing"):
        key = ("checkpointing",)
    memory = "memory ≤ TRL: " + ("met" if r["memory_ratio"] <= 1 else "NOT met") + f" ({r['memory_ratio']:.2f})"
    if key == ("tiny", "fp32") or key == ("gpt2", "bf16"):
        limit = 0.5 if key[0] == "tiny" else 0.6
        ok = r["time_ratio"] <= limit
        return f"{TARGETS[key]}: {'met' if ok else 'NOT met'} ({r['time_ratio']:.2f}); {memory}"
    if key == ("gpt2", "fp32"):
        ok = r["matmul_fraction"] >= 0.75
        return f"{TARGETS[key]}: {'met' if ok else 'NOT met'} ({100 * r['matmul_fraction']:.0f} %); {memory}"
    return f"no time target; {memory}"


def speed_configs(args) -> list[BenchConfig]:
    """The speed workloads: every size × precision, and again with gradient checkpointing if asked."""
    jobs = [(size, precision, False) for size in args.sizes for precision in args.precisions]
    if args.checkpointing_too:
        jobs += [(size, precision, True) for size, precision, _ in jobs]
    return [BenchConfig(size=size, precision=precision, rounds=args.rounds, threads=args.threads,
                        prompts=args.prompts, group_size=args.group_size, new_tokens=args.new_tokens,
                        vocab=args.vocab, device=args.device,
                        steps=args.steps or (8 if size == "tiny" else 3),
                        warmup=args.warmup if args.warmup is not None else (2 if size == "tiny" else 1),
                        gradient_checkpointing=checkpointing)
            for size, precision, checkpointing in jobs]


def check(ap: Parser, args) -> None:
    """What the flags ask for together, before any run: the workloads' settings, bf16 on the device, the anchor."""
    if args.only in (None, "speed"):
        try:
            speed_configs(args)
        except ValueError as e:
            ap.error(str(e))
        try:
            if "bf16" in args.precisions:
                require_bf16(args.device)
        except ValueError as e:
            ap.error(f"--precisions {','.join(args.precisions)} --device {args.device}: {e}")
    if args.only in (None, "learning") and not (Path(anchor_dir("addition", {})) / "config.json").exists():
        ap.error(f"the addition anchor {str(anchor_dir('addition', {}))!r} is missing; it ships with the repository")


def main() -> int:
    ap = Parser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["speed", "learning"], default=None)
    ap.add_argument("--sizes", type=choice_list(SIZES), default="tiny,gpt2",
                    help=f"comma-separated, from {list(SIZES)}")
    ap.add_argument("--precisions", type=choice_list(PRECISIONS), default="fp32,bf16",
                    help=f"comma-separated, from {list(PRECISIONS)}")
    ap.add_argument("--rounds", type=positive_int, default=2, help="runs per implementation per workload (default 2)")
    ap.add_argument("--steps", type=positive_int, default=None, help="measured steps per run (default: tiny 8, gpt2 3)")
    ap.add_argument("--warmup", type=non_negative_int, default=None,
                    help="warm-up steps per run (default: tiny 2, gpt2 1)")
    ap.add_argument("--threads", type=positive_int, default=None)
    ap.add_argument("--prompts", type=positive_int, default=8, help="P prompts per step (default 8)")
    ap.add_argument("--group-size", type=integer(2), default=8, help="G completions per prompt (default 8)")
    ap.add_argument("--new-tokens", type=positive_int, default=32, help="T tokens per completion (default 32)")
    ap.add_argument("--vocab", type=integer(15, 1_000_000), default=None, help="pad the vocabulary, e.g. 50257 (GPT-2)")
    ap.add_argument("--device", type=device, default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--checkpointing-too", action="store_true",
                    help="also run every workload with gradient checkpointing in both (TRL's default)")
    ap.add_argument("--seeds", type=seed_list, default="0,1,2,3", help="comma-separated seeds of the learning runs")
    ap.add_argument("--learning-steps", type=positive_int, default=50)
    ap.add_argument("--out", type=output_file, default="runs/trl-compare.json")
    args = ap.parse_args()
    try:
        peer_available("trl")
    except ValueError as e:
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        return 2
    check(ap, args)

    say = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
    report = {"device": device_name(args.device), "torch": torch.__version__, "speed": [], "learning": None}
    import trl

    report["trl"] = trl.__version__
    if args.only in (None, "speed"):
        for cfg in speed_configs(args):
            checkpointing = " with gradient checkpointing" if cfg.gradient_checkpointing else ""
            say(f"speed: {cfg.size} {cfg.precision}{checkpointing}")
            try:
                r = compare(cfg, peers={"trl": PEER_WORKER}, progress=say)
            except ValueError as e:         # e.g. bf16 on a CPU that would emulate it: one line, as the CLI says it
                print(f"{ap.prog}: error: {e}", file=sys.stderr)
                return 2
            r["verdict"] = verdict(r)
            report["speed"].append(r)
        print(f"\n### Speed: minigrpo vs TRL {report['trl']} GRPOTrainer ({report['device']}, torch {report['torch']})\n")
        print(table(report["speed"]))
        print()
        for r in report["speed"]:
            c = r["config"]
            print(f"- {c['size']} {c['precision']}{' checkpointing' if c['gradient_checkpointing'] else ''}: {r['gflop_per_step']:.1f} GFLOP a step, matmul rate "
                  f"{r['matmul_gflops']:.0f} GFLOP/s ({r['bf16_units']}), {r['threads']} threads, per-run medians minigrpo "
                  f"{[round(x, 3) for x in r['s_per_step_runs']]} TRL {[round(x, 3) for x in r['trl']['s_per_step_runs']]}"
                  f" — {r['verdict']}")
    if args.only in (None, "learning"):
        seeds = tuple(args.seeds)
        report["learning"] = {}
        for label, equal in (("mixed prompt lengths (left padding)", False), ("one prompt length (no padding)", True)):
            say(f"learning, {label}: seeds {seeds}, {args.learning_steps} steps")
            res = learning_parity(seeds=seeds, steps=args.learning_steps, threads=args.threads, equal_length=equal,
                                  progress=say)
            report["learning"]["equal_length" if equal else "mixed_length"] = res
            print(f"\n### Learning, {label}: mean exact-answer reward over the first {res['steps']} steps "
                  f"(addition anchor, P×G = {res['prompts']}×{res['group_size']}, lr {res['lr']}, β {res['beta']})\n")
            print("| impl | per seed | mean ± s.e. |\n|---|---|---|")
            for impl in ("minigrpo", "trl"):
                s = res[impl]
                print(f"| {impl} | {', '.join(f'{x:.3f}' for x in res['per_seed'][impl])} | "
                      f"{s['mean']:.3f} ± {s['se']:.3f} |")
            print(f"\npaired difference (minigrpo − TRL, same prompts per seed) {res['difference']:+.4f} ± "
                  f"{res['difference_se']:.4f} (s.e.): {'within noise' if res['within_noise'] else 'NOT within noise'} "
                  "(|d| ≤ 2 s.e.)")
    write_text_atomic(args.out, json.dumps(report, indent=1))
    say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
