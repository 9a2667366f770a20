"""Offline GRPO: learn from completions sampled once and scored once, stored as data.

A ``LoggedBatch`` is a rollout that was not drawn from the policy being trained, in the same
layout (P × G × T): G logged completions per prompt (fewer where ``valid`` is False), their
rewards, and — when the sampler's log-probs were logged — log μ(y_t | ·) of the behaviour policy μ.
The step that learns from it is ``step.learn``, the very update the online step ends with; only
two things change:

* the importance ratio is taken to the behaviour policy, ρ_t = π_θ(y_t)/μ(y_t), not to π_old; and
* the KL in the reward is measured with the current policy, R = r − β·Σ_t (log π_θ − log π_anchor),
  because the samples no longer come from π_θ.

With k1 in the reward and the plain surrogate, E_μ[ρ·(R − b)·∇log π_θ] = E_π[(R − b)·∇log π_θ]: the
expected step is the online one, so the fixed point is again π* ∝ π_anchor·exp(r/β) — on the
completions μ ever samples. A completion μ never samples gets no signal at all (its probability is
left wherever the dynamics put it); ``tests/test_methods_bandit.py`` shows both.

What the ratio buys is subtler than "the right fixed point". On the bandit, with the group-mean
baseline and no ratio (ρ = 1), the expected step on arm k is ∝ μ_k·(R_k − E_μ R), which also vanishes
exactly when R is equal on every arm μ samples: the same π*. Without a baseline it is the ratio that
keeps it there (ρ = 1 and no baseline lands where μ_k·R_k = π_k·E_μ R; both in the tests).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from minigrpo.core.protocols import Anchor, Policy, Reward
from minigrpo.core.recipe import Recipe
from minigrpo.core.sampling import Rollout
from minigrpo.core.scored import Scored
from minigrpo.core.step import Step, collect, learn


@dataclass
class LoggedBatch:
    """Logged completions for P prompts, G slots each.

    ==================  ============  ==========================================================
    ``prompts``         (P, ...)      as the policy sees them (ids; left-padded (P, L) for an LM)
    ``completions``     (P, G, T)     token ids, padded after EOS
    ``mask``            (P, G, T)     True on completion tokens
    ``r``               (P, G)        the logged reward
    ``valid``           (P, G) bool   False on empty slots (a prompt with fewer than G completions)
    ``logp``            (P, G, T)     log μ(y_t | ·) of the behaviour policy, 0 on padding; None:
                                      not logged, and the anchor is taken to be the sampler
    ==================  ============  ==========================================================
    """

    prompts: Tensor
    completions: Tensor
    mask: Tensor
    r: Tensor
    valid: Tensor
    logp: Tensor | None = None

    @property
    def shape(self):
        return tuple(self.completions.shape)

    def rollout(self) -> Rollout:
        """The logged completions as a ``Rollout`` (``logp``: the behaviour's, zeros when not logged)."""
        logp = torch.zeros(self.mask.shape, dtype=self.r.dtype, device=self.r.device) if self.logp is None else self.logp
        return Rollout(self.prompts, self.completions, logp, self.mask, logp_is_policy=False)

    def scored(self) -> Scored:
        return Scored(self.r, valid=None if bool(self.valid.all()) else self.valid)

    def rows(self, idx: Tensor) -> "LoggedBatch":
        """The prompts ``idx`` (a minibatch of the logged set)."""
        return LoggedBatch(self.prompts[idx], self.completions[idx], self.mask[idx], self.r[idx], self.valid[idx],
                           None if self.logp is None else self.logp[idx])


def with_behaviour(batch: LoggedBatch, anchor: Anchor) -> LoggedBatch:
    """The batch with its behaviour log-probs: as logged, or the anchor's when none were (data sampled
    from the anchor)."""
    if batch.logp is not None:
        return batch
    with torch.no_grad():
        logp = anchor.log_probs(batch.prompts, batch.completions).masked_fill(~batch.mask, 0.0)
    return LoggedBatch(batch.prompts, batch.completions, batch.mask, batch.r, batch.valid, logp)


def offline_step(policy: Policy, anchor: Anchor, batch: LoggedBatch, recipe: Recipe, beta, optimizer, **learn_kwargs) -> Step:
    """One offline GRPO step: ``step.learn`` on logged completions, with ratios to the behaviour policy
    (the anchor's log-probs when the batch logged none: data sampled from the anchor)."""
    batch = with_behaviour(batch, anchor)
    return learn(policy, anchor, batch.prompts, batch.rollout(), batch.scored(), recipe, beta, optimizer,
                 logp_behaviour=batch.logp, **learn_kwargs)


def hybrid_step(policy: Policy, anchor: Anchor, prompts: Tensor, reward_fn: Reward, batch: LoggedBatch, recipe: Recipe,
                beta, optimizer, G: int, *, generator: torch.Generator | None = None, learn_kwargs: dict | None = None,
                **sampling_kwargs) -> Step:
    """Logged groups and fresh online groups in one update: sample G completions for ``prompts``
    (online, ratio to the sampler), put them beside the logged ``batch`` (ratio to its behaviour
    policy), and ``learn`` once from both. Each group keeps its own baseline. Prompts and completions
    of different lengths are padded with ``pad_id`` (prompts on the left, as the policies expect)."""
    rollout, scored = collect(policy, prompts, reward_fn, G, generator=generator, **sampling_kwargs)
    online = LoggedBatch(prompts, rollout.completions, rollout.mask, scored.r,
                         torch.ones_like(scored.r, dtype=torch.bool) if scored.valid is None else scored.valid,
                         rollout.logp)
    both = concat(online, with_behaviour(batch, anchor), sampling_kwargs.get("pad_id", 0))
    return learn(policy, anchor, both.prompts, both.rollout(), both.scored(), recipe, beta, optimizer,
                 logp_behaviour=both.logp, generator=generator, **(learn_kwargs or {}))


def concat(a: LoggedBatch, b: LoggedBatch, pad_id: int = 0) -> LoggedBatch:
    """Two batches as one, prompts stacked: prompts (P, L) left-padded and completions right-padded to
    the longer, groups filled with invalid slots to the larger G."""
    def widen_prompts(x, L):
        return x if x.dim() == 1 or x.shape[1] == L else F.pad(x, (L - x.shape[1], 0), value=pad_id)

    def widen(x, G, T, value):
        P, g, t = x.shape
        return F.pad(x, (0, T - t, 0, G - g), value=value)

    if a.prompts.dim() != b.prompts.dim():
        raise ValueError(f"concat: prompts of shapes {tuple(a.prompts.shape)} and {tuple(b.prompts.shape)} do not stack")
    L = 0 if a.prompts.dim() == 1 else max(a.prompts.shape[1], b.prompts.shape[1])
    G, T = max(a.shape[1], b.shape[1]), max(a.shape[2], b.shape[2])
    parts = [(widen_prompts(x.prompts, L), widen(x.completions, G, T, pad_id), widen(x.mask, G, T, False),
              F.pad(x.r, (0, G - x.shape[1])), F.pad(x.valid, (0, G - x.shape[1]), value=False),
              widen(x.logp, G, T, 0.0)) for x in (a, b)]
    return LoggedBatch(*(torch.cat(t) for t in zip(*parts)))
