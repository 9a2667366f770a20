"""minigrpo side by side with TRL's GRPOTrainer: speed at two sizes and two precisions, and learning.

    make bench-trl                                   # installs the bench extra (TRL) into .venv, runs all
    python bench/trl_compare.py                      # the same, in an environment that has TRL
    python bench/trl_compare.py --only speed --sizes tiny --precisions fp32
    python bench/trl_compare.py --only learning --seeds 0,1,2,3

Speed: for each size × precision, ``minigrpo.runs.speed.compare`` (each run its own process, runs
alternating A B B A, median s/step after warm-up). Learning: ``minigrpo.runs.speed.learning_parity``
(mean exact-answer reward over the first 50 steps from the shipped addition anchor, per seed).
Prints Markdown tables for bench/RESULTS.md and writes everything to runs/trl-compare.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from minigrpo.runs.speed import BenchConfig, compare, device_name, learning_parity, table

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["speed", "learning"], default=None)
    ap.add_argument("--sizes", default="tiny,gpt2")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--rounds", type=int, default=2, help="runs per implementation per workload (default 2)")
    ap.add_argument("--steps", type=int, default=None, help="measured steps per run (default: tiny 8, gpt2 3)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps per run (default: tiny 2, gpt2 1)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--checkpointing-too", action="store_true",
                    help="also run the gpt2 workloads with gradient checkpointing in both (TRL's default)")
    ap.add_argument("--seeds", default="0,1,2,3")
    ap.add_argument("--learning-steps", type=int, default=50)
    ap.add_argument("--out", default="runs/trl-compare.json")
    args = ap.parse_args()

    say = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
    report = {"device": device_name("cpu"), "torch": torch.__version__, "speed": [], "learning": None}
    try:
        import trl

        report["trl"] = trl.__version__
    except ImportError:
        print("TRL is not installed: pip install -e '.[bench]' (or make bench-trl)", file=sys.stderr)
        return 2
    if args.only in (None, "speed"):
        jobs = [(size, precision, False) for size in args.sizes.split(",") for precision in args.precisions.split(",")]
        if args.checkpointing_too:
            jobs += [(size, precision, True) for size, precision, _ in jobs if size == "gpt2"]
        for size, precision, checkpointing in jobs:
            cfg = BenchConfig(size=size, precision=precision, rounds=args.rounds, threads=args.threads,
                              steps=args.steps or (8 if size == "tiny" else 3),
                              warmup=args.warmup if args.warmup is not None else (2 if size == "tiny" else 1),
                              gradient_checkpointing=checkpointing)
            say(f"speed: {size} {precision}" + (" with gradient checkpointing" if checkpointing else ""))
            r = compare(cfg, peer="trl", progress=say)
            r["verdict"] = verdict(r)
            report["speed"].append(r)
        print(f"\n### Speed: minigrpo vs TRL {report['trl']} GRPOTrainer ({report['device']}, torch {report['torch']})\n")
        print(table(report["speed"]))
        print()
        for r in report["speed"]:
            c = r["config"]
            print(f"- {c['size']} {c['precision']}{' checkpointing' if c['gradient_checkpointing'] else ''}: {r['gflop_per_step']:.1f} GFLOP a step, matmul rate "
                  f"{r['matmul_gflops']:.0f} GFLOP/s, {r['threads']} threads, per-run medians minigrpo "
                  f"{[round(x, 3) for x in r['s_per_step_runs']]} TRL {[round(x, 3) for x in r['trl']['s_per_step_runs']]}"
                  f" — {r['verdict']}")
    if args.only in (None, "learning"):
        seeds = tuple(int(s) for s in args.seeds.split(","))
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
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
