"""The guided-reward experiments at full size, with their numbers (for bench/RESULTS.md).

    python bench/guided_rewards.py                 # both: stepwise vs outcome (3 seeds), reward hacking
    python bench/guided_rewards.py --only hacking  # or --only stepwise

Prints a Markdown table per experiment and writes everything to runs/guided-rewards.json.
Runs with one torch thread (tiny models on a shared 2-core CPU run faster that way).
"""
from __future__ import annotations

import json
import platform
import statistics
import time

import torch

from minigrpo.runs.experiments import reward_hacking, stepwise_vs_outcome

from args import Parser, number, positive_int, seed_list, write_text_atomic

RESULTS = "runs/guided-rewards.json"


def stepwise(seeds, steps, target) -> dict:
    res = stepwise_vs_outcome(steps=steps, target=target, seeds=seeds, eval_every=10, eval_size=200,
                              out="runs/stepwise")
    print(f"\n### Stepwise vs outcome reward, chain task (3 ops), target {target:.2f} held-out accuracy\n")
    print("| reward | anchor | accuracy at step 10 / 50 / last | steps to target (per seed) | median |")
    print("|---|---|---|---|---|")
    for label, runs in res["runs"].items():
        at = lambda s: statistics.mean(dict(r["curve"]).get(s, float("nan")) for r in runs)
        hits = [r["steps_to_target"] for r in runs]
        med = statistics.median([h if h is not None else float("inf") for h in hits])
        print(f"| {label} | {runs[0]['anchor_accuracy']:.3f} | {at(10):.3f} / {at(50):.3f} / "
              f"{statistics.mean(r['final_accuracy'] for r in runs):.3f} | {hits} | {med} |")
    return res


def hacking(steps) -> dict:
    settings = {"beta=0.01": {"beta": 0.01}, "beta=0.1": {"beta": 0.1}, "beta=1": {"beta": 1.0},
                "beta=0.01, KL target 0.1": {"beta": 0.01, "kl_target": 0.1, "kl_horizon": 500}}
    res = reward_hacking(settings, steps=steps, out="runs/hacking")
    print(f"\n### Reward hacking: GRPO on the lazy-rater proxy, {steps} steps (first → last 10% of steps)\n")
    print("| setting | proxy reward | true reward (exact answer) | KL at the end | held-out accuracy |")
    print("|---|---|---|---|---|")
    for label, r in res.items():
        print(f"| {label} | {r['proxy'][0]:.3f} → {r['proxy'][1]:.3f} | {r['true'][0]:.3f} → {r['true'][1]:.3f} | "
              f"{r['kl']:.3f} | {r['accuracy'][0]:.2f} → {r['accuracy'][1]:.2f} |")
    return {k: {kk: vv for kk, vv in v.items() if kk != "records"} for k, v in res.items()}


def main():
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=["stepwise", "hacking"])
    p.add_argument("--seeds", type=seed_list, default="0,1,2", help="comma-separated seeds of the stepwise runs")
    p.add_argument("--steps", type=positive_int, default=150)
    p.add_argument("--target", type=number(ge=0, le=1), default=0.9, help="held-out accuracy to reach (0 to 1)")
    args = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    out = {"machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread"}
    if args.only in (None, "stepwise"):
        out["stepwise"] = stepwise(tuple(args.seeds), args.steps, args.target)
    if args.only in (None, "hacking"):
        out["hacking"] = hacking(args.steps)
    out["wall_seconds"] = time.perf_counter() - t0
    write_text_atomic(RESULTS, json.dumps(out, indent=2, default=str))
    print(f"\n{out['wall_seconds']:.0f} s; details in {RESULTS}")


if __name__ == "__main__":
    main()
