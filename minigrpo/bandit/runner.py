"""The bandit laboratory: GRPO on a K-armed bandit, where every quantity has an exact answer.

The bandit is a policy over one-token completions, trained by exactly the same ``grpo_step`` as
a language model. Because the arms are enumerable we can record the whole distribution each step
and compare it to the closed-form optimum π* ∝ π_anchor·exp(μ/β).

``run_bandit(cfg)`` trains one run; ``sweep_beta(cfg, betas)`` trains one run per β side by side
(each β is a row of one tabular policy, i.e. a "prompt"), which costs about as much as one run.
"""
from __future__ import annotations

import math
import numbers
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor

from minigrpo.core.advantages import BASELINES, LearnedValue
from minigrpo.core.kl import FixedBeta, parse_kl
from minigrpo.core.optimizer import LeanAdam
from minigrpo.core.optimum import expected_reward, kl_divergence, optimal_policy, total_variation
from minigrpo.bandit.policies import TabularSoftmaxPolicy
from minigrpo.core.recipe import Recipe, replace, seed_grpo
from minigrpo.bandit.arms import ArmRewards
from minigrpo.core.step import train
from minigrpo.core.validate import is_int, is_real

BASELINE_CHOICES = tuple(BASELINES) + ("value",)


def skewed_anchor(K: int, skew: float = 1.0) -> list[float]:
    """An "SFT-like" prior that prefers the first arms: π_anchor(k) ∝ exp(−skew·k/(K−1))."""
    w = [math.exp(-skew * k / max(K - 1, 1)) for k in range(K)]
    return [x / sum(w) for x in w]


@contextmanager
def single_thread():
    """Run torch on one thread inside the block: bandit tensors are tiny, and handing them to a
    second thread costs more than it saves (2.5× slower for a 20-β sweep on 2 cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _fail(field_: str, value, allowed: str):
    raise ValueError(f"{field_}={value!r} is not allowed: {allowed}")


def _numbers(field_: str, values) -> list[float]:
    """A sequence of numbers as floats, or a ValueError naming the field (a string is not a sequence of
    numbers here: "0.5" would otherwise become [0.0, 0.5])."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        _fail(field_, values, "a sequence of numbers, e.g. [0.2, 0.5, 0.9]")
    out = []
    for v in values:
        if not (isinstance(v, numbers.Real) and not isinstance(v, bool)):
            _fail(field_, values, "a sequence of numbers, e.g. [0.2, 0.5, 0.9]")
        out.append(float(v))
    return out


@dataclass
class BanditConfig:
    """One bandit run. Every field has a default and is checked on construction."""

    means: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9)
    """Arm means μ_k; the number of arms K is their count (≥ 2)."""
    anchor: Sequence[float] | None = None
    """Anchor probabilities π_anchor(k) (K positive numbers summing to 1); None = ``skewed_anchor(K)``."""
    beta: float = 0.1
    """KL coefficient β ≥ 0 (β = 0 with a KL placement means no anchor pull)."""
    baseline: str = "group_mean"
    """One of none, batch_mean, group_mean, group_mean_std, leave_one_out, value."""
    kl: str = "reward:k1"
    """KL placement and estimator: 'reward:k1|k2|k3', 'loss:k1|k2|k3' or 'none'."""
    steps: int = 4000
    """GRPO steps."""
    group_size: int = 128
    """G, completions (arm pulls) per prompt per step. A bandit step costs about the same for G = 16
    or 128 (per-op overhead dominates), and a large group makes the sampled gradient precise enough
    to land within KL 1e-3 of π* even when two arms are nearly tied."""
    lr: float = 0.03
    """Adam learning rate on the logits; decayed linearly to lr·final_lr_frac over the run."""
    final_lr_frac: float = 0.01
    """Learning rate at the last step as a fraction of ``lr`` (1.0 = constant)."""
    noise: str = "bernoulli"
    """Arm reward noise: 'bernoulli' (means in [0, 1]), 'gaussian' (σ = 1) or 'none'."""
    seed: int = 0
    """Seeds sampling and rewards; the same seed gives the same run."""
    record_every: int = 1
    """Record the policy every this many steps (history length = steps / record_every)."""

    def __post_init__(self):
        self.means = _numbers("means", self.means)
        K = len(self.means)
        if K <= 1:
            _fail("arms", K, "a bandit needs at least 2 arms (give ≥ 2 comma-separated means)")
        if not all(math.isfinite(m) for m in self.means):
            _fail("means", self.means, "every arm mean must be a finite number")
        if self.noise not in ArmRewards.NOISES:
            _fail("noise", self.noise, f"one of {ArmRewards.NOISES}")
        if self.noise == "bernoulli" and not all(0 <= m <= 1 for m in self.means):
            _fail("means", self.means, "Bernoulli arm means must lie in [0, 1] (or use noise='gaussian')")
        if self.anchor is None:
            self.anchor = skewed_anchor(K)
        self.anchor = _numbers("anchor", self.anchor)
        if len(self.anchor) != K:
            _fail("anchor", self.anchor, f"{K} probabilities, one per arm (got {len(self.anchor)})")
        if not all(math.isfinite(a) and a > 0 for a in self.anchor):
            _fail("anchor", self.anchor, "probabilities must be finite and > 0 (a zero-probability arm makes KL infinite)")
        if abs(sum(self.anchor) - 1) > 1e-6:
            _fail("anchor", self.anchor, f"probabilities must sum to 1 (they sum to {sum(self.anchor):.6g})")
        if not (is_real(self.beta) and self.beta >= 0):
            _fail("beta", self.beta, "a finite number ≥ 0")
        if self.baseline not in BASELINE_CHOICES:
            _fail("baseline", self.baseline, f"one of {BASELINE_CHOICES}")
        parse_kl(self.kl)  # raises a ValueError naming the setting
        if not (is_int(self.group_size) and self.group_size >= 1):
            _fail("group_size", self.group_size, "an integer ≥ 1")
        need = BASELINES[self.baseline].min_group if self.baseline in BASELINES else 1
        if self.group_size < need:
            _fail("group_size", self.group_size, f"≥ {need} with baseline={self.baseline!r} (a group baseline needs G ≥ 2)")
        if not (is_int(self.steps) and self.steps >= 1):
            _fail("steps", self.steps, "an integer ≥ 1")
        if not (is_real(self.lr) and self.lr > 0):
            _fail("lr", self.lr, "a finite number > 0")
        if not (is_real(self.final_lr_frac) and 0 < self.final_lr_frac <= 1):
            _fail("final_lr_frac", self.final_lr_frac, "a number in (0, 1]")
        if not (is_int(self.seed) and 0 <= self.seed < 2 ** 63):
            _fail("seed", self.seed, "an integer from 0 to 2**63 − 1")
        if not (is_int(self.record_every) and self.record_every >= 1):
            _fail("record_every", self.record_every, "an integer ≥ 1")
        if self.steps % self.record_every:
            # otherwise the last steps are never recorded and ``policy`` would not be the final policy
            _fail("record_every", self.record_every, f"a divisor of steps={self.steps}, so the final policy is recorded")

    @property
    def K(self) -> int:
        return len(self.means)

    def recipe(self) -> Recipe:
        """The seed recipe with this config's baseline and KL placement swapped in."""
        baseline = BASELINES.get(self.baseline)
        return replace(seed_grpo(), name="bandit", kl=parse_kl(self.kl), baseline=baseline)


@dataclass
class BanditResult:
    """A finished run (or a β sweep: leading dimension R = number of runs).

    ``probs`` is the recorded policy history, (n_records, R, K); the rest are exact quantities.
    """

    config: BanditConfig
    betas: Tensor           # (R,)
    probs: Tensor           # (n_records, R, K)  policy after each recorded step
    record_steps: Tensor    # (n_records,)
    reward: Tensor          # (steps, R)  mean sampled reward per step
    anchor: Tensor          # (K,)
    means: Tensor           # (K,)
    optimum: Tensor         # (R, K)      π* for each β
    wall_seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def policy(self) -> Tensor:
        """Final policy, (R, K)."""
        return self.probs[-1]

    def expected_reward(self) -> Tensor:
        """E_π[μ] along the history, (n_records, R)."""
        return expected_reward(self.probs.log(), self.means)

    def kl_to_anchor(self) -> Tensor:
        """KL(π ‖ π_anchor) along the history, (n_records, R)."""
        return kl_divergence(self.probs.log(), self.anchor.log())

    def kl_to_optimum(self) -> Tensor:
        """KL(π ‖ π*) along the history, (n_records, R)."""
        return kl_divergence(self.probs.log(), self.optimum.log())

    def tv_to_optimum(self) -> Tensor:
        return total_variation(self.probs.log(), self.optimum.log())

    def summary(self, run: int = 0) -> dict:
        """The final numbers of one run, as plain Python (the CLI's --json output)."""
        return {
            "policy": self.policy[run].tolist(),
            "anchor": self.anchor.tolist(),
            "optimum": self.optimum[run].tolist(),
            "kl_to_optimum": self.kl_to_optimum()[-1, run].item(),
            "tv_to_optimum": self.tv_to_optimum()[-1, run].item(),
            "kl_to_anchor": self.kl_to_anchor()[-1, run].item(),
            "expected_reward": self.expected_reward()[-1, run].item(),
            "optimum_expected_reward": expected_reward(self.optimum[run].log(), self.means).item(),
            "beta": self.betas[run].item(),
            "wall_seconds": self.wall_seconds,
            "config": asdict(self.config),
        }


def run_bandit(cfg: BanditConfig, betas: Sequence[float] | None = None,
               on_record: Callable[[int, Tensor], None] | None = None) -> BanditResult:
    """Train GRPO on the bandit of ``cfg``; with ``betas``, one independent run per β, side by side.

    ``on_record(step, probs)`` is called each time the policy is recorded (for live plots).
    """
    import time

    betas_t = torch.tensor([cfg.beta] if betas is None else [float(b) for b in betas], dtype=torch.float64)
    if betas is not None:
        if len(betas_t) == 0:
            _fail("betas", list(betas), "a non-empty list of β values")
        for b in betas_t.tolist():
            if not (math.isfinite(b) and b >= 0):
                _fail("beta", b, "a finite number ≥ 0")
    R, K = len(betas_t), cfg.K
    gen = torch.Generator().manual_seed(cfg.seed)
    reward_gen = torch.Generator().manual_seed(cfg.seed + 1_000_003)

    anchor_probs = torch.tensor(cfg.anchor)
    means = torch.tensor(cfg.means)
    anchor = TabularSoftmaxPolicy.from_probs(anchor_probs, n_rows=R, trainable=False)
    policy = TabularSoftmaxPolicy.from_probs(anchor_probs, n_rows=R)   # start at the anchor, as RL after SFT does
    rewards = ArmRewards(means.expand(R, K), cfg.noise, 1.0, reward_gen)   # each run is a "prompt" of the same arms
    recipe = cfg.recipe()
    if cfg.baseline == "value":
        recipe = replace(recipe, baseline=LearnedValue(n_prompts=R, lr=0.1))
    opt = LeanAdam(policy.parameters(), lr=cfg.lr)
    prompts = torch.arange(R)
    beta_value = betas_t.to(torch.get_default_dtype()) if R > 1 else float(betas_t[0])

    n_rec = cfg.steps // cfg.record_every
    thetas = torch.empty(n_rec + 1, R, K)                      # logits history; softmax once at the end
    thetas[0] = policy.theta.detach()
    reward = torch.empty(cfg.steps, R)
    decay = (1 - cfg.final_lr_frac) / max(cfg.steps - 1, 1)
    t0 = time.perf_counter()
    steps = train(policy, anchor, prompts, rewards, recipe, FixedBeta(beta_value), opt, cfg.group_size, cfg.steps,
                  generator=gen)
    with torch.no_grad(), single_thread():
        for t, step in enumerate(steps):
            opt.lr = cfg.lr * (1 - decay * (t + 1))              # rate for the next step: linear decay to
                                                                 # lr·final_lr_frac lets sampled SGD settle
            torch.mean(step.r, 1, out=reward[t])
            if (t + 1) % cfg.record_every == 0:
                i = (t + 1) // cfg.record_every
                thetas[i] = policy.theta
                if on_record is not None:
                    on_record(t + 1, torch.softmax(thetas[i], -1))
    probs = torch.softmax(thetas, -1)
    wall = time.perf_counter() - t0
    opt_policy = optimal_policy(anchor_probs.log(), means, betas_t.to(means.dtype).clamp_min(1e-12)[:, None]).exp()
    return BanditResult(cfg, betas_t, probs, torch.arange(n_rec + 1) * cfg.record_every, reward,
                        anchor_probs, means, opt_policy, wall)


def sweep_beta(cfg: BanditConfig, betas: Sequence[float]) -> BanditResult:
    """One run per β, trained side by side (for the reward–KL frontier)."""
    return run_bandit(cfg, betas=betas)
