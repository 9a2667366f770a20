"""GRPO beside PPO, DPO and offline GRPO on the tiny language-model tasks (issue 14, item 6).

    python bench/methods.py                    # the full bench: 6 methods × 3 seeds × 3 settings (~20 min, 2 cores)
    python bench/methods.py --quick            # a 2–3 minute smoke version (written under runs/, not bench/)
    python bench/methods.py --seeds 0 --settings chain --methods grpo_seed,ppo   # a subset (merged into the file)
    python bench/methods.py --report-only      # tables and plots again from bench/methods.json

Every flag is checked before the first run, and so is every run's ``TrainConfig``; a results file whose runs
of another config a subset would drop is refused. The results file is written whole (a temporary file,
then a rename), and only once a run has succeeded: when every run fails it is left as it was (exit 2).

Every (setting, method, seed) runs in its own subprocess (one torch thread, ``--jobs`` at a time), so
the peak RSS recorded is that run's own (``ru_maxrss`` of the child). Every method trains through
``TrainConfig`` + ``train_lm``; the offline ones (DPO, offline GRPO) sample ``offline_prompts × G``
completions from the anchor before step 1 and score them with the run's own reward, with
``offline_prompts = steps × P`` so that they spend exactly the reward calls an online method spends
over the whole run (``steps × P × G``).

Per run it records, at every evaluation: held-out greedy accuracy, the reward calls spent by then,
the training seconds by then (Σ ``step_seconds`` + ``data_seconds``: sampling, scoring and updates;
evaluation excluded), the KL to the anchor on held-out samples (``eval/kl``) and the held-out greedy
rewards; and the run's peak RSS. Writes ``bench/methods.json`` and ``bench/methods_<setting>.png``
(accuracy vs reward calls and vs seconds, mean over seeds with the min–max band), and
``bench/methods_hacking_tradeoff.png`` (true vs proxy reward), and prints Markdown tables.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from args import (Parser, choice_list, non_negative_float, non_negative_int, output_file, output_folder, positive_float,
                  positive_int, seed_list, write_text_atomic)

ROOT = Path(__file__).resolve().parent.parent

# label → (TrainConfig method, recipe, display name)
METHODS = {
    "grpo_seed": ("grpo", "seed", "seed GRPO"),
    "grpo_deepseek": ("grpo", "deepseek", "DeepSeek GRPO"),
    "rloo": ("grpo", "rloo", "RLOO"),
    "ppo": ("ppo", None, "PPO"),
    "ppo_grpo_lr": ("ppo", None, "PPO at GRPO's lr"),
    "dpo": ("dpo", None, "DPO"),
    "offline_grpo": ("offline_grpo", None, "offline GRPO"),
}
OFFLINE = ("dpo", "offline_grpo")
SETTINGS_OF = {"ppo_grpo_lr": {"lr": 2e-4}}
"""Settings a label changes from the method's defaults: PPO at GRPO's learning rate 2e-4 (its own default
is 5e-5, a quarter: its 4 epochs × 4 minibatches take 16 steps a rollout where GRPO takes one)."""
SETTINGS = {
    "addition": "addition, reward {correct: 1}",
    "chain": "chain (3 ops), reward {correct: 1}",
    "hacking": "addition, reward = the lazy-rater proxy reward model (correct logged with weight 0)",
}
COLORS = {"grpo_seed": "tab:blue", "grpo_deepseek": "tab:cyan", "rloo": "tab:purple", "ppo": "tab:red",
          "ppo_grpo_lr": "tab:orange",
          "dpo": "tab:green", "offline_grpo": "tab:olive"}
EVAL_KEYS = ("test_accuracy", "eval/kl", "eval/greedy/reward", "eval/greedy/correct", "eval/greedy/reward_model",
             "eval/sampled/reward", "eval/sampled/correct", "eval/sampled/reward_model")
TRAIN_KEYS = ("reward", "reward/correct", "reward/reward_model", "kl", "step_seconds")   # per training step


# --- one run, in its own process ---------------------------------------------------------------------

def config_kwargs(job: dict) -> dict:
    """The TrainConfig settings of one (setting, method, seed)."""
    from minigrpo.runs.experiments import PROXY_DIR

    method, recipe, _ = METHODS[job["method"]]
    kw = dict(task="chain" if job["setting"] == "chain" else "addition", method=method, recipe=recipe,
              steps=job["steps"], prompts_per_step=job["P"], group_size=job["G"], beta=job["beta"],
              seed=job["seed"], eval_every=job["eval_every"], eval_size=job["eval_size"],
              eval_samples=job["eval_samples"], save_every=0, stop_after_flat=0, device="cpu",
              out=str(Path(job["run_dir"]).parent))
    if job["setting"] == "hacking":
        kw.update(reward_weights={"reward_model": 1.0, "correct": 0.0}, reward_model=str(PROXY_DIR))
    if job["method"] in OFFLINE:
        kw["offline_prompts"] = job["steps"] * job["P"]      # offline_prompts × G = steps × P × G reward calls
    kw.update(SETTINGS_OF.get(job["method"], {}))
    if job.get("lr") is not None:                           # --lr: one rate for every method
        kw["lr"] = job["lr"]
    return kw


def worker(job: dict) -> dict:
    """Train one run and return its record (called in the child process)."""
    import resource

    import torch

    torch.set_num_threads(1)
    from minigrpo.runs.config import TrainConfig
    from minigrpo.runs.lm_run import train_lm

    run_dir = Path(job["run_dir"])
    if run_dir.exists():
        shutil.rmtree(run_dir)                      # a rerun replaces the bench's own earlier run folder
    out = {k: job[k] for k in ("setting", "method", "seed")}
    t0 = time.perf_counter()
    try:
        cfg = TrainConfig(**config_kwargs(job))
        res = train_lm(cfg, run_dir=run_dir, progress=False)
    except Exception as e:                          # recorded as a result (e.g. DPO without pairs), not a crash
        msg = f"{type(e).__name__}: {e}"
        if "no preference pair" in str(e):
            msg = "no pairs: " + msg
        out.update(error=msg, wall_seconds=time.perf_counter() - t0,
                   peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        return out
    online = job["method"] not in OFFLINE
    per_step = job["P"] * job["G"]
    offline_calls = cfg.offline_prompts * job["G"] if not online else 0
    curve, seconds = [], 0.0
    train = {k: [] for k in ("step",) + TRAIN_KEYS}
    for r in res.metrics:
        t = r["step"]
        if t > 0:
            seconds += r.get("step_seconds", 0.0) + r.get("data_seconds", 0.0)
            train["step"].append(t)
            for k in TRAIN_KEYS:
                train[k].append(r.get(k))
        if "test_accuracy" in r or "eval/greedy/reward" in r:
            calls = t * per_step if online else (offline_calls if t > 0 else 0)
            curve.append({"step": t, "reward_calls": calls, "train_seconds": seconds,
                          **{k: r[k] for k in EVAL_KEYS if k in r}})
    first = res.metrics[1] if len(res.metrics) > 1 else {}
    extra = {}
    if not online:                                  # how much data the anchor samples gave
        name = "pairs.jsonl" if job["method"] == "dpo" else "logged.jsonl"
        path = run_dir / name
        extra["offline_rows"] = sum(1 for _ in path.open()) if path.exists() else None
        extra["offline_rows_kind"] = "preference pairs (best vs worst of a group)" if job["method"] == "dpo" else \
            "logged completions"
        extra["offline_prompts"] = cfg.offline_prompts
    out.update(curve=curve, train=train, data_seconds=first.get("data_seconds", 0.0),
               anchor_accuracy=res.anchor_accuracy, final_accuracy=res.final_accuracy,
               reward_calls=curve[-1]["reward_calls"], train_seconds=seconds,
               wall_seconds=time.perf_counter() - t0,
               peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               recipe=cfg.build_recipe().describe(), updates=cfg.updates, minibatches=cfg.minibatches,
               run_dir=str(run_dir), **extra)
    return out


def run_child(job: dict, log) -> dict:
    """Run ``job`` in a fresh interpreter; its result comes back through a JSON file."""
    out_path = Path(job["run_dir"]).with_suffix(".result.json")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.unlink(missing_ok=True)                # never an earlier run's result
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job), "--worker-out", str(out_path)]
    tic = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=job["timeout"])
    except subprocess.TimeoutExpired:
        proc = None
    if proc is None or proc.returncode != 0 or not out_path.exists():
        res = {k: job[k] for k in ("setting", "method", "seed")}
        if proc is None:
            res["error"] = f"timed out after {job['timeout']} s (--timeout)"
        else:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            res["error"] = f"child exited {proc.returncode}: " + " | ".join(tail)
    else:
        res = json.loads(out_path.read_text())
    res["process_seconds"] = time.perf_counter() - tic
    log(f"{job['setting']:9s} {job['method']:14s} seed {job['seed']}: " +
        (f"acc {res['anchor_accuracy']:.3f} → {res['final_accuracy']:.3f}, train {res['train_seconds']:.1f} s, "
         f"process {res['process_seconds']:.1f} s, peak {res['peak_rss_mb']:.0f} MB" if "error" not in res
         else res["error"]))
    return res


# --- the bench ------------------------------------------------------------------------------------

def machine() -> dict:
    import torch

    cpu = "?"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "minigrpo"], cwd=ROOT, capture_output=True,
                                    text=True).stdout.strip())
    except OSError:
        commit, dirty = "?", None
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads_per_run": 1, "git_commit": commit, "minigrpo_tree_dirty": dirty}


def _rounded(x):
    if isinstance(x, float):
        return x if not math.isfinite(x) else float(f"{x:.4g}")
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_rounded(v) for v in x]
    return x


def dump(doc: dict) -> str:
    """The results as JSON: floats to 4 significant digits, one line per run (a small, diffable file)."""
    head = {k: v for k, v in doc.items() if k != "runs"}
    text = json.dumps(_rounded(head), indent=1, default=str, ensure_ascii=False)[:-2]
    runs = ",\n  ".join(json.dumps(_rounded({**r, "train": {k: v for k, v in r["train"].items() if k in ("step",) + TRAIN_KEYS}}
                                              if "train" in r else r), default=str, ensure_ascii=False)
                         for r in doc["runs"])
    return text + ',\n "runs": [\n  ' + runs + "\n ]\n}\n"


def run_key(r: dict) -> tuple:
    return r["setting"], r["method"], r["seed"]


def common_config(args) -> dict:
    """The settings every run of the bench shares (``config`` in the results file)."""
    return dict(steps=args.steps, P=args.prompts_per_step, G=args.group_size, beta=args.beta,
                eval_every=args.eval_every, eval_size=args.eval_size, eval_samples=args.eval_samples,
                **({"lr": args.lr} if args.lr is not None else {}))   # (absent by default: older results match)


def planned(args) -> list[tuple]:
    """Every (setting, method, seed) the flags ask for."""
    return [(s, m, k) for s in args.settings for m in args.methods for k in args.seeds]


def worth_writing(runs: list[dict]) -> bool:
    """Whether a bench's own runs may replace the results file: at least one of them succeeded."""
    return any("error" not in r for r in runs)


def read_results(p: Parser, path: Path) -> dict:
    """A results file of this bench, refused in one line when it does not read as one."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        p.error(f"--results {str(path)!r} is not a readable JSON file ({e}); it was left as it is")
    runs = doc.get("runs") if isinstance(doc, dict) else None
    if not (isinstance(runs, list) and isinstance(doc.get("config"), dict) and isinstance(doc.get("settings"), dict)
            and all(isinstance(r, dict) and {"setting", "method", "seed"} <= r.keys() for r in runs)):
        p.error(f"--results {str(path)!r} is not a results file of bench/methods.py (no 'config', 'settings' and "
                "'runs'); it was left as it is")
    return doc


def check(p: Parser, args) -> dict | None:
    """Refuse, before any run, what would fail or lose results: an unreadable results file, one whose runs of
    another config the bench would drop, and settings no run's ``TrainConfig`` accepts. Returns the results
    file's contents (None where there is none)."""
    results = Path(args.results)
    if args.report_only:
        if not results.is_file():
            p.error(f"--report-only: no results file {args.results!r}")
        return read_results(p, results)
    old = read_results(p, results) if results.exists() else None
    common = common_config(args)
    if old and old["config"] != common:
        redo = set(planned(args))
        lost = [r for r in old["runs"] if run_key(r) not in redo]
        if lost:
            was = old["config"]
            diff = ", ".join(f"{k} {was.get(k)} → {common.get(k)}" for k in sorted(set(was) | set(common))
                             if was.get(k) != common.get(k))
            p.error(f"--results {args.results!r} holds runs of another config ({diff}); this bench would drop the "
                    f"{len(lost)} of them it does not redo: give --results another file")
    from minigrpo.runs.config import TrainConfig

    for s, m, k in planned(args):
        job = {**common, "setting": s, "method": m, "seed": k, "run_dir": str(Path(args.out) / s / m / f"seed{k}")}
        try:
            TrainConfig(**config_kwargs(job))
        except ValueError as e:
            p.error(f"{m} on {s}, seed {k}: {e}")
    return old


def bench(args, old: dict | None) -> dict:
    """Run every planned (setting, method, seed), merged with ``old``'s other runs of the same config. Writes the
    results file after each run once one has succeeded; exits 2, leaving it as it was, when every run failed."""
    common = common_config(args)
    results_path = Path(args.results)
    keep = []
    if old and old.get("config") == common:         # a subset rerun replaces its own runs and keeps the rest
        done = set(planned(args))
        keep = [r for r in old["runs"] if run_key(r) not in done]
    settings = [s for s in SETTINGS if s in args.settings or any(r["setting"] == s for r in keep)]
    jobs = []
    # longest first (PPO, chain), so the two workers finish together
    order = sorted(planned(args), key=lambda x: (x[1] != "ppo", x[0] != "chain", x[2]))
    for s, m, k in order:
        jobs.append({**common, "setting": s, "method": m, "seed": k, "timeout": args.timeout,
                     "run_dir": str(Path(args.out) / s / m / f"seed{k}")})
    lock = threading.Lock()
    t0 = time.perf_counter()

    def log(msg):
        with lock:
            print(f"[{time.perf_counter() - t0:7.1f} s] {msg}", file=sys.stderr, flush=True)

    doc = {"command": args.command, "date": datetime.datetime.now().isoformat(timespec="seconds"),
           "machine": machine(), "config": common, "jobs": args.jobs,
           "notes": {"reward_calls": "online: step × P × G; dpo/offline_grpo: offline_prompts × G, all spent "
                                     "before step 1 (offline_prompts = steps × P)",
                     "train_seconds": "Σ step_seconds + data_seconds up to that step (sampling, scoring, updates, "
                                      "building offline data); evaluation excluded",
                     "peak_rss_mb": "ru_maxrss of the run's own process (model, anchor, reward model, data)",
                     "eval/kl": "KL(π ‖ anchor) per completion on eval_samples sampled held-out answers"},
           "settings": {s: SETTINGS[s] for s in settings}, "runs": list(keep)}
    write = lambda: write_text_atomic(results_path, dump(doc))
    log(f"{len(jobs)} runs, {args.jobs} at a time → {results_path}")
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for res in pool.map(lambda j: run_child(j, log), jobs):
            with lock:
                doc["runs"].append(res)
                if worth_writing(doc["runs"][len(keep):]):
                    write()
    doc["bench_wall_seconds"] = time.perf_counter() - t0
    new = doc["runs"][len(keep):]
    if not worth_writing(new):
        first = " ".join(str(new[0].get("error")).split())
        kept = "left as it was" if results_path.exists() else "not written"
        print(f"methods.py: error: all {len(new)} runs failed, so {results_path} was {kept}; the first: {first}",
              file=sys.stderr)
        raise SystemExit(2)
    write()
    log(f"done in {doc['bench_wall_seconds'] / 60:.1f} min")
    return doc


# --- summaries, tables, plots ------------------------------------------------------------------------

def _mean(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.mean(xs) if xs else float("nan")


def final(run: dict, key: str):
    vals = [p[key] for p in run["curve"] if key in p]
    return vals[-1] if vals else float("nan")


def first(run: dict, key: str):
    vals = [p[key] for p in run["curve"] if key in p]
    return vals[0] if vals else float("nan")


def worst_dip(run: dict) -> float:
    """The largest fall of held-out accuracy below its best so far (0: never fell)."""
    best, dip = -1.0, 0.0
    for p in run["curve"]:
        a = p.get("test_accuracy")
        if a is None:
            continue
        best = max(best, a)
        dip = max(dip, best - a)
    return dip


def reach(run: dict, target: float):
    """(reward calls, train seconds) at the first evaluation with accuracy ≥ target, or None."""
    for p in run["curve"]:
        if p["step"] > 0 and p.get("test_accuracy", -1) >= target:
            return p["reward_calls"], p["train_seconds"]
    return None


def summarise(doc: dict) -> dict:
    """Per setting and method: the seeds' numbers and their mean / min / max."""
    out = {}
    for s in doc["settings"]:
        runs = [r for r in doc["runs"] if r["setting"] == s]
        ok = [r for r in runs if "error" not in r]
        if not runs:
            continue
        anchor = _mean([r["anchor_accuracy"] for r in ok])
        best_final = max((_mean([r["final_accuracy"] for r in ok if r["method"] == m]) for m in METHODS
                          if any(r["method"] == m for r in ok)), default=float("nan"))
        target = anchor + 0.75 * (best_final - anchor) if best_final > anchor else None
        rows = {}
        for m in METHODS:
            mr = [r for r in runs if r["method"] == m]
            if not mr:
                continue
            good = [r for r in mr if "error" not in r]
            row = {"seeds": [r["seed"] for r in mr], "errors": [r["error"] for r in mr if "error" in r]}
            if good:
                fa = [r["final_accuracy"] for r in good]
                row.update(anchor=_mean([r["anchor_accuracy"] for r in good]), final=_mean(fa), final_min=min(fa),
                           final_max=max(fa), final_sd=statistics.stdev(fa) if len(fa) > 1 else 0.0,
                           calls=_mean([r["reward_calls"] for r in good]),
                           seconds=_mean([r["train_seconds"] for r in good]),
                           seconds_min=min(r["train_seconds"] for r in good),
                           seconds_max=max(r["train_seconds"] for r in good),
                           kl=_mean([final(r, "eval/kl") for r in good]),
                           kl_max=max(final(r, "eval/kl") for r in good),
                           rss=max(r["peak_rss_mb"] for r in good),
                           dip=_mean([worst_dip(r) for r in good]),
                           best=_mean([max(p["test_accuracy"] for p in r["curve"] if "test_accuracy" in p)
                                       for r in good]),
                           proxy=(_mean([first(r, "eval/greedy/reward_model") for r in good]),
                                  _mean([final(r, "eval/greedy/reward_model") for r in good])),
                           true=(_mean([first(r, "eval/greedy/correct") for r in good]),
                                 _mean([final(r, "eval/greedy/correct") for r in good])),
                           true_min=min(final(r, "eval/greedy/correct") for r in good),
                           true_max=max(final(r, "eval/greedy/correct") for r in good),
                           sampled_true=(_mean([first(r, "eval/sampled/correct") for r in good]),
                                         _mean([final(r, "eval/sampled/correct") for r in good])),
                           offline_rows=_mean([r.get("offline_rows") for r in good]) if m in OFFLINE else None)
                if target is not None:
                    hits = [reach(r, target) for r in good]
                    got = [h for h in hits if h is not None]
                    row["target_hits"] = len(got)
                    row["calls_to_target"] = statistics.median(h[0] for h in got) if got else None
                    row["seconds_to_target"] = statistics.median(h[1] for h in got) if got else None
            rows[m] = row
        out[s] = {"target": target, "methods": rows}
    return out


def markdown(doc: dict, summary: dict) -> str:
    lines = []
    c = doc["config"]
    for s, summ in summary.items():
        rows = summ["methods"]
        tgt = summ["target"]
        lines += ["", f"### {s}: {doc['settings'][s]}", ""]
        lines += [f"| method | anchor acc | final acc: mean ± sd (min–max) | best acc on the way | worst dip | reward calls | "
                  f"calls / train s to acc ≥ {tgt:.3f} (median; seeds that got there) | train s (min–max) | "
                  f"final KL to anchor (max) | peak RSS MB |" if tgt is not None else
                  "| method | anchor acc | final acc: mean ± sd (min–max) | best acc on the way | worst dip | reward calls | "
                  "to target | train s (min–max) | final KL to anchor (max) | peak RSS MB |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for m, r in rows.items():
            name = METHODS[m][2]
            if "final" not in r:
                lines.append(f"| {name} | — | {'; '.join(r['errors'])[:200]} | | | | | | | |")
                continue
            err = f" ({len(r['errors'])} failed: {r['errors'][0][:80]})" if r["errors"] else ""
            hit = "—"
            if r.get("target_hits"):
                hit = f"{r['calls_to_target']:.0f} / {r['seconds_to_target']:.1f} s ({r['target_hits']}/{len(r['seeds']) - len(r['errors'])})"
            elif tgt is not None:
                hit = f"not reached (0/{len(r['seeds']) - len(r['errors'])})"
            lines.append(f"| {name} | {r['anchor']:.3f} | {r['final']:.3f} ± {r['final_sd']:.3f} "
                         f"({r['final_min']:.3f}–{r['final_max']:.3f}){err} | {r['best']:.3f} | {r['dip']:.3f} | {r['calls']:.0f} | {hit} | "
                         f"{r['seconds']:.1f} ({r['seconds_min']:.1f}–{r['seconds_max']:.1f}) | "
                         f"{r['kl']:.3f} ({r['kl_max']:.3f}) | {r['rss']:.0f} |")
        if s == "hacking":
            lines += ["", "Held-out greedy rewards, anchor (step 0) → last evaluation, mean over seeds; true reward "
                          "= exact answer (weight 0, never trained); KL at the last evaluation.", "",
                      "| method | proxy reward | true reward, greedy (min–max at the end) | true reward, sampled | "
                      "final KL to anchor |", "|---|---|---|---|---|"]
            for m, r in rows.items():
                if "final" not in r:
                    continue
                lines.append(f"| {METHODS[m][2]} | {r['proxy'][0]:.3f} → {r['proxy'][1]:.3f} | "
                             f"{r['true'][0]:.3f} → {r['true'][1]:.3f} ({r['true_min']:.3f}–{r['true_max']:.3f}) | "
                             f"{r['sampled_true'][0]:.3f} → {r['sampled_true'][1]:.3f} | {r['kl']:.3f} |")
        offline = {m: r for m, r in rows.items() if r.get("offline_rows") is not None}
        if offline:
            lines += ["", "Offline data: " + "; ".join(
                f"{METHODS[m][2]} {r['offline_rows']:.0f} {'pairs' if m == 'dpo' else 'logged completions'} "
                f"from {c['steps'] * c['P']} prompts × {c['G']} anchor samples" for m, r in offline.items()) + "."]
    return "\n".join(lines)


def band(runs: list, xkey: str, ykey: str):
    """Mean over seeds and the min–max band, on the evaluation steps the runs share."""
    steps = sorted(set.intersection(*(set(p["step"] for p in r["curve"] if ykey in p) for r in runs)))
    xs, ys, lo, hi = [], [], [], []
    for t in steps:
        pts = [next(p for p in r["curve"] if p["step"] == t) for r in runs]
        xs.append(statistics.mean(p[xkey] for p in pts))
        vals = [p[ykey] for p in pts]
        ys.append(statistics.mean(vals))
        lo.append(min(vals))
        hi.append(max(vals))
    return xs, ys, lo, hi


def plot(doc: dict, plot_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir.mkdir(parents=True, exist_ok=True)
    made = []
    c = doc["config"]
    for s in doc["settings"]:
        runs = [r for r in doc["runs"] if r["setting"] == s and "error" not in r]
        if not runs:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        ylabel = "held-out greedy accuracy" + (" (= true reward)" if s == "hacking" else "")
        for ax, xkey, xlabel in ((axes[0], "reward_calls", "reward calls"),
                                 (axes[1], "train_seconds", "training seconds (evaluation excluded)")):
            for m in METHODS:
                mr = [r for r in runs if r["method"] == m]
                if not mr:
                    continue
                xs, ys, lo, hi = band(mr, xkey, "test_accuracy")
                if m in OFFLINE and len(xs) > 1:      # offline: the anchor's accuracy while the data is built
                    at = statistics.mean(r["data_seconds"] for r in mr) if xkey == "train_seconds" else xs[1]
                    xs, ys, lo, hi = ([v[0], w] + v[1:] for v, w in ((xs, at), (ys, ys[0]), (lo, lo[0]), (hi, hi[0])))
                style = "--" if m in OFFLINE else "-"
                ax.plot(xs, ys, style, marker="o", ms=3, color=COLORS[m], label=f"{METHODS[m][2]} (n={len(mr)})")
                ax.fill_between(xs, lo, hi, color=COLORS[m], alpha=0.12, lw=0)
            if xkey == "train_seconds":             # PPO takes ~10× the seconds: a log axis keeps GRPO's curve readable
                ax.set_xscale("symlog", linthresh=1.0)
            ax.set_xlabel(xlabel + (" (symlog)" if xkey == "train_seconds" else ""))
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8, loc="best")
        fig.suptitle(f"{s}: {doc['settings'][s]} — P={c['P']}, G={c['G']}, {c['steps']} steps, β={c['beta']}; "
                     "mean over seeds, band min–max; offline methods dashed (all calls before step 1)", fontsize=8.5)
        fig.tight_layout()
        path = plot_dir / f"methods_{s}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        made.append(path)
    runs = [r for r in doc["runs"] if r["setting"] == "hacking" and "error" not in r]
    if runs:
        fig, ax = plt.subplots(figsize=(6.5, 4.8))
        for m in METHODS:
            mr = [r for r in runs if r["method"] == m]
            if not mr:
                continue
            xs, ys, _, _ = band(mr, "eval/greedy/reward_model", "eval/greedy/correct")
            ax.plot(xs, ys, "--" if m in OFFLINE else "-", marker="o", ms=3, color=COLORS[m], label=METHODS[m][2])
            ax.plot(xs[-1:], ys[-1:], marker="s", ms=7, color=COLORS[m])
            for r in mr:                              # each seed's end point
                ax.plot([final(r, "eval/greedy/reward_model")], [final(r, "eval/greedy/correct")], marker="x", ms=5,
                        color=COLORS[m], alpha=0.6)
        a = runs[0]
        ax.plot([first(a, "eval/greedy/reward_model")], [first(a, "eval/greedy/correct")], marker="*", ms=14,
                color="black", label="anchor", ls="")
        ax.set_xlabel("proxy reward (held-out greedy, reward model)")
        ax.set_ylabel("true reward (held-out greedy, exact answer)")
        ax.set_title(f"reward hacking, β={c['beta']}: path over training (mean over seeds; ■ end, × each seed)",
                     fontsize=8.5)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = plot_dir / "methods_hacking_tradeoff.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        made.append(path)
    return made


def main():
    command = "python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
    os.chdir(ROOT)                                  # paths on the command line are relative to the repository
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke version: 8 steps, seed 0, eval_size 50 (~2 min)")
    p.add_argument("--seeds", type=seed_list, default=None, help="comma-separated seeds (default 0,1,2; --quick: 0)")
    p.add_argument("--settings", type=choice_list(SETTINGS), default=",".join(SETTINGS),
                   help=f"comma-separated, from {list(SETTINGS)}")
    p.add_argument("--methods", type=choice_list(METHODS), default=",".join(METHODS),
                   help=f"comma-separated, from {list(METHODS)}")
    p.add_argument("--steps", type=positive_int, default=None, help="training steps (default 60; --quick: 8)")
    p.add_argument("--prompts-per-step", type=positive_int, default=16)
    p.add_argument("--group-size", type=positive_int, default=8)
    p.add_argument("--beta", type=non_negative_float, default=0.05,
                   help="one β for every method (DPO's β, the KL coefficient)")
    p.add_argument("--lr", type=positive_float, default=None, help="one learning rate for every method (default: "
                   "each method's own, 2e-4; PPO 5e-5)")
    p.add_argument("--eval-every", type=positive_int, default=None, help="default 5; --quick: 4")
    p.add_argument("--eval-size", type=positive_int, default=None, help="held-out prompts (default 200; --quick: 50)")
    p.add_argument("--eval-samples", type=non_negative_int, default=4)
    p.add_argument("--jobs", type=positive_int, default=2, help="runs at a time (each one torch thread)")
    p.add_argument("--timeout", type=positive_int, default=1800, help="seconds before a run's process is killed")
    p.add_argument("--out", type=output_folder, default=None,
                   help="parent of the run folders (default runs/methods-bench[-quick])")
    p.add_argument("--results", type=output_file, default=None,
                   help="the JSON written (default bench/methods.json; --quick: under --out)")
    p.add_argument("--plots", type=output_folder, default=None,
                   help="folder of the PNGs (default bench/; --quick: --out)")
    p.add_argument("--report-only", action="store_true", help="no runs: tables and plots from --results")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        res = worker(json.loads(args.worker))
        Path(args.worker_out).write_text(json.dumps(res, default=str))
        return
    q = args.quick
    args.seeds = args.seeds or ([0] if q else [0, 1, 2])
    args.steps = args.steps or (8 if q else 60)
    args.eval_every = args.eval_every or (4 if q else 5)
    args.eval_size = args.eval_size or (50 if q else 200)
    args.out = args.out or ("runs/methods-bench-quick" if q else "runs/methods-bench")
    args.results = args.results or (str(Path(args.out) / "methods.json") if q else "bench/methods.json")
    args.plots = args.plots or (args.out if q else "bench")
    args.command = command
    old = check(p, args)
    doc = old if args.report_only else bench(args, old)
    summary = summarise(doc)
    doc["summary"] = summary
    write_text_atomic(args.results, dump(doc))   # with the summary
    for path in plot(doc, Path(args.plots)):
        print(f"wrote {path}", file=sys.stderr)
    m = doc["machine"]
    print(f"Command: `{doc['command']}`; {m['cpu']}, {m['cores']} cores, torch {m['torch']}, 1 thread a run, "
          f"{doc['jobs']} runs at a time; {doc['date']}"
          + (f"; bench wall {doc['bench_wall_seconds'] / 60:.1f} min" if "bench_wall_seconds" in doc else ""))
    print(markdown(doc, summary))


if __name__ == "__main__":
    main()
