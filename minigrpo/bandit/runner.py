"""The bandit laboratory: GRPO on a K-armed bandit, where every quantity has an exact answer.

The bandit is a policy over one-token completions, trained by exactly the same ``grpo_step`` as
a language model. Because the arms are enumerable we can record the whole distribution each step
and compare it to the closed-form optimum π* ∝ π_anchor·exp(μ/β).

``run_bandit(cfg)`` trains one run; ``sweep_beta(cfg, betas)`` trains one run per β side by side
(each β is a row of one tabular policy, i.e. a "prompt"), which costs about as much as one run.

The rewards come from the gymnasium env ``minigrpo/KArmedBandit-v0``: every step's R × G pulls are
one ``envs.step`` of a vector env with R·G sub-envs (``envs.EnvReward``).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Sequence

import gymnasium as gym
import torch
from torch import Tensor

from minigrpo.core.advantages import LearnedValue
from minigrpo.core.critic import GAE, Critic, ValueTable
from minigrpo.core.kl import FixedBeta
from minigrpo.core.optimizer import LeanAdam
from minigrpo.core.optimum import (bradley_terry, expected_reward, ipo_optimum, kl_divergence, logged_optimum,
                                   optimal_policy, total_variation)
from minigrpo.bandit.policies import TabularSoftmaxPolicy
from minigrpo.bandit.envs import EnvReward
from minigrpo.core.step import train
from minigrpo.core.validate import refuse
from minigrpo.bandit.config import BanditConfig
from minigrpo.bandit.methods import draw_pairs, empirical_rewards, log_pulls, offline_steps, preference_steps

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
    log_optimum: Tensor | None = None   # (R, K) log π*, float64: finite where π* itself underflows (β ≪ reward gaps)

    def __post_init__(self):
        if self.log_optimum is None:
            self.log_optimum = self.optimum.double().log()

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
        kl = kl_divergence(self.probs.double().log(), self.log_optimum).to(self.probs.dtype)
        # β = 0: π* is a point mass on the best arm, and any π that is not one is infinitely far from it
        return torch.where(self.betas.to(kl.device) == 0, torch.inf, kl)

    def tv_to_optimum(self) -> Tensor:
        return total_variation(self.probs.double().log(), self.log_optimum).to(self.probs.dtype)

    def fixed_point(self) -> Tensor | None:
        """Where the method lands in theory, (R, K) probabilities, when that differs from π* and is
        known in closed form: IPO's (``optimum.ipo_optimum``), and offline GRPO's on the logged data
        (π ∝ π_anchor·exp(r̂/β) with the logged mean rewards r̂, the unlogged arms keeping the mass the
        run left them: ``optimum.logged_optimum``). None otherwise (π* is the method's own)."""
        method = self.config.method
        logp_anchor = self.anchor.log()
        if method == "ipo":
            pref = bradley_terry(self.means)
            return torch.stack([ipo_optimum(logp_anchor, pref, float(b)).exp() for b in self.betas])
        if method == "offline_grpo" and bool((self.betas > 0).all()):
            r_hat, seen = self.extra["logged_reward"], self.extra["logged_arms"]
            return torch.stack([logged_optimum(logp_anchor, r_hat[i], float(b), seen[i],
                                               self.policy[i][~seen[i]].sum().item()).exp()
                                for i, b in enumerate(self.betas)])
        return None

    def summary(self, run: int = 0) -> dict:
        """The final numbers of one run, as plain Python (the CLI's --json output)."""
        fixed = self.fixed_point()
        own = {} if fixed is None else {
            "fixed_point": fixed[run].tolist(),
            "kl_to_fixed_point": kl_divergence(self.policy[run].log(), fixed[run].log()).item()}
        return {
            "method": self.config.method,
            **own,
            "policy": self.policy[run].tolist(),
            "anchor": self.anchor.tolist(),
            "optimum": self.optimum[run].tolist(),
            "kl_to_optimum": self.kl_to_optimum()[-1, run].item(),
            "tv_to_optimum": self.tv_to_optimum()[-1, run].item(),
            "kl_to_anchor": self.kl_to_anchor()[-1, run].item(),
            "expected_reward": self.expected_reward()[-1, run].item(),
            "optimum_expected_reward": expected_reward(self.log_optimum[run], self.means.double()).item(),
            "beta": self.betas[run].item(),
            "wall_seconds": self.wall_seconds,
            "config": asdict(self.config),
        }


def run_bandit(cfg: BanditConfig, betas: Sequence[float] | None = None,
               on_record: Callable[[int, Tensor], None] | None = None) -> BanditResult:
    """Train GRPO on the bandit of ``cfg``; with ``betas``, one independent run per β, side by side.

    ``on_record(step, probs)`` is called each time the policy is recorded (for live plots).
    ``cfg.method`` picks what trains it: grpo and ppo sample online (``core/step.train``; ppo with a
    critic, one value per run), dpo/ipo learn from preference pairs and offline_grpo from logged pulls
    (``bandit/methods.py``; one run per β, one after another).
    """
    import time

    if cfg.method in ("dpo", "ipo", "offline_grpo") and betas is not None:
        if len(betas) == 0:
            refuse("run_bandit", "betas", list(betas), "must be a non-empty list of β values")
        runs = [run_bandit(replace(cfg, beta=float(b)), on_record=on_record) for b in betas]
        first = runs[0]
        return replace(first, betas=torch.cat([r.betas for r in runs]), probs=torch.cat([r.probs for r in runs], 1),
                       reward=torch.cat([r.reward for r in runs], 1), optimum=torch.cat([r.optimum for r in runs]),
                       log_optimum=torch.cat([r.log_optimum for r in runs]),
                       wall_seconds=sum(r.wall_seconds for r in runs),
                       extra={k: torch.cat([r.extra[k] for r in runs]) for k in first.extra})

    betas_t = torch.tensor([cfg.beta] if betas is None else [float(b) for b in betas], dtype=torch.float64)
    if betas is not None:
        if len(betas_t) == 0:
            refuse("run_bandit", "betas", list(betas), "must be a non-empty list of β values")
        for b in betas_t.tolist():
            if not (math.isfinite(b) and b >= 0):
                refuse("run_bandit", "beta", b, "must be a finite number ≥ 0")
    R, K = len(betas_t), cfg.K
    gen = torch.Generator().manual_seed(cfg.seed)

    anchor_probs = torch.tensor(cfg.anchor)
    means = torch.tensor(cfg.means)
    anchor = TabularSoftmaxPolicy.from_probs(anchor_probs, n_rows=R, trainable=False)
    policy = TabularSoftmaxPolicy.from_probs(anchor_probs, n_rows=R)   # start at the anchor, as RL after SFT does
    # the bandit as a gymnasium vector env: one sub-env per pull, R runs × G pulls each step
    envs = gym.make_vec("minigrpo/KArmedBandit-v0", num_envs=R * cfg.group_size,
                        vectorization_mode="vector_entry_point", means=cfg.means, noise=cfg.noise, sigma=1.0)
    envs.reset(seed=cfg.seed + 1_000_003)                              # seeds the reward draws
    env_reward = EnvReward(envs, contexts=torch.zeros(R, dtype=torch.long))  # every run (row) pulls the one bandit
    recipe = cfg.build_recipe()
    if cfg.baseline == "value":
        recipe = replace(recipe, baseline=LearnedValue(n_prompts=R, lr=0.1))
    if isinstance(recipe.baseline, GAE):                # ppo: the critic is one learned value per run
        table = ValueTable(R)
        recipe = replace(recipe, baseline=Critic(table, recipe.baseline, value_clip=None, max_grad_norm=None,
                                                 optimizer=LeanAdam(table.parameters(), lr=cfg.critic_lr)))
    opt = LeanAdam(policy.parameters(), lr=cfg.lr)
    prompts = torch.arange(R)
    beta_value = betas_t.to(torch.get_default_dtype()) if R > 1 else float(betas_t[0])
    extra = {}

    n_rec = cfg.steps // cfg.record_every
    thetas = torch.empty(n_rec + 1, R, K)                      # logits history; softmax once at the end
    thetas[0] = policy.theta.detach()
    rewards = []                                               # each step's rewards (R, n); averaged after the run
    decay = (1 - cfg.final_lr_frac) / max(cfg.steps - 1, 1)
    t0 = time.perf_counter()
    if cfg.method in ("dpo", "ipo"):
        pairs = draw_pairs(cfg, gen)
        steps = preference_steps(cfg, policy, anchor, opt, pairs)
        extra["pair_wins"] = pairs.wins[None]
    elif cfg.method == "offline_grpo":
        arms, pulled = log_pulls(cfg, gen)
        r_hat, seen = empirical_rewards(arms, pulled, K)
        extra.update(logged_reward=r_hat[None], logged_arms=seen[None])
        steps = offline_steps(cfg, policy, anchor, opt, recipe, beta_value, arms, pulled, R, gen)
    else:
        steps = (step.r for step in train(policy, anchor, prompts, env_reward, recipe, FixedBeta(beta_value), opt,
                                          cfg.group_size, cfg.steps, generator=gen, updates=cfg.updates))
    with torch.no_grad(), single_thread():
        for t, r in enumerate(steps):
            opt.lr = cfg.lr * (1 - decay * (t + 1))              # rate for the next step: linear decay to
                                                                 # lr·final_lr_frac lets sampled SGD settle
            rewards.append(r)
            if (t + 1) % cfg.record_every == 0:
                i = (t + 1) // cfg.record_every
                thetas[i] = policy.theta
                if on_record is not None:
                    on_record(t + 1, torch.softmax(thetas[i], -1))
    probs = torch.softmax(thetas, -1)
    reward = torch.stack(rewards).mean(-1)                     # (steps, R): mean sampled reward per step
    wall = time.perf_counter() - t0
    # π* in log space and float64: at β = 0.001 the worst arm's π* is e^-800, 0 in float32, and KL(π ‖ π*)
    # must stay finite (it is large, not infinite)
    log_opt = optimal_policy(anchor_probs.double().log(), means.double(), betas_t.clamp_min(1e-12)[:, None])
    opt_policy = log_opt.exp().to(means.dtype)
    return BanditResult(cfg, betas_t, probs, torch.arange(n_rec + 1) * cfg.record_every, reward,
                        anchor_probs, means, opt_policy, wall, extra, log_opt)


def sweep_beta(cfg: BanditConfig, betas: Sequence[float]) -> BanditResult:
    """One run per β, trained side by side (for the reward–KL frontier)."""
    return run_bandit(cfg, betas=betas)
