"""The GRPO step and the training loop.

One step, in the order a learner reads it (shapes P × G × T):

1. sample G completions per prompt from the policy                       ``sampling.sample_group``
2. score them:                   r (P,G), and step rewards if any          the reward function
3. anchor log-probs, no grad:    logp_anchor (P,G,T)                       ``anchor.log_probs``
4. total reward:                 R = r − β·KL  (when the KL is in the reward) ``recipe.kl``
5. advantages:                   A = R − baseline (P,G)                    ``recipe.baseline``
   (+ per-step advantages (P,G,T) when the reward scores steps)           ``advantages.step_advantages``
   (+ the per-step KL penalty's, with β_step > 0)                         ``step_kl.StepKL``
6. per-token push:               ψ = ∂L/∂logp = W·(ℓ'_pg + β·k')  (P,G,T)  ``recipe.surrogate/aggregation``
7. parameter gradient and update: ∇θ = Σ ψ·∇θ logp, optimizer step        ``policy.accumulate_grad``

The loop keeps no global state: everything lives in the arguments, and metrics are yielded, so
plots, widgets and loggers listen from outside.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import Tensor

from minigrpo.core.advantages import step_advantages
from minigrpo.core.critic import GAE, Critic
from minigrpo.core.kl import K1
from minigrpo.core.loss import aggregate, clip_fraction
from minigrpo.core.masks import masked_mean, masked_sum
from minigrpo.core.protocols import Anchor, Policy, Reward, require
from minigrpo.core.recipe import Recipe
from minigrpo.core.scored import Scored, call_reward, check_scored
from minigrpo.core.sampling import Rollout, sample_group
from minigrpo.core.step_kl import StepKL, StepKLs


@dataclass
class Step:
    """Everything one GRPO step computed, for inspection (notebooks) and metrics (loggers)."""

    rollout: Rollout
    r: Tensor            # (P,G)   reward from the reward function
    R: Tensor            # (P,G)   total reward after the KL shaping (= r when the KL is in the loss)
    A: Tensor            # (P,G)   advantage; (P,G,T) per token when the reward scores steps
    logp_anchor: Tensor  # (P,G,T) anchor log-probs of the sampled tokens
    logp: Tensor         # (P,G,T) policy log-probs going into the (last) update, detached
    psi: Tensor          # (P,G,T) ∂L/∂logp, the push each sampled token received
    W: Tensor            # (P,G,T) aggregation weights
    recipe: Recipe
    beta: object
    logp_old: Tensor | None = None   # (P,G,T) log π_old for the ratio; None: the rollout's own logp
    grad_norm: float | None = None   # ‖∇θ L‖ of the last update, before clipping
    scored: Scored | None = None     # the checked reward: applicability, validity, step rewards
    kl_steps: StepKLs | None = None  # the KL per reasoning step (P,G,S), when the run measures it
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def components(self) -> dict:
        """The named reward parts {name: (P,G)} (from ``scored``)."""
        return {} if self.scored is None else self.scored.components

    @property
    def loss(self) -> Tensor:
        """L = Σ W·(ℓ_pg + β·k) — the number whose gradient ψ is (computed on demand)."""
        if "loss" not in self._cache:
            A = per_token(self.A)
            logp_old = self.rollout.logp if self.logp_old is None else self.logp_old
            pg = self.recipe.surrogate.value(self.logp, logp_old, A)
            kl_value, _ = self.recipe.kl.loss_terms(self.logp, self.logp_anchor, self.beta)
            self._cache["loss"] = aggregate(pg if kl_value is None else pg + kl_value, self.W)
        return self._cache["loss"]

    @property
    def kl(self) -> Tensor:
        """Sampled KL(π_old ‖ π_anchor) per completion, Σ_t k1 (P,G)."""
        return masked_sum(K1.value(self.rollout.logp, self.logp_anchor), self.rollout.mask, dim=-1)

    def metrics(self) -> dict:
        """Stable metric keys, as floats."""
        m = self.rollout.mask
        lengths = m.sum(-1).to(self.r.dtype)
        logp_old = self.rollout.logp if self.logp_old is None else self.logp_old
        extra = {} if self.scored is None else {f"reward/{k}": v for k, v in self.scored.component_means().items()}
        valid = self.scored.valid if self.scored is not None else None
        extra["reward_valid_fraction"] = 1.0 if valid is None else valid.float().mean().item()   # judged at all
        extra["frac_flat_groups"] = flat_groups(self.r, valid, None if self.scored is None else self.scored.steps)
        if self.grad_norm is not None:
            extra["grad_norm"] = self.grad_norm
        if self.kl_steps is not None:
            extra |= self.kl_steps.metrics()          # kl/step_mean, kl/step_max, kl/step/<s>
        mean_valid = (lambda x: x.mean().item()) if valid is None else \
            (lambda x: x[valid].mean().item() if valid.any() else float("nan"))
        return {
            "reward": mean_valid(self.r),
            "reward_total": mean_valid(self.R),
            "advantage_abs": masked_mean(per_token(self.A).abs().expand_as(m), m).item(),
            "kl": self.kl.mean().item(),
            "entropy_proxy": -masked_mean(self.rollout.logp, m).item(),
            "completion_length": lengths.mean().item(),
            "loss": self.loss.item(),
            "beta": float(torch.as_tensor(self.beta).float().mean()),
            "clip_fraction": float(clip_fraction(self.logp, logp_old, per_token(self.A), m,
                                                 self.recipe.surrogate.eps_low, self.recipe.surrogate.eps_high)),
            **extra,
        }


def flat_groups(r: Tensor, valid: Tensor | None = None, steps=None) -> float:
    """The fraction of groups that teach nothing: fewer than two judged completions, or all of them with
    the same reward (and the same step rewards). Such a group's advantages are 0 whatever the baseline;
    only the KL term moves the policy there."""
    ok = torch.ones_like(r, dtype=torch.bool) if valid is None else valid
    hi = r.masked_fill(~ok, -math.inf).amax(1)
    lo = r.masked_fill(~ok, math.inf).amin(1)
    flat = (ok.sum(1) < 2) | (hi == lo)
    if steps is not None:
        v = steps.values.masked_fill(~steps.present, 0.0)
        flat &= (v == v[:, :1]).all(-1).all(-1) & (steps.present == steps.present[:, :1]).all(-1).all(-1)
    return flat.float().mean().item()


def per_token(A: Tensor) -> Tensor:
    """Advantages broadcast over tokens: (P,G) → (P,G,1); per-token (P,G,T) stay as they are."""
    return A[..., None] if A.dim() == 2 else A


def collect(policy: Policy, prompts: Tensor, reward_fn: Reward, G: int, *, generator: torch.Generator | None = None,
            **sampling_kwargs) -> tuple[Rollout, Scored]:
    """Steps 1–2: sample G completions per prompt from the policy and score them (checked)."""
    rollout = sample_group(policy, prompts, G, generator=generator, **sampling_kwargs)        # (P,G,T)
    P, G, T = rollout.shape
    scored = check_scored(call_reward(reward_fn, prompts, rollout), (P, G), reward_fn, T)       # r (P,G)
    return rollout, _to_device(scored, rollout.logp.device)   # a reward computed on the CPU meets a policy on a GPU


def grpo_step(policy: Policy, anchor: Anchor, prompts: Tensor, reward_fn: Reward, recipe: Recipe, beta, optimizer,
              G: int, *, generator: torch.Generator | None = None, updates: int = 1, minibatches: int = 1,
              max_grad_norm: float | None = None, step_kl: StepKL | None = None, **sampling_kwargs) -> Step:
    """Run one GRPO step and return what it computed: ``collect`` (sample, score), then ``learn``.
    What the policy, the anchor and the reward must provide is written down in ``protocols.py``."""
    rollout, scored = collect(policy, prompts, reward_fn, G, generator=generator, **sampling_kwargs)
    return learn(policy, anchor, prompts, rollout, scored, recipe, beta, optimizer, updates=updates,
                 minibatches=minibatches, max_grad_norm=max_grad_norm, generator=generator, step_kl=step_kl)


def learn(policy: Policy, anchor: Anchor, prompts: Tensor, rollout: Rollout, scored: Scored, recipe: Recipe, beta,
          optimizer, *, updates: int = 1, minibatches: int = 1, max_grad_norm: float | None = None,
          generator: torch.Generator | None = None, logp_behaviour: Tensor | None = None,
          step_kl: StepKL | None = None) -> Step:
    """Steps 3–7 on a scored rollout: anchor log-probs, total reward, advantages, and ``updates`` epochs
    of ``minibatches`` optimizer steps each over the rollout's prompts (PPO's several minibatch
    epochs; 1 × 1 is one full-batch step). ψ is recomputed for every minibatch, whose aggregation
    weights come from its own mask. A ``critic.Critic`` baseline gives per-token advantages and takes
    one value step per minibatch beside the policy's.

    ``logp_behaviour`` (P,G,T): the rollout was logged by another policy μ (offline GRPO,
    ``offline.py``): the ratio is taken to μ, and the KL in the reward is measured with the current
    policy. A non-finite ψ (from the advantages or the log-probs), or a non-finite gradient norm, raises
    ``FloatingPointError`` before the optimizer touches the weights.

    ``step_kl``: the KL per reasoning step is measured (``Step.kl_steps``, logged as ``kl/step_*``) and,
    with β_step > 0, penalised step by step on top of the recipe's advantages (``step_kl.py``); with
    β_step = 0 the step is the same, bit for bit, as without it."""
    P, G, T = rollout.shape
    r = scored.r
    with torch.no_grad():
        logp_anchor = anchor.log_probs(prompts, rollout.completions)                          # (P,G,T)
        # π_old: the sampling pass's own log-probs when it sampled the policy itself (no extra pass);
        # after temperature/top-k/top-p, or for logged data, score the policy once
        logp_old = None if rollout.logp_is_policy and logp_behaviour is None else \
            policy.log_probs(prompts, rollout.completions).masked_fill(~rollout.mask, 0.0)
    lp_old = rollout.logp if logp_old is None else logp_old
    lp_ref = lp_old if logp_behaviour is None else logp_behaviour        # the ratio's denominator
    R = recipe.kl.shape_reward(r, lp_old, logp_anchor, rollout.mask, beta)                     # (P,G) or (P,G,T)
    targets = None
    if isinstance(recipe.baseline, GAE):
        recipe.baseline(R)                 # raises: a declared critic that no value network was bound to
    if isinstance(recipe.baseline, Critic):                                                    # PPO: V and GAE
        A, targets = recipe.baseline.advantages(R, prompts, rollout.completions, rollout.mask, scored.valid)
        R = R if R.dim() == 2 else R.sum(-1)                                                   # (P,G) for metrics
    else:
        if R.dim() == 3:
            raise ValueError(f"recipe {recipe.name!r}: kl={recipe.kl} gives per-token rewards, which only a "
                             f"critic reads; use baseline 'gae' (recipe ppo) or kl='reward:…'")
        A = recipe.baseline(R, prompts) if scored.valid is None else \
            recipe.baseline(R, prompts, valid=scored.valid)                                    # (P,G)
    if scored.steps is not None:                 # process rewards: per-token advantages on top
        st = scored.steps
        A = (A if A.dim() == 3 else A[..., None]) + step_advantages(st.values, st.ends, st.present, T)   # (P,G,T)
    kl_steps = None if step_kl is None else step_kl.measure(lp_old, logp_anchor, rollout.completions, rollout.mask)
    if kl_steps is not None and step_kl.beta > 0:  # the per-step KL as a process reward: per-token advantages
        A = per_token(A) + step_kl.advantages(kl_steps, T)                                     # (P,G,T)
    W = recipe.aggregation(rollout.mask)                                                       # (P,G,T)
    split = minibatches > 1
    logp_last = psi_last = None
    if split:
        logp_last, psi_last = torch.zeros_like(lp_old), torch.zeros_like(lp_old)
    grad_norm = None
    for _ in range(updates):
        for idx in minibatch_indices(P, minibatches, generator, lp_old.device):
            rows = (lambda t: t) if idx is None else (lambda t: t[idx])     # the whole batch: no copies
            x, y = rows(prompts), rows(rollout.completions)
            logp = policy.log_probs(x, y)                          # (p,G,T), graph for neural policies
            lp = logp.detach()
            W_mb = recipe.aggregation(rows(rollout.mask)) if split else W
            dl = recipe.surrogate.grad(lp, rows(lp_ref), rows(per_token(A)))                    # ∂ℓ_pg/∂logp
            _, kl_grad = recipe.kl.loss_terms(lp, rows(logp_anchor), beta if idx is None else _rows(beta, idx))
            psi = W_mb * (dl if kl_grad is None else dl + kl_grad)                             # ∂L/∂logp
            if not math.isfinite(psi.sum().item()):   # one cheap check: a NaN/inf in R, A, logp or logp_anchor lands here
                raise FloatingPointError(_non_finite_message(R=R, A=A, logp=lp, logp_anchor=logp_anchor))
            optimizer.zero_grad()
            policy.accumulate_grad(x, y, logp, psi)
            if max_grad_norm is not None:
                norm = torch.nn.utils.clip_grad_norm_([p for p in policy.parameters() if p.grad is not None],
                                                      max_grad_norm)
                grad_norm = float(norm)
                if not torch.isfinite(norm):
                    raise FloatingPointError(f"the gradient norm is {grad_norm}: the loss or log-probs went non-finite; "
                                             "the weights were not updated (lower the learning rate or check the reward)")
            optimizer.step()
            if targets is not None:
                recipe.baseline.fit(x, y, targets if idx is None else targets.rows(idx))
            if split:
                logp_last[idx], psi_last[idx] = lp, psi / minibatches    # on the full batch's scale
            else:
                logp_last, psi_last = lp, psi
    ratio_ref = None if logp_old is None and logp_behaviour is None else lp_ref
    return Step(rollout, r, R, A, logp_anchor, logp_last, psi_last, W, recipe, beta, ratio_ref, grad_norm, scored,
                kl_steps)


def minibatch_indices(P: int, n: int, generator: torch.Generator | None = None, device=None) -> list[Tensor | None]:
    """The prompts 0..P−1 split into n minibatches (``[None]``, the whole batch, when n = 1; else a fresh random order,
    drawn from ``generator``, cut into n nearly equal parts)."""
    if n == 1:
        return [None]                    # None: every prompt, without indexing
    if not 1 <= n <= P:
        raise ValueError(f"minibatches={n} must be between 1 and the number of prompts per step ({P})")
    order = torch.randperm(P, generator=generator, device="cpu" if generator is None else generator.device)
    return [part.to(device) for part in order.tensor_split(n)]


def _rows(beta, idx: Tensor):
    """β for the rows ``idx``: a float as is, a (P,) tensor of one β per prompt indexed."""
    return beta[idx] if isinstance(beta, Tensor) and beta.dim() == 1 else beta


def _non_finite_message(**tensors) -> str:
    names = {"R": "total reward R", "A": "advantage A", "logp": "policy log-probs logp",
             "logp_anchor": "anchor log-probs logp_anchor"}
    bad = [names[k] for k, t in tensors.items() if not bool(torch.isfinite(t).all())]
    where = ", ".join(bad) if bad else "the surrogate or KL terms (ψ overflowed)"
    return (f"the loss went non-finite: ψ = ∂L/∂logp holds NaN or inf (non-finite: {where}); the weights were "
            "not updated (lower the learning rate, or check the reward and the anchor)")


def _to_device(s: Scored, dev) -> Scored:
    from minigrpo.core.scored import StepRewards

    if s.r.device == dev and not s.components and not s.applicable and s.valid is None and s.steps is None:
        return s                                  # a bare reward already there (a bandit's): nothing to move
    steps = None if s.steps is None else StepRewards(s.steps.values.to(dev), s.steps.ends.to(dev),
                                                       s.steps.present.to(dev))
    return Scored(s.r.to(dev), {k: v.to(dev) for k, v in s.components.items()},
                  {k: v.to(dev) for k, v in s.applicable.items()}, None if s.valid is None else s.valid.to(dev), steps)


def train(policy: Policy, anchor: Anchor, prompts, reward_fn: Reward, recipe: Recipe, beta_ctl, optimizer, G: int,
          steps: int, *, generator: torch.Generator | None = None, **step_kwargs) -> Iterator[Step]:
    """Yield one ``Step`` per GRPO step. ``prompts`` is a tensor used every step, or a callable
    ``prompts(step_index) -> tensor`` (a data loader). ``beta_ctl`` is a FixedBeta or AdaptiveBeta.
    A policy or anchor that lacks a member of its protocol is refused before the first step (``TypeError``)."""
    require(policy, Policy, "train: policy")     # once per run, not per step: a Protocol isinstance costs ~10 µs
    require(anchor, Anchor, "train: anchor")
    for t in range(steps):
        batch = prompts(t) if callable(prompts) else prompts
        step = grpo_step(policy, anchor, batch, reward_fn, recipe, beta_ctl.value, optimizer, G,
                         generator=generator, **step_kwargs)
        beta_ctl.update(step)
        yield step
