"""Soak: does memory stay flat over a long run? (issue 6)

Runs 1,000+ GRPO steps of the shipped tiny addition model — the trainer's own pieces: ``grpo_step``,
the task reward, AdamW, gradient clipping — and samples the process's resident memory (VmRSS from
/proc/self/status; the peak from ``resource`` where /proc is missing) and the number of live tensors
every ``--every`` steps. After ``--warmup`` steps (allocator pools and caches filling up) it fits a
least-squares line to RSS against step and reports the slope in MiB per 1,000 steps. Before each
sample, freed heap pages are handed back to the OS, so RSS tracks live memory to ~0.1 MiB. A leak of
one float32 P × G × T tensor per step (16 × 8 × 4 at the defaults, 2 KiB) would show as 2 MiB /
1,000 steps; of one step's activations, hundreds.

A benchmark, not a test: a few minutes on one CPU core.

Usage:  python bench/soak.py [--steps 1200] [--warmup 200] [--every 25] [--max-slope 1.0] [--json]
        python bench/soak.py --inject-leak    # the same, keeping 2 KiB a step: it must say GROWING
"""
from __future__ import annotations

import gc
import json
import os
import platform
import time
import warnings

import torch

from args import SEED_MAX, Parser, integer, non_negative_float, non_negative_int, positive_int


def rss_mib() -> float:
    """Resident set size now (Linux), else the peak so far."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if platform.system() == "Darwin" else 1024)


def live_tensors() -> int:
    with warnings.catch_warnings():                 # isinstance() on torch's deprecated module attributes warns
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``), so RSS measures
    what is live rather than what the allocator keeps cached; without it RSS jitters by a few MiB."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def slope_per_1000(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of (step, MiB), in MiB per 1,000 steps."""
    n = len(points)
    mx = sum(s for s, _ in points) / n
    my = sum(m for _, m in points) / n
    sxx = sum((s - mx) ** 2 for s, _ in points)
    return 1000 * sum((s - mx) * (m - my) for s, m in points) / sxx if sxx else 0.0


def main() -> int:
    ap = Parser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=positive_int, default=1200)
    ap.add_argument("--warmup", type=non_negative_int, default=200, help="steps left out of the slope")
    ap.add_argument("--every", type=positive_int, default=25, help="sample memory every N steps")
    ap.add_argument("--prompts", type=positive_int, default=16, help="P prompts per step (TrainConfig default)")
    ap.add_argument("--group-size", type=integer(2), default=8,
                    help="G completions per prompt (TrainConfig default; the group baseline needs 2)")
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--seed", type=integer(0, SEED_MAX), default=0, help="seeds the prompts (and seed + 1 sampling)")
    ap.add_argument("--max-slope", type=non_negative_float, default=1.0, help="verdict threshold, MiB per 1,000 steps")
    ap.add_argument("--json", action="store_true", help="print one JSON object at the end")
    ap.add_argument("--inject-leak", action="store_true",
                    help="keep every step's rollout log-probs (P × G × T), to check that the soak detects a leak")
    args = ap.parse_args()
    if not args.steps > args.warmup + 2 * args.every:
        ap.error(f"need --steps > --warmup + 2·--every, so the slope has at least three points; got --steps "
                 f"{args.steps}, --warmup {args.warmup}, --every {args.every}")
    torch.set_num_threads(args.threads)

    from minigrpo.rewards.checks import task_reward
    from minigrpo.core.kl import parse_kl
    from minigrpo.lm.policy import CausalLMPolicy
    from minigrpo.lm.models import load_causal_lm
    from minigrpo.core.recipe import replace, seed_grpo
    from minigrpo.lm.sft import anchor_dir
    from minigrpo.lm.tasks import make_task
    from minigrpo.lm.tokens import encode_prompts
    from minigrpo.core.step import grpo_step

    task = make_task("addition")
    model, tok = load_causal_lm(anchor_dir("addition"))
    anchor_model, _ = load_causal_lm(anchor_dir("addition"))
    policy = CausalLMPolicy(model, tok.pad_token_id)
    anchor = CausalLMPolicy(anchor_model, tok.pad_token_id)
    anchor.requires_grad_(False)
    reward = task_reward(task, tok, {"correct": 1.0, "format": 0.1})
    recipe = replace(seed_grpo(), kl=parse_kl("reward:k1"))
    opt = torch.optim.AdamW(policy.parameters(), lr=2e-4, weight_decay=0.0)
    data_gen = torch.Generator().manual_seed(args.seed)
    sample_gen = torch.Generator().manual_seed(args.seed + 1)
    T = task.max_answer_len + 1

    samples: list[dict] = []
    kept = []                                           # --inject-leak only
    t0 = time.perf_counter()
    for t in range(1, args.steps + 1):
        problems = task.sample(args.prompts, "train", data_gen)
        prompts = encode_prompts(tok, [p.prompt for p in problems])                     # (P, L)
        step = grpo_step(policy, anchor, prompts, reward, recipe, 0.02, opt, args.group_size, generator=sample_gen,
                         max_grad_norm=1.0, max_new_tokens=T, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)
        metrics = step.metrics()                        # what the trainer logs each step, so it is soaked too
        if args.inject_leak:
            kept.append(step.rollout.logp.clone())
        del step
        if t % args.every == 0 or t == 1:
            release_free_memory()
            s = {"step": t, "rss_mib": round(rss_mib(), 2), "live_tensors": live_tensors(),
                 "seconds": round(time.perf_counter() - t0, 1), "reward": round(metrics["reward"], 3)}
            samples.append(s)
            if not args.json:
                print(f"step {t:5d}  RSS {s['rss_mib']:8.1f} MiB  live tensors {s['live_tensors']:5d}  "
                      f"reward {s['reward']:.3f}  {s['seconds']:7.1f} s", flush=True)
    wall = time.perf_counter() - t0

    after = [(s["step"], s["rss_mib"]) for s in samples if s["step"] >= args.warmup]
    slope = slope_per_1000(after)
    rss_after = [m for _, m in after]
    summary = {
        "steps": args.steps, "prompts": args.prompts, "group_size": args.group_size, "threads": args.threads,
        "seconds_per_step": wall / args.steps, "wall_seconds": wall,
        "rss_start_mib": samples[0]["rss_mib"], "rss_at_warmup_mib": after[0][1], "rss_end_mib": samples[-1]["rss_mib"],
        "rss_min_after_warmup_mib": min(rss_after), "rss_max_after_warmup_mib": max(rss_after),
        "slope_mib_per_1000_steps": slope,
        "live_tensors_at_warmup": next(s["live_tensors"] for s in samples if s["step"] >= args.warmup),
        "live_tensors_end": samples[-1]["live_tensors"],
        "verdict": "flat" if abs(slope) <= args.max_slope else "GROWING",
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip() + f", {os.cpu_count()} cores",
        "torch": torch.__version__, "python": platform.python_version(), "samples": samples,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"\n{args.steps} steps in {wall:.0f} s ({1000 * wall / args.steps:.0f} ms/step, {args.threads} thread(s))")
        print(f"RSS: {summary['rss_start_mib']:.1f} MiB at step 1, {summary['rss_at_warmup_mib']:.1f} at step "
              f"{after[0][0]} (end of warm-up), {summary['rss_end_mib']:.1f} at step {args.steps}; "
              f"range after warm-up {min(rss_after):.1f}–{max(rss_after):.1f}")
        print(f"slope after warm-up: {slope:+.3f} MiB / 1,000 steps; live tensors {summary['live_tensors_at_warmup']}"
              f" → {summary['live_tensors_end']}")
        print(f"verdict: {summary['verdict']} (threshold ±{args.max_slope} MiB / 1,000 steps)")
    return 0 if summary["verdict"] == "flat" else 1


if __name__ == "__main__":
    raise SystemExit(main())
