"""Offline pairwise methods: DPO and IPO, on (prompt, chosen, rejected) in the one layout.

A preference pair is a group of two completions: ``completions`` (P, 2, T) with index 0 the chosen
y_w and index 1 the rejected y_l. Symbols:

=================  ==========  ==============================================================
``logp``           (P,2,T)     log π_θ of each token of both completions (a graph)
``logp_anchor``    (P,2,T)     the same under the frozen anchor (the reference policy)
``mask``           (P,2,T)     True on completion tokens
``h``              (P,)        h = [log π_θ(y_w) − log π_anchor(y_w)] − [log π_θ(y_l) − log π_anchor(y_l)]
                               (sequence log-probs: token sums)
``beta``/``tau``   float       DPO's β; IPO's τ (TRL calls it β too)
=================  ==========  ==============================================================

Both losses are functions of h alone, so ∂L/∂logp_t = ±(∂ℓ/∂h)/P on every token of the chosen (+)
and rejected (−) completion: the step builds that ψ and hands it to ``policy.accumulate_grad``,
exactly as the GRPO step does. The fixed points on a bandit (``optimum.py``) are tested in
tests/test_methods_bandit.py: DPO on Bradley–Terry preferences P(a ≻ b) = σ(r_a − r_b) lands on
π* ∝ π_anchor·exp(r/β) — GRPO's optimum with the KL in the reward — and IPO on
π ∝ π_anchor·exp((P(y ≻ π_anchor) − ½)/τ).

What the seed documents call DRPO (a "direct reward/preference policy optimisation", pairwise and
offline) is this family: no reward model and no sampling during training, only a classifier-style
loss on logged comparisons against the anchor.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from minigrpo.core.masks import masked_sum


def preference_margin(logp: Tensor, logp_anchor: Tensor, mask: Tensor) -> Tensor:
    """h = log-ratio of the chosen minus log-ratio of the rejected, (P,2,T) → (P,)."""
    ratio = masked_sum(logp - logp_anchor, mask, dim=-1)          # (P,2) sequence log π_θ/π_anchor
    return ratio[:, 0] - ratio[:, 1]


@dataclass(frozen=True)
class DPO:
    """Direct Preference Optimisation (Rafailov et al. 2023, eq. 7):

        ℓ(h) = −log σ(β·h)        ∂ℓ/∂h = −β·σ(−β·h)

    The Bradley–Terry likelihood of the pair with the implicit reward β·log π_θ/π_anchor."""

    beta: float = 0.1
    name: str = "dpo"

    def __post_init__(self):
        _positive("DPO", "beta", self.beta)

    def value(self, h: Tensor) -> Tensor:
        return -F.logsigmoid(self.beta * h)

    def grad(self, h: Tensor) -> Tensor:
        return -self.beta * torch.sigmoid(-self.beta * h)


@dataclass(frozen=True)
class IPO:
    """Identity Preference Optimisation (Azar et al. 2023, "A General Theoretical Paradigm to
    Understand Learning from Human Preferences", eq. 17):

        ℓ(h) = (h − 1/(2τ))²        ∂ℓ/∂h = 2·(h − 1/(2τ))

    A regression of h onto 1/(2τ): unlike DPO it does not push h to infinity on pairs that are
    always won, so it stays regularised when preferences are deterministic."""

    tau: float = 0.1
    name: str = "ipo"

    def __post_init__(self):
        _positive("IPO", "tau", self.tau)

    def value(self, h: Tensor) -> Tensor:
        return (h - 1 / (2 * self.tau)) ** 2

    def grad(self, h: Tensor) -> Tensor:
        return 2 * (h - 1 / (2 * self.tau))


def _positive(who, field_, v):
    if not (isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and v > 0):
        raise ValueError(f"{who}: {field_}={v!r} must be a finite number > 0")


LOSSES = {"dpo": DPO, "ipo": IPO}


@dataclass
class PreferenceStep:
    """One update on a batch of pairs, for inspection and metrics."""

    h: Tensor           # (P,)  margins before the update
    loss: Tensor        # ()    mean ℓ(h)
    psi: Tensor         # (P,2,T) ∂L/∂logp
    grad_norm: float | None = None

    def metrics(self) -> dict:
        """Mean loss, mean margin h, and the fraction of pairs the policy already ranks right (h > 0)."""
        return {"loss": self.loss.item(), "margin": self.h.mean().item(),
                "pair_accuracy": (self.h > 0).float().mean().item(),
                **({} if self.grad_norm is None else {"grad_norm": self.grad_norm})}


def preference_step(policy, anchor_logp: Tensor, prompts, completions: Tensor, mask: Tensor, loss, optimizer, *,
                    weights: Tensor | None = None, max_grad_norm: float | None = None) -> PreferenceStep:
    """One optimizer step on L = Σ_p w_p·ℓ(h_p) / Σ_p w_p (w = 1: the mean over pairs). ``anchor_logp``
    (P,2,T) is computed once per pair (no grad); ``policy`` is a ``protocols.Policy``. ``weights`` (P,)
    count repeated pairs: a bandit's million logged pairs are its few distinct ones, counted."""
    P, two, T = completions.shape
    if two != 2:
        raise ValueError(f"preference_step: completions must be (P, 2, T) — chosen, rejected — got {tuple(completions.shape)}")
    logp = policy.log_probs(prompts, completions)                                     # (P,2,T), graph
    h = preference_margin(logp.detach(), anchor_logp, mask)                           # (P,)
    w = torch.ones_like(h) if weights is None else weights.to(h.dtype)
    w = w / w.sum()
    dl = loss.grad(h) * w                                                             # ∂L/∂h_p
    sign = torch.tensor([1.0, -1.0], dtype=dl.dtype, device=dl.device)
    psi = (dl[:, None, None] * sign[None, :, None]) * mask.to(dl.dtype)              # (P,2,T)
    if not bool(torch.isfinite(psi).all()):
        raise FloatingPointError("the preference loss went non-finite (h holds NaN or inf); the weights were not "
                                 "updated (lower the learning rate, or check the pairs)")
    optimizer.zero_grad()
    policy.accumulate_grad(prompts, completions, logp, psi.to(logp.dtype))
    grad_norm = None
    if max_grad_norm is not None:
        norm = torch.nn.utils.clip_grad_norm_([p for p in policy.parameters() if p.grad is not None], max_grad_norm)
        grad_norm = float(norm)
        if not math.isfinite(grad_norm):
            raise FloatingPointError(f"the gradient norm is {grad_norm}; the weights were not updated")
    optimizer.step()
    return PreferenceStep(h, (loss.value(h) * w).sum(), psi, grad_norm)
