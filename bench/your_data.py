"""A training step on your data with a Python reward function, against the same step on the built-in task.

Both runs train the shipped tiny addition anchor on addition prompts with the exact-answer reward:

* built-in: ``TrainConfig(task="addition")`` — problems drawn by the task, the ``correct`` check;
* your data: the same task written out as a JSONL file (``Task.dataset``), read with 🤗 datasets,
  scored by a TRL-style ``exact(prompts, completions, answer, **kwargs)`` in a reward file.

Runs alternate (A B B A …) in one process, each a fresh ``train_lm``; the figure is the median
``step_seconds`` (sampling, reward, anchor, update; evaluation excluded) over all steps after the
first two of each run, pooled, and the median of the per-round ratios (robust to a noisy
neighbour slowing one run). Target (issue 13): your data costs ≤ 10 % more per step.

    python bench/your_data.py [--rounds 2] [--steps 30] [--prompts 16] [--group-size 8] [--threads 1]
"""
from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from args import Parser, integer, positive_int

REWARD_FILE = '''
def exact(prompts, completions, answer, **kwargs):
    return [float(c.strip() == str(a).strip()) for c, a in zip(completions, answer)]
'''


def run(cfg) -> list[float]:
    from minigrpo.runs.lm_run import train_lm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train_lm(cfg, progress=False)
    return [r["step_seconds"] for r in result.metrics if "step_seconds" in r][2:]


def main(argv=None) -> int:
    ap = Parser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=positive_int, default=2)
    ap.add_argument("--steps", type=integer(3), default=30, help="steps per run (the first 2 are not timed)")
    ap.add_argument("--prompts", type=positive_int, default=16)
    ap.add_argument("--group-size", type=integer(2), default=8, help="G (the group baseline needs 2)")
    ap.add_argument("--threads", type=positive_int, default=1,
                    help="torch threads (1: a tiny model gains nothing from more, and spinning threads on a shared "
                         "machine's busy cores make steps many times slower)")
    args = ap.parse_args(argv)

    from minigrpo.assets import asset_path
    from minigrpo.lm.tasks import make_task
    from minigrpo.runs.config import TrainConfig

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-your-data-"))
    task = make_task("addition")
    task.dataset(4000, seed=1).to_json(str(work / "addition.jsonl"))
    (work / "rewards.py").write_text(REWARD_FILE)
    common = dict(model=str(asset_path("anchors") / "addition"), steps=args.steps, prompts_per_step=args.prompts,
                  group_size=args.group_size, eval_every=10 ** 6, eval_size=8, eval_samples=0, save_every=0,
                  stop_after_flat=0, out=str(work / "runs"), device="cpu")
    try:
        configs = {"built-in task": TrainConfig(task="addition", **common),
                   "your data + Python reward": TrainConfig(data=str(work / "addition.jsonl"), test_fraction=0,
                                                            reward_fns={f"{work}/rewards.py:exact": 1.0},
                                                            max_new_tokens=task.max_answer_len + 1, **common)}
    except ValueError as e:
        ap.error(str(e))
    try:
        return measure(configs, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)         # the data, the reward file and the run folders


def measure(configs: dict, args) -> int:
    names = list(configs)
    times = {name: [] for name in names}
    per_round = {name: [] for name in names}
    t0 = time.perf_counter()
    for r in range(args.rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            took = run(configs[name])
            times[name] += took
            per_round[name].append(statistics.median(took))
            print(f"[bench] round {r + 1}: {name}: median {statistics.median(took):.4f} s/step", file=sys.stderr,
                  flush=True)
    base = statistics.median(times[names[0]])
    print(f"| workload | median s/step | vs built-in |\n|---|---|---|")
    for name in names:
        med = statistics.median(times[name])
        print(f"| {name} | {med:.4f} | {med / base:.3f} |")
    ratios = sorted(d / b for d, b in zip(per_round[names[1]], per_round[names[0]]))
    print(f"\nper round, your data / built-in: median {statistics.median(ratios):.3f} "
          f"(rounds: {', '.join(f'{x:.3f}' for x in ratios)})")
    print(f"\n{args.rounds} rounds × {args.steps} steps each (first 2 of each run dropped), P×G = {args.prompts}×"
          f"{args.group_size}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{time.perf_counter() - t0:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
