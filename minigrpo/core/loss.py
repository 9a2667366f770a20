"""The gradient step's objective: the policy-gradient surrogate and how tokens are averaged.

Symbols (P × G × T: prompts × group × tokens):

===============  =======================================================================
``logp``         log π_θ(y_t | ·) of the sampled tokens under the current policy
``logp_old``     the same under the policy that sampled them (from the rollout)
``A``            advantage, broadcast to tokens: (P,G,1) or (P,G,T)
``ratio``        ρ_t = π_θ / π_old = exp(logp − logp_old)
``eps_low/high`` PPO clip range: ρ is clipped to [1 − eps_low, 1 + eps_high] (DAPO's asymmetric clip)
``mask``         True on completion tokens (EOS included), False on padding
``W``            aggregation weights: L = Σ_{p,g,t} W·ℓ
===============  =======================================================================

Why derivatives sit beside the values: every per-token loss ℓ_t depends only on its own
logp_t, and every aggregation is a weighted sum, so ∂L/∂logp_t = W_t · ℓ'_t exactly. The training
step computes this ψ = ∂L/∂logp by hand and the policy turns it into parameter gradients
(``logp.backward(ψ)`` for neural policies, a closed form for tabular ones). That skips autograd's
per-step overhead on small problems and shows the learner how hard each sampled token is pushed.
Tests check every ψ against autograd.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor


# --- the surrogate -------------------------------------------------------------------------------

MAX_LOG_RATIO = 20.0
"""|logp − logp_old| is clamped to this before the exp (as ``kl.k3`` clamps its log-ratio)."""


def importance_ratio(logp: Tensor, logp_old: Tensor) -> Tensor:
    """ρ = exp(logp − logp_old), with the log-ratio clamped to ±20.

    On-policy ρ = 1; a ratio beyond e^±20 (≈ 5e8) means π and π_old disagree completely. Clamping
    keeps ρ, the loss and ψ large but finite there, where exp would overflow to inf (float32 at 88)
    and turn ψ, then the weights, into NaN.
    """
    return torch.exp((logp - logp_old).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO))


def pg_loss(logp: Tensor, logp_old: Tensor, A: Tensor, eps_low: float | None = None,
            eps_high: float | None = None) -> Tensor:
    """Per-token policy-gradient loss (PPO, Schulman et al. 2017, eq. 7; negated to minimise):

        ℓ_t = −min(ρ_t·A, clip(ρ_t, 1 − eps_low, 1 + eps_high)·A)

    With no clip range this is ℓ_t = −ρ_t·A, whose gradient at ρ = 1 is −A·∇log π (REINFORCE).
    """
    ratio = importance_ratio(logp, logp_old)
    if eps_low is None and eps_high is None:
        return -ratio * A
    lo = 1.0 - eps_low if eps_low is not None else 0.0
    hi = 1.0 + eps_high if eps_high is not None else float("inf")
    return -torch.minimum(ratio * A, ratio.clamp(lo, hi) * A)


def pg_loss_grad(logp: Tensor, logp_old: Tensor, A: Tensor, eps_low: float | None = None,
                 eps_high: float | None = None) -> Tensor:
    """∂ℓ_t/∂logp_t = −ρ_t·A where the min picks the unclipped term ρ_t·A, else 0.

    The clipped term is chosen (and is constant in θ) when A > 0 and ρ > 1 + eps_high, or when
    A < 0 and ρ < 1 − eps_low; on a tie the unclipped term (with its gradient) is kept. Beyond the
    ±20 log-ratio clamp the push stays −ρ·A (large, finite) rather than the clamp's zero derivative.
    """
    ratio = importance_ratio(logp, logp_old)
    rA = ratio * A
    if eps_low is None and eps_high is None:
        return -rA
    lo = 1.0 - eps_low if eps_low is not None else 0.0
    hi = 1.0 + eps_high if eps_high is not None else float("inf")
    return torch.where(rA <= ratio.clamp(lo, hi) * A, -rA, 0.0)


def clip_fraction(logp: Tensor, logp_old: Tensor, A: Tensor, mask: Tensor, eps_low: float | None,
                  eps_high: float | None) -> Tensor:
    """Fraction of completion tokens whose gradient the clip removed (a standard PPO diagnostic)."""
    ratio = importance_ratio(logp, logp_old)
    lo = 1.0 - eps_low if eps_low is not None else 0.0
    hi = 1.0 + eps_high if eps_high is not None else float("inf")
    active = ratio.clamp(lo, hi) * A < ratio * A
    return (active & mask.bool()).sum() / mask.sum().clamp_min(1)


@dataclass(frozen=True)
class Surrogate:
    """The policy-gradient term: plain (no clip) or PPO-clipped with [1 − eps_low, 1 + eps_high]."""

    eps_low: float | None = None
    eps_high: float | None = None

    def __post_init__(self):
        for name in ("eps_low", "eps_high"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 < v < 10):
                raise ValueError(f"Surrogate: {name}={v!r} must be None or in (0, 10), e.g. 0.2")
        if self.eps_low is not None and self.eps_low >= 1:
            raise ValueError(f"Surrogate: eps_low={self.eps_low!r} must be < 1 (1 − eps_low is a ratio floor)")

    def value(self, logp, logp_old, A):
        return pg_loss(logp, logp_old, A, self.eps_low, self.eps_high)

    def grad(self, logp, logp_old, A):
        return pg_loss_grad(logp, logp_old, A, self.eps_low, self.eps_high)

    def __str__(self):
        return "plain" if self.eps_low is None and self.eps_high is None else f"clip[{self.eps_low},{self.eps_high}]"


PLAIN = Surrogate()


def clipped(eps: float = 0.2, eps_high: float | None = None) -> Surrogate:
    """PPO clipping with ε (symmetric), or DAPO's clip-higher when ``eps_high`` is given."""
    return Surrogate(eps, eps if eps_high is None else eps_high)


# --- aggregations: L = Σ W·ℓ ---------------------------------------------------------------------

def seq_mean_token_mean(mask: Tensor) -> Tensor:
    """Per-sequence mean, then mean over sequences (DeepSeekMath GRPO, eq. 3):

        L = 1/(P·G) Σ_{p,g} 1/|o_{p,g}| Σ_t ℓ_{p,g,t}    →   W = m / (P·G·|o_{p,g}|)

    A zero-length completion (|o| = 0) has no tokens and weight 0.
    """
    P, G, T = mask.shape
    lengths = mask.sum(-1, keepdim=True, dtype=torch.get_default_dtype())      # |o_{p,g}|, (P,G,1)
    return mask / (lengths.clamp_min(1.0) * (P * G))


def token_mean(mask: Tensor) -> Tensor:
    """Mean over every completion token in the whole batch:

        L = Σ_{p,g,t} ℓ_{p,g,t} / Σ_{p,g} |o_{p,g}|    →   W = m / Σ m

    This is what DAPO's released code and TRL's ``loss_type="dapo"`` compute. DAPO's paper (Yu et al.
    2025, eq. 8) writes the normaliser per group, 1/Σ_i |o_i| for each question's G outputs, inside
    the expectation over questions: that is ``group_token_mean``. The two differ when groups have
    different total lengths (the gradient by ~9% on a small batch in our comparison with TRL)."""
    return mask / mask.sum(dtype=torch.get_default_dtype()).clamp_min(1.0)


def group_token_mean(mask: Tensor) -> Tensor:
    """Token mean within each group, then mean over the P groups (DAPO, Yu et al. 2025, eq. 8 as written):

        L = 1/P Σ_p [ Σ_{g,t} ℓ_{p,g,t} / Σ_g |o_{p,g}| ]    →   W = m / (P · Σ_g |o_{p,g}|)

    Every prompt weighs the same; within a prompt every token does. A group with no tokens has weight 0.
    """
    P, G, T = mask.shape
    per_group = mask.sum((1, 2), keepdim=True, dtype=torch.get_default_dtype())   # Σ_g |o_{p,g}|, (P,1,1)
    return mask / (per_group.clamp_min(1.0) * P)


def constant_normaliser(max_tokens: int | None = None) -> Callable[[Tensor], Tensor]:
    """Sum over tokens divided by a constant (Dr. GRPO, Liu et al. 2025, "Understanding R1-Zero-Like
    Training"), so no sequence's tokens are up- or down-weighted by its length:

        L = 1/(P·G·T_max) Σ_{p,g,t} ℓ_{p,g,t}    →   W = m / (P·G·T_max)

    ``max_tokens`` is T_max (the generation budget); None uses the rollout's T.
    """
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"constant_normaliser: max_tokens={max_tokens!r} must be ≥ 1")

    def constant_normaliser_weights(mask: Tensor) -> Tensor:
        P, G, T = mask.shape
        return mask.to(torch.get_default_dtype()) / (P * G * (max_tokens or T))

    return constant_normaliser_weights


def aggregate(x: Tensor, W: Tensor) -> Tensor:
    """L = Σ W·x (padding has W = 0 and never contributes, even if x is inf there)."""
    return torch.where(W != 0, W * x, torch.zeros((), dtype=x.dtype)).sum()


# --- from ψ to the parameters --------------------------------------------------------------------

class AutogradGradient:
    """Mixin that gives a neural policy its ``accumulate_grad`` (``protocols.Policy``) by autograd:
    ∂L/∂θ = Σ ψ·∂logp/∂θ is the vector-Jacobian product ``logp.backward(ψ)`` through the graph
    ``log_probs`` built. (The tabular bandit policy writes the same sum in closed form instead.)"""

    def accumulate_grad(self, prompts: Tensor, completions: Tensor, logp: Tensor, psi: Tensor) -> None:
        """∂L/∂θ += Σ_{p,g,t} ψ_{p,g,t} · ∂logp_{p,g,t}/∂θ (``logp`` must carry a graph)."""
        logp.backward(psi)
