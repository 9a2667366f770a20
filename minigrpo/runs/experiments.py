"""Two measured experiments with guided rewards, each a function that returns its own numbers.

``reward_hacking``
    A learned reward that is deliberately exploitable: a reward model trained (Bradley–Terry) on the
    preferences of a lazy rater who checks answers column by column and never carries
    (``preferences.column_checker``). On the rater's own pairs it agrees with the truth most of the
    time; but it likes the careless answer, and GRPO finds that out. Each run optimises the proxy at
    one β (or an adaptive β with a KL target) and logs the proxy, the true reward (exact answer,
    weight 0: logged, never trained) and the KL. Small β: the proxy rises while the true reward falls.
    Large β, or a KL target: the policy stays near the anchor and the true reward holds.

``stepwise_vs_outcome``
    The multi-step ``chain`` task trained from the same anchor with an outcome reward (the whole
    answer exact) and with a stepwise one (each running total checked, ``checks.step_checks``, credit
    per token with a per-step group baseline). Reports held-out accuracy over training and the GRPO
    steps each needs to reach a target accuracy.

``step_kl_runs``
    The chain task trained at several placements of the KL (``beta`` on the whole completion,
    ``step_kl_beta`` per reasoning step, ``core/step_kl.py``): per run the KL of each step (which steps
    drift most), the sampled KL, and the embedding drift measured at each evaluation beside it.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from minigrpo.assets import WRITE_ASSETS, asset_path, in_assets
from minigrpo.lm.sft import anchor_dir

PROXY_DIR = asset_path("reward_models", "addition-column-checker")   # shipped; read, never written


def build_proxy_reward_model(out: str | Path, *, n_prompts: int = 300, n_policy_prompts: int = 1500,
                             steps: int = 300, lr: float = 1e-3, seed: int = 0, progress: bool = False) -> Path:
    """Train the exploitable reward model: Bradley–Terry on the lazy column-checking rater's pairs —
    over broad candidate answers (``synthetic_preferences``) and over the anchor's own samples
    (``policy_preferences``) — starting from the addition anchor. Saved with its held-out accuracy
    and how often rater and model agree with the truth on each kind of pair (``reward_model.json``).
    ``out`` is checked before training; the shipped one (``PROXY_DIR``) is rebuilt only with
    ``MINIGRPO_WRITE_ASSETS=1``."""
    from minigrpo.lm.policy import CausalLMPolicy
    from minigrpo.lm.models import load_causal_lm
    from minigrpo.rewards.preferences import agreement, closeness, column_checker, policy_preferences, synthetic_preferences
    from minigrpo.rewards.reward_model import RewardModel, RMTrainConfig, train_reward_model
    from minigrpo.lm.saving import check_out
    from minigrpo.lm.tasks import AdditionTask

    check_out(out)                            # a bad out fails now, not after training
    task = AdditionTask()
    rater, truth = column_checker(task), closeness(task)
    model, tok = load_causal_lm(anchor_dir("addition"))
    anchor = CausalLMPolicy(model, tok.pad_token_id)
    gen = lambda k: torch.Generator().manual_seed(seed + k)
    broad = synthetic_preferences(task, rater, n_prompts, "train", 8, gen(0))
    on_policy = policy_preferences(anchor, tok, task, rater, n_policy_prompts, 8, "train", 8, gen(1))
    test_broad = synthetic_preferences(task, rater, 100, "test", 8, gen(2))
    test_policy = policy_preferences(anchor, tok, task, rater, 200, 8, "test", 8, gen(3))
    rm = RewardModel.from_causal_lm(anchor_dir("addition"), seed=seed)
    history = train_reward_model(rm, broad + on_policy, test_broad + test_policy,
                                 RMTrainConfig(steps=steps, lr=lr, seed=seed), on_eval=print if progress else None)

    def model_truth(pairs):
        rc = rm.scores([p.prompt for p in pairs], [p.chosen for p in pairs])
        rr = rm.scores([p.prompt for p in pairs], [p.rejected for p in pairs])
        return sum(bool(a > b) == (truth(p.prompt, p.chosen) > truth(p.prompt, p.rejected))
                   for p, a, b in zip(pairs, rc, rr)) / len(pairs)

    env = f"{WRITE_ASSETS}=1 " if in_assets(out) else ""        # rebuilding the shipped one needs it
    return rm.save(out, rater="column_checker", pairs=len(broad) + len(on_policy), test_accuracy=history[-1]["test_accuracy"],
                   rater_agrees_with_truth={"broad": agreement(test_broad, truth), "anchor_samples": agreement(test_policy, truth)},
                   model_agrees_with_truth={"broad": model_truth(test_broad), "anchor_samples": model_truth(test_policy)},
                   train_seconds=rm.train_seconds,
                   command=f"{env}python -c \"from minigrpo.runs.experiments import build_proxy_reward_model as b; "
                           f"b({str(out)!r}, n_prompts={n_prompts}, n_policy_prompts={n_policy_prompts}, steps={steps}, lr={lr}, "
                           f"seed={seed})\"")


def reward_hacking(settings: dict[str, dict] | None = None, *, steps: int = 120, prompts_per_step: int = 16,
                   group_size: int = 8, lr: float = 2e-4, seed: int = 0, eval_every: int = 1000,
                   proxy: str | Path = PROXY_DIR, out: str | Path = "runs/hacking", progress: bool = False,
                   on_step: Callable[[str, dict], None] | None = None) -> dict:
    """Optimise the proxy reward model at each setting {label: {"beta": …, "kl_target": …}} and return
    {label: {"records": metrics, "proxy": (first, last), "true": (first, last), "kl": last}} with
    first/last the means over the first and last 10% of steps. ``on_step(label, record)`` hears every
    step of every run (a notebook's ``lab.progress.progress_per_run``)."""
    from minigrpo.rewards.checks import exact_answer
    from minigrpo.rewards.reward_model import RewardModelReward
    from minigrpo.lm.tasks import AdditionTask
    from minigrpo.runs.config import TrainConfig
    from minigrpo.runs.lm_run import train_lm

    settings = settings or {"beta=0.01": {"beta": 0.01}, "beta=1": {"beta": 1.0}}
    rm_reward = RewardModelReward.load(proxy, name="proxy")
    results = {}
    for label, s in settings.items():
        cfg = TrainConfig(task="addition", steps=steps, prompts_per_step=prompts_per_step, group_size=group_size,
                          lr=lr, seed=seed, eval_every=eval_every, eval_size=100, save_every=0,
                          out=str(out), **s)
        rewards = {"proxy": (rm_reward, 1.0), "correct": (exact_answer(AdditionTask()), 0.0)}
        res = train_lm(cfg, rewards=rewards, progress=progress, on_step=listener(on_step, label))
        recs = [r for r in res.metrics if "reward/proxy" in r]
        k = max(1, len(recs) // 10)
        mean = lambda key, rs: sum(r[key] for r in rs) / len(rs)
        results[label] = {"records": recs, "run_dir": str(res.run_dir), "setting": s,
                          "proxy": (mean("reward/proxy", recs[:k]), mean("reward/proxy", recs[-k:])),
                          "true": (mean("reward/correct", recs[:k]), mean("reward/correct", recs[-k:])),
                          "kl": mean("kl", recs[-k:]), "accuracy": (res.anchor_accuracy, res.final_accuracy)}
    return results


def listener(on_step: Callable[[str, dict], None] | None, label: str) -> Callable[[dict], None] | None:
    """``train_lm``'s one-argument ``on_step`` for one run of an experiment: ``on_step(label, record)``."""
    return None if on_step is None else (lambda record: on_step(label, record))


def steps_to_target(records: list[dict], target: float) -> int | None:
    """The first step whose held-out accuracy reaches ``target`` (None if none does)."""
    return next((r["step"] for r in records if r.get("test_accuracy", -1) >= target), None)


def stepwise_vs_outcome(*, steps: int = 150, target: float = 0.8, seeds=(0,), eval_every: int = 10,
                        eval_size: int = 200, prompts_per_step: int = 16, group_size: int = 8, lr: float = 2e-4,
                        beta: float = 0.02, out: str | Path = "runs/stepwise", progress: bool = False,
                        on_step: Callable[[str, dict], None] | None = None) -> dict:
    """Train the chain task from its anchor with the outcome reward {"correct": 1} and the stepwise
    reward {"steps": 1}; return per reward: accuracy curves, final accuracy and steps to ``target``
    (per seed), and the wall time. ``on_step(label, record)`` hears every step, labelled "outcome, seed 0"."""
    from minigrpo.runs.config import TrainConfig
    from minigrpo.runs.lm_run import train_lm

    rewards = {"outcome": {"correct": 1.0}, "stepwise": {"steps": 1.0}}
    results = {}
    for label, weights in rewards.items():
        runs = []
        for seed in seeds:
            cfg = TrainConfig(task="chain", steps=steps, prompts_per_step=prompts_per_step, group_size=group_size,
                              lr=lr, beta=beta, seed=seed, eval_every=eval_every, eval_size=eval_size, save_every=0,
                              reward_weights=weights, out=str(out))
            t0 = time.perf_counter()
            res = train_lm(cfg, progress=progress, on_step=listener(on_step, f"{label}, seed {seed}"))
            curve = [(r["step"], r["test_accuracy"]) for r in res.metrics if "test_accuracy" in r]
            runs.append({"seed": seed, "curve": curve, "final_accuracy": res.final_accuracy,
                         "anchor_accuracy": res.anchor_accuracy, "steps_to_target": steps_to_target(res.metrics, target),
                         "wall_seconds": time.perf_counter() - t0, "run_dir": str(res.run_dir)})
        results[label] = runs
    return {"target": target, "steps": steps, "seeds": list(seeds), "runs": results}


def kl_profile(records: list[dict], last: float = 0.25) -> list[float]:
    """The per-step KL profile of a run: the mean of ``kl/step/<s>`` over the last ``last`` fraction of its
    training steps, one number per step s (steps that no completion of those records had are left out)."""
    recs = [r for r in records if "kl/step_mean" in r]
    recs = recs[-max(1, round(len(recs) * last)):]
    out = []
    while any(f"kl/step/{len(out)}" in r for r in recs):
        vals = [r[f"kl/step/{len(out)}"] for r in recs if f"kl/step/{len(out)}" in r]
        out.append(sum(vals) / len(vals))
    return out


def step_kl_runs(settings: dict[str, dict] | None = None, *, steps: int = 150, eval_every: int = 10,
                 eval_size: int = 200, prompts_per_step: int = 16, group_size: int = 8, lr: float = 2e-4, seed: int = 0,
                 reward_weights: dict | None = None, out: str | Path = "runs/step_kl", progress: bool = False,
                 on_step: Callable[[str, dict], None] | None = None) -> dict:
    """Train the chain task from its anchor at each setting {label: {"beta": …, "step_kl_beta": …}} and return
    {label: {"records", "profile" (``kl_profile``), "kl" (the sampled KL per completion over the last quarter
    of steps), "accuracy" (anchor, final), "evals" [(step, eval/kl, eval/embedding_drift)], "run_dir"}}.
    ``on_step(label, record)`` hears every step of every run."""
    from minigrpo.runs.config import TrainConfig
    from minigrpo.runs.lm_run import train_lm

    settings = settings or {"β=0.02 (sequence)": {"beta": 0.02, "step_kl_beta": 0.0},
                            "β=1 (sequence)": {"beta": 1.0, "step_kl_beta": 0.0},
                            "β_step=1 (per step)": {"beta": 0.0, "step_kl_beta": 1.0}}
    results = {}
    for label, s in settings.items():
        cfg = TrainConfig(task="chain", steps=steps, prompts_per_step=prompts_per_step, group_size=group_size, lr=lr,
                          seed=seed, eval_every=eval_every, eval_size=eval_size, save_every=0,
                          reward_weights=reward_weights, out=str(out), **s)
        res = train_lm(cfg, progress=progress, on_step=listener(on_step, label))
        recs = [r for r in res.metrics if "kl/step_mean" in r]
        tail = recs[-max(1, len(recs) // 4):]
        results[label] = {"records": res.metrics, "setting": s, "run_dir": str(res.run_dir),
                          "profile": kl_profile(res.metrics), "kl": sum(r["kl"] for r in tail) / len(tail),
                          "accuracy": (res.anchor_accuracy, res.final_accuracy),
                          "evals": [(r["step"], r["eval/kl"], r["eval/embedding_drift"]) for r in res.metrics
                                    if "eval/embedding_drift" in r and "eval/kl" in r]}
    return results


def save_json(obj: dict, path: str | Path) -> Path:
    """Write ``obj`` as JSON to ``path`` whole or not at all (a temporary file, then a rename)."""
    from minigrpo.lm.saving import write_text_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, json.dumps(obj, indent=2, default=str))
