"""The other methods on the bandit: DPO/IPO on preference pairs, offline GRPO on logged pulls.

Each builds its data once from the bandit (the anchor's samples and the arm means), then yields one
update per step from the same pieces the language model uses (``core/preference.py``,
``core/offline.py``). Online GRPO and PPO need nothing here: ``core/step.train`` runs both.

* **Pairs.** (a, b) drawn independently from the anchor, labelled a ≻ b with probability
  σ(μ_a − μ_b): Bradley–Terry on the arm means. A million pairs of K arms are at most K·(K−1)
  distinct ordered (winner, loser) pairs, so each step is one full-batch update on those rows with
  their counts as weights (``preference_step(weights=…)``) — the exact empirical loss, not a sample of it.
* **Logged pulls.** N arms drawn from the behaviour policy (the anchor by default) with their
  rewards, stored; each step draws a group of G logged pulls per run and takes an offline GRPO step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor

from minigrpo.bandit.arms import NOISE_DRAWS
from minigrpo.bandit.config import BanditConfig
from minigrpo.core.offline import LoggedBatch, offline_step
from minigrpo.core.preference import DPO, IPO, preference_step


@dataclass
class PairCounts:
    """How often arm w beat arm l among the drawn pairs: ``wins`` (K, K)."""

    wins: Tensor

    def rows(self) -> tuple[Tensor, Tensor]:
        """The distinct (winner, loser) pairs as completions (N, 2, 1) and their counts (N,)."""
        w, l = self.wins.nonzero(as_tuple=True)
        return torch.stack([w, l], 1)[..., None], self.wins[w, l]


def draw_pairs(cfg: BanditConfig, generator: torch.Generator) -> PairCounts:
    """``cfg.pairs`` pairs from the anchor with Bradley–Terry labels on the arm means."""
    anchor = torch.tensor(cfg.anchor, dtype=torch.float64)
    means = torch.tensor(cfg.means, dtype=torch.float64)
    a = torch.multinomial(anchor, cfg.pairs, replacement=True, generator=generator)
    b = torch.multinomial(anchor, cfg.pairs, replacement=True, generator=generator)
    a_wins = torch.rand(cfg.pairs, generator=generator, dtype=torch.float64) < torch.sigmoid(means[a] - means[b])
    w, l = torch.where(a_wins, a, b), torch.where(a_wins, b, a)
    keep = w != l                                              # an arm against itself carries no preference
    wins = torch.zeros(cfg.K, cfg.K, dtype=torch.get_default_dtype())
    wins.index_put_((w[keep], l[keep]), torch.ones(int(keep.sum()), dtype=wins.dtype), accumulate=True)
    return PairCounts(wins)


def preference_steps(cfg: BanditConfig, policy, anchor, optimizer, pairs: PairCounts, row: int = 0) -> Iterator:
    """DPO (β = cfg.beta) or IPO (τ = cfg.beta) on the pairs, one full-batch step each; yields the
    policy's expected reward E_π[μ] after each step, as one sample (1, 1) (no reward is sampled)."""
    loss = DPO(cfg.beta) if cfg.method == "dpo" else IPO(cfg.beta)
    completions, counts = pairs.rows()                                     # (N,2,1), (N,)
    if len(counts) == 0:
        raise ValueError(f"BanditConfig: pairs={cfg.pairs} drew no pair of two different arms; draw more pairs")
    prompts = torch.full((len(counts),), row, dtype=torch.long)
    mask = torch.ones(completions.shape, dtype=torch.bool)
    logp_anchor = anchor.log_probs(prompts, completions)                   # (N,2,1)
    means = torch.tensor(cfg.means)
    for _ in range(cfg.steps):
        preference_step(policy, logp_anchor, prompts, completions, mask, loss, optimizer, weights=counts)
        yield (policy.distribution(torch.tensor([row])).exp() * means).sum(-1, keepdim=True)   # E_π[μ], (1, 1)


def log_pulls(cfg: BanditConfig, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``cfg.logged`` arms from the behaviour policy and a reward for each: (arms (N,), rewards (N,))."""
    behaviour = torch.tensor(cfg.behaviour if cfg.behaviour is not None else cfg.anchor, dtype=torch.float64)
    arms = torch.multinomial(behaviour, cfg.logged, replacement=True, generator=generator)
    mu = torch.tensor(cfg.means)[arms]
    return arms, NOISE_DRAWS[cfg.noise](mu, 1.0, generator)


def offline_steps(cfg: BanditConfig, policy, anchor, optimizer, recipe, beta, arms: Tensor, rewards: Tensor,
                  R: int, generator: torch.Generator) -> Iterator:
    """Offline GRPO: each step, every run (row) draws G logged pulls and learns from them with
    importance ratios π_θ/μ to the behaviour policy μ; yields the rewards drawn, (R, G)."""
    behaviour = torch.tensor(cfg.behaviour if cfg.behaviour is not None else cfg.anchor)
    log_mu = behaviour.log()
    G = cfg.group_size
    prompts = torch.arange(R)
    mask = torch.ones(R, G, 1, dtype=torch.bool)
    valid = torch.ones(R, G, dtype=torch.bool)
    for _ in range(cfg.steps):
        pick = torch.randint(len(arms), (R, G), generator=generator)
        y = arms[pick][..., None]                                          # (R,G,1)
        batch = LoggedBatch(prompts, y, mask, rewards[pick].to(log_mu.dtype), valid, log_mu[y])
        step = offline_step(policy, anchor, batch, recipe, beta, optimizer, updates=cfg.updates)
        yield step.r


def empirical_rewards(arms: Tensor, rewards: Tensor, K: int) -> tuple[Tensor, Tensor]:
    """The logged data's mean reward per arm r̂ (K,) and which arms it holds at all (K,) bool."""
    n = torch.zeros(K, dtype=torch.float64).index_add_(0, arms, torch.ones_like(arms, dtype=torch.float64))
    total = torch.zeros(K, dtype=torch.float64).index_add_(0, arms, rewards.double())
    return (total / n.clamp_min(1)).to(torch.get_default_dtype()), n > 0
