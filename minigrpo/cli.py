"""The ``minigrpo`` command line: ``minigrpo demo`` and ``minigrpo bandit``."""
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
    from .bandit import BanditConfig

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
    from .bandit import run_bandit

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
    from .demo import run_demo

    run_demo(out=args.out, small=args.small)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .bandit import BASELINE_CHOICES

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
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:      # bad settings: one clear line, no traceback
        print(f"minigrpo {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
