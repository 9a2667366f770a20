"""Exact answers for enumerable problems: the KL-regularised optimum and distances between distributions.

The guided-reward objective J(π) = E_{y~π}[r(y)] − β·KL(π ‖ π_anchor) has the closed-form maximiser

    π*(y|x) = π_anchor(y|x) · exp(r(x,y)/β) / Z(x)

(e.g. Rafailov et al. 2023, "Direct Preference Optimization", eq. 4). Every function here takes
full distributions as log-probabilities over the last dimension, so it works per prompt on
(P, V) tensors, on one (V,) distribution, or on a (steps, P, V) history.
"""
from __future__ import annotations

import torch
from torch import Tensor

from minigrpo.core.kl import exact_kl


def optimal_policy(logp_anchor: Tensor, r: Tensor, beta) -> Tensor:
    """log π* = log_softmax(log π_anchor + r/β). ``beta`` is a float or a tensor broadcastable to r."""
    beta = torch.as_tensor(beta, dtype=logp_anchor.dtype)
    if (beta <= 0).any():
        raise ValueError(f"optimal_policy: beta={beta.tolist()} must be > 0 (β = 0 puts all mass on argmax r)")
    return torch.log_softmax(logp_anchor + r / beta, dim=-1)


def kl_divergence(logp: Tensor, logq: Tensor) -> Tensor:
    """KL(p ‖ q) = Σ_y p(y) log(p(y)/q(y)) over the last dimension."""
    return exact_kl(logp, logq, dim=-1)


def total_variation(logp: Tensor, logq: Tensor) -> Tensor:
    """TV(p, q) = ½ Σ_y |p(y) − q(y)| over the last dimension."""
    return 0.5 * (logp.exp() - logq.exp()).abs().sum(-1)


def expected_reward(logp: Tensor, r: Tensor) -> Tensor:
    """E_{y~π}[r(y)] = Σ_y π(y)·r(y)."""
    return (logp.exp() * r).sum(-1)


def objective(logp: Tensor, logp_anchor: Tensor, r: Tensor, beta) -> Tensor:
    """J(π) = E_π[r] − β·KL(π ‖ π_anchor): what KL-in-reward GRPO maximises; π* is its argmax."""
    return expected_reward(logp, r) - torch.as_tensor(beta) * kl_divergence(logp, logp_anchor)


def reverse_kl_fixed_point(logp_anchor: Tensor, r: Tensor, beta: float, iters: int = 200) -> Tensor:
    """Where k3-in-the-loss lands on a softmax policy: the maximiser of E_π[r] − β·KL(π_anchor ‖ π).

    On samples from π, E[∇k3] is the gradient of the *reverse* KL, KL(π_anchor ‖ π), so
    DeepSeekMath's loss-side k3 optimises this objective instead of J. Setting its gradient in the
    logits to zero, π_y (r_y − r̄) + β (π_anchor,y − π_y) = 0, gives

        π_y = β·π_anchor,y / (β + c − r_y),    with c = E_π[r] fixed by Σ_y π_y = 1.

    Σ_y β·π_anchor,y/(β + c − r_y) falls monotonically in c on c > max r − β, so c is found by
    bisection. For (V,) inputs; returns log π.
    """
    a, r = logp_anchor.double().exp(), r.double()
    lo = (r.max() - beta).item() + 1e-12       # sum → ∞ as c → max r − β
    hi = lo + beta + (r.max() - r.min()).item() + 1.0
    while (beta * a / (beta + hi - r)).sum() > 1:   # widen until the sum drops below 1
        hi = lo + 2 * (hi - lo)
    for _ in range(iters):
        c = 0.5 * (lo + hi)
        if (beta * a / (beta + c - r)).sum() > 1:
            lo = c
        else:
            hi = c
    pi = beta * a / (beta + 0.5 * (lo + hi) - r)
    return (pi / pi.sum()).log().to(logp_anchor.dtype)


def bradley_terry(r: Tensor) -> Tensor:
    """P(a ≻ b) = σ(r_a − r_b) for every pair of arms: (V,) → (V, V) (Bradley & Terry 1952)."""
    return torch.sigmoid(r[:, None] - r[None, :])


def dpo_optimum(logp_anchor: Tensor, r: Tensor, beta) -> Tensor:
    """Where DPO lands on Bradley–Terry preferences with reward r, given pairs that cover every arm:
    the DPO loss is minimised when β·log(π/π_anchor) equals r up to a constant (Rafailov et al. 2023,
    §4–5), which is ``optimal_policy``: the same π* as GRPO with the KL in the reward."""
    return optimal_policy(logp_anchor, r, beta)


def ipo_optimum(logp_anchor: Tensor, pref: Tensor, tau: float, sampler: Tensor | None = None) -> Tensor:
    """Where IPO lands (Azar et al. 2023, eq. 10 and Proposition 4): with pairs (y, y') drawn from a
    sampler μ (default: the anchor) and preference probabilities ``pref`` (V, V),

        log π(y) − log π_anchor(y) = (P(y ≻ μ) − ½)/τ + const,    P(y ≻ μ) = Σ_y' μ(y')·pref[y, y']

    — setting the gradient of E[(h − 1/(2τ))²] in the log-ratios to zero. Not π*: the reward enters
    only through win rates against μ, bounded in [0, 1]. For (V,) inputs; returns log π."""
    mu = logp_anchor.exp() if sampler is None else sampler
    win = (pref * mu[None, :]).sum(-1)                                    # P(y ≻ μ), (V,)
    return torch.log_softmax(logp_anchor + (win - 0.5) / tau, dim=-1)


def logged_optimum(logp_anchor: Tensor, r: Tensor, beta, seen: Tensor, unseen_mass: float) -> Tensor:
    """Where offline GRPO (importance-weighted, k1 in the reward) lands when the logged data holds only
    the arms ``seen`` (V,) bool. Its expected gradient vanishes when the total reward
    R_k = r_k − β·log(π_k/π_anchor,k) is the same on every seen arm, so there π ∝ π_anchor·exp(r/β),
    as online; but nothing fixes the mass on the arms never logged — the fixed points are a family,
    one per ``unseen_mass``, and the run's own dynamics pick one. Returns log π for the given mass
    (spread over the unseen arms in proportion to π*). With every arm seen (mass 0) this is π*."""
    star = optimal_policy(logp_anchor, r, beta).exp()
    if bool(seen.all()):
        return star.log()
    pi = torch.where(seen, star / star[seen].sum() * (1 - unseen_mass), star / star[~seen].sum() * unseen_mass)
    return pi.log()
