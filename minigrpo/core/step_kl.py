"""The KL to the anchor per reasoning step: measured, and optionally penalised step by step.

A completion of a multi-step task (the chain task's ``"12,9,17"``) is cut into steps; ``step_ids``
(P, G, T) says which step each completion token belongs to (−1: none, e.g. padding). Symbols:

===============  ===========  =================================================================
``logp``         (P, G, T)    log π(y_t | x, y_<t) of the sampled token under the policy (π_old)
``logp_anchor``  (P, G, T)    log π_anchor(y_t | x, y_<t) of the same token
``mask``         (P, G, T)    True on completion tokens (up to and including EOS)
``step_ids``     (P, G, T)    s ∈ {0, …, S−1}: the step of token t; −1: in no step
``kl``           (P, G, S)    KL_s = Σ_{t ∈ step s} k(y_t): the KL estimate of step s
``beta_step``    float        β_step, the coefficient of the per-step penalty (0: report only)
===============  ===========  =================================================================

By the chain rule KL(π ‖ π_anchor) over a whole completion is Σ_t E[KL(π(·|x,y_<t) ‖ π_anchor(·|x,y_<t))],
so it splits into the steps' shares, and the sampled Σ_{t ∈ s} k1(y_t) is an unbiased estimate of step s's
share. With k1 (the default) the steps add up exactly to the sequence KL that ``Step.kl`` logs.

The penalty (``StepKL`` with β_step > 0) is the per-step KL used as a *process reward*: step s of
completion (p, g) earns −β_step·KL_s, and ``advantages.step_advantages`` turns that into per-token
advantages with a group baseline per step index — the same machinery that credits the chain task's step
rewards — added on top of the recipe's advantages (its sequence-level baseline is untouched):

    ã_{p,g,s} = −β_step·(KL_{p,g,s} − mean_{j : step s present} KL_{p,j,s})
    A_{p,g,t} += Σ_{s : t ≤ end_{p,g,s}} ã_{p,g,s}

What this is, plainly: a token is charged for the drift of its own step and of every later step (the
return-to-go), never for the drift of earlier steps it could not have caused, and each step's drift is
compared with the same step's drift in the other completions of the group. What it is not: a new
objective. The KL of earlier steps is, given the prefix, independent of a token's own choice, so leaving
it out changes the variance of the gradient, not its expectation: with k1 the expected update is that of
the sequence KL in the reward with β + β_step (the same fixed point π* ∝ π_anchor·exp(r/(β + β_step)),
up to the group baselines' own biases). Penalising per step is a change of credit assignment, the
KL-side twin of notebook 09's step rewards; a budget per step (max(0, KL_s − b)) would be a new
objective, and is not what this does. PPO's per-token KL (``kl.KLInTokenReward``) goes one step further,
charging each token with the drift from there on, and needs a critic to do it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from minigrpo.core.advantages import step_advantages
from minigrpo.core.kl import K1, Estimator


def step_count(step_ids: Tensor) -> int:
    """S: one more than the largest step id (0 when no token is in a step)."""
    return int(step_ids.max().item()) + 1 if step_ids.numel() else 0


def step_sums(x: Tensor, step_ids: Tensor, S: int | None = None) -> Tensor:
    """Σ_{t : step_ids_t = s} x_t for each step s: (P, G, T) → (P, G, S). Tokens with id −1 add nothing;
    a step id with no token sums to 0. S defaults to ``step_count(step_ids)``."""
    P, G, T = x.shape
    S = step_count(step_ids) if S is None else S
    in_step = step_ids >= 0
    out = torch.zeros(P, G, S + 1, dtype=x.dtype, device=x.device)                    # column S: no step
    idx = torch.where(in_step, step_ids, S).long()
    vals = torch.where(in_step, x, torch.zeros((), dtype=x.dtype, device=x.device))   # inf on padding adds 0
    return out.scatter_add(-1, idx, vals)[..., :S]                                    # (P, G, S)


def step_kl(logp: Tensor, logp_anchor: Tensor, mask: Tensor, step_ids: Tensor, S: int | None = None,
            estimator: Estimator = K1) -> Tensor:
    """KL_s = Σ_{t ∈ step s, m_t} k(y_t): the sampled KL of each step, (P, G, S).

    k1 = log π − log π_anchor by default: unbiased for each step's chain-rule share of the KL, and the
    steps sum to the sequence KL the run logs (``Step.kl``) when every completion token is in a step; a
    single step's estimate can be negative. k3 (``estimator=K3``) is ≥ 0 token by token, also unbiased
    for a token's conditional KL, but its sum is not the logged k1 KL."""
    ids = torch.where(mask.bool(), step_ids, -1)
    return step_sums(estimator.value(logp, logp_anchor), ids, S)


def step_spans(step_ids: Tensor, S: int | None = None) -> tuple[Tensor, Tensor]:
    """(ends, present), both (P, G, S): the last token index of each step and whether the step has any
    token — the ``StepRewards`` layout ``advantages.step_advantages`` reads (ends are 0 where absent)."""
    P, G, T = step_ids.shape
    S = step_count(step_ids) if S is None else S
    t = torch.arange(T, device=step_ids.device).expand(P, G, T)
    in_step = step_ids >= 0
    idx = torch.where(in_step, step_ids, S).long()
    last = torch.full((P, G, S + 1), -1, dtype=torch.long, device=step_ids.device)
    last = last.scatter_reduce(-1, idx, torch.where(in_step, t, -1), reduce="amax")[..., :S]   # (P, G, S)
    return last.clamp_min(0), last >= 0


@dataclass(frozen=True)
class StepKLs:
    """The measured per-step KL of one rollout: ``kl``, ``ends``, ``present``, all (P, G, S)."""

    kl: Tensor
    ends: Tensor
    present: Tensor

    def metrics(self) -> dict:
        """Stable keys: ``kl/step_mean`` (mean over the steps completions have), ``kl/step_max`` (the
        mean over completions of their largest step KL) and ``kl/step/<s>`` (the mean KL of step s over
        the completions that have it): the per-step profile."""
        kl, present = self.kl, self.present
        if not bool(present.any()):
            return {}
        has = present.any(-1)                                                          # (P, G)
        top = kl.masked_fill(~present, -torch.inf).amax(-1)                            # (P, G)
        out = {"kl/step_mean": kl[present].mean().item(), "kl/step_max": top[has].mean().item()}
        for s in range(kl.shape[-1]):
            if bool(present[..., s].any()):
                out[f"kl/step/{s}"] = kl[..., s][present[..., s]].mean().item()
        return out


@dataclass(frozen=True)
class StepKL:
    """The per-step KL of a run: always measured (for the metrics), penalised when ``beta`` > 0.

    ``steps_of(completions, mask)`` → step ids (P, G, T) is the task's own cut into steps, bound per run
    (for the chain task: ``lm.tokens.step_ids``, the step reward's separators). See the module docstring
    for what the penalty is and is not."""

    beta: float                                       # β_step; 0: measured and reported only
    steps_of: Callable[[Tensor, Tensor], Tensor]
    estimator: Estimator = K1

    def measure(self, logp: Tensor, logp_anchor: Tensor, completions: Tensor, mask: Tensor) -> StepKLs:
        """KL_s (P, G, S) with each step's span, from π_old's and the anchor's log-probs."""
        ids = torch.where(mask.bool(), self.steps_of(completions, mask).to(mask.device), -1)   # (P, G, T)
        S = step_count(ids)
        ends, present = step_spans(ids, S)
        return StepKLs(step_kl(logp, logp_anchor, mask, ids, S, self.estimator), ends, present)

    def advantages(self, measured: StepKLs, T: int) -> Tensor:
        """The penalty's per-token advantages (P, G, T): ``step_advantages`` of the step rewards −β_step·KL_s."""
        return step_advantages(-self.beta * measured.kl, measured.ends, measured.present, T)
