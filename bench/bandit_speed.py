"""Bandit speed: is the interactive layer fast enough for a widget to redraw while a slider moves?

Targets (issue 2): 2,000 GRPO steps with G = 16 on a 10-arm bandit in < 0.25 s on one CPU core,
and 20 β values trained side by side (for the reward–KL frontier) in < 1 s.

Measured side by side in one process, alternating, median of --repeats:
  minigrpo      run_bandit (the package's grpo_step: hand-written ∂L/∂logp, closed-form tabular gradient, LeanAdam)
  plain torch   the same maths as a textbook loop: autograd backward + torch.optim.Adam
  sweep         sweep_beta with 20 β values (one tabular row per β)

Usage:  python bench/bandit_speed.py [--repeats 7] [--json]
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time

import torch

from minigrpo.bandit.config import BanditConfig

from minigrpo.bandit.runner import run_bandit, sweep_beta

from args import Parser, positive_int

K, G, STEPS, BETA = 10, 16, 2000, 0.1
MEANS = [0.05 + 0.1 * k for k in range(K)]


def plain_torch_loop(steps=STEPS, seed=0) -> float:
    """The reference: the per-step loop a learner would write first (autograd + torch.optim.Adam)."""
    g = torch.Generator().manual_seed(seed)
    anchor_logp = torch.log_softmax(torch.linspace(0, -1, K), -1)
    means = torch.tensor(MEANS)
    theta = anchor_logp.clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=0.05)
    t0 = time.perf_counter()
    for _ in range(steps):
        with torch.no_grad():
            logp_all = torch.log_softmax(theta, -1)
            y = torch.multinomial(logp_all.exp(), G, replacement=True, generator=g)      # (G,)
            logp_old = logp_all[y]
            r = torch.bernoulli(means[y], generator=g)
            R = r - BETA * (logp_old - anchor_logp[y])                                     # KL in the reward
            A = R - R.mean()                                                               # group mean
        logp = torch.log_softmax(theta, -1)[y]
        loss = -(torch.exp(logp - logp_old) * A).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def minigrpo_run(seed=0) -> float:
    cfg = BanditConfig(means=MEANS, beta=BETA, steps=STEPS, group_size=G, lr=0.05, seed=seed)
    return run_bandit(cfg).wall_seconds


def minigrpo_sweep(seed=0) -> float:
    cfg = BanditConfig(means=MEANS, beta=BETA, steps=STEPS, group_size=G, lr=0.05, seed=seed)
    return sweep_beta(cfg, [0.02 * 1.3 ** i for i in range(20)]).wall_seconds


def main():
    ap = Parser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=positive_int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})     # one core
    fns = {"minigrpo run (2000 steps)": minigrpo_run, "plain torch loop (2000 steps)": plain_torch_loop,
           "minigrpo sweep, 20 betas (2000 steps)": minigrpo_sweep}
    for fn in fns.values():       # warm-up
        fn()
    times = {name: [] for name in fns}
    for i in range(args.repeats):  # alternate so drift on a shared machine hits all alike
        for name, fn in fns.items():
            times[name].append(fn(seed=i))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    run, plain, sweep = med.values()
    result = {
        "machine": f"{platform.processor() or platform.machine()}, 1 thread pinned to one core, torch {torch.__version__}",
        "median_seconds": med,
        "all_seconds": times,
        "us_per_step": {"minigrpo": 1e6 * run / STEPS, "plain torch": 1e6 * plain / STEPS},
        "speedup_vs_plain": plain / run,
        "targets": {"run < 0.25 s": run < 0.25, "sweep < 1 s": sweep < 1.0},
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"bandit speed: K={K} arms, G={G}, {STEPS} steps, median of {args.repeats} (alternating), {result['machine']}")
    print(f"{'':42s} {'median s':>9s} {'us/step':>8s}")
    for name, m in med.items():
        print(f"{name:42s} {m:9.3f} {1e6 * m / STEPS:8.1f}")
    print(f"minigrpo vs plain torch loop: {plain / run:.2f}x faster")
    print(f"targets: single run < 0.25 s: {'met' if run < 0.25 else 'NOT met'} ({run:.3f} s); "
          f"20-beta sweep < 1 s: {'met' if sweep < 1 else 'NOT met'} ({sweep:.3f} s)")


if __name__ == "__main__":
    main()
