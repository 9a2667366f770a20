"""The KL penalty to the anchor: estimators, where the penalty goes, and how β is chosen.

Symbols (shapes P × G × T: prompts × group × tokens):

=============  =======================================================================
``logp``       log π(y_t | x, y_<t) of the sampled token under the policy
``logp_anchor``  log π_anchor(y_t | x, y_<t) of the same token under the frozen anchor
``beta``       β, the KL coefficient: a float, or a (P,) tensor of one β per prompt
=============  =======================================================================

Estimators of KL(π ‖ π_anchor) from samples y ~ π (Schulman, "Approximating KL divergence",
http://joschu.net/blog/kl-approx.html). With log-ratio ``lr = logp_anchor − logp``:

* k1 = −lr                       unbiased, high variance, can be negative
* k2 = ½·lr²                     biased, low variance, ≥ 0
* k3 = exp(lr) − 1 − lr          unbiased, low variance, ≥ 0 (DeepSeekMath's choice)

Each estimator carries its derivative with respect to ``logp`` beside it, micrograd-style: the
training step builds ∂L/∂logp from these and hands it to the policy (see ``loss.py``).

Placement: the KL goes into the reward (R_total = r − β·Σ_t k_t, held constant — the guided-reward
GRPO of this toolkit; its fixed point is π* ∝ π_anchor·exp(r/β)), into the reward token by token
(R_t = −β·k_t, plus r at the last token: PPO for RLHF, read by a critic), or into the loss as a
differentiable term (DeepSeekMath GRPO). Loss and reward are different objectives: see ``optimum.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from minigrpo.core.masks import masked_sum


# --- estimators: value and d/dlogp side by side ------------------------------------------------

def k1(logp: Tensor, logp_anchor: Tensor) -> Tensor:
    """k1 = log π(y) − log π_anchor(y)."""
    return logp - logp_anchor


def k1_grad(logp: Tensor, logp_anchor: Tensor) -> Tensor:
    """∂k1/∂logp = 1."""
    return torch.ones_like(logp)


def k2(logp: Tensor, logp_anchor: Tensor) -> Tensor:
    """k2 = ½ (log π(y) − log π_anchor(y))²."""
    return 0.5 * (logp - logp_anchor) ** 2


def k2_grad(logp: Tensor, logp_anchor: Tensor) -> Tensor:
    """∂k2/∂logp = log π(y) − log π_anchor(y)."""
    return logp - logp_anchor


def k3(logp: Tensor, logp_anchor: Tensor) -> Tensor:
    """k3 = π_anchor(y)/π(y) − 1 − log(π_anchor(y)/π(y)).

    Computed as expm1(lr) − lr, which never rounds below 0 (exp(lr) − 1 − lr does, near lr = 0).
    The log-ratio is clamped to ±20 so a token the anchor finds far likelier than the policy gives
    a large, finite penalty instead of inf (exp(20) ≈ 5e8).
    """
    lr = (logp_anchor - logp).clamp(-20.0, 20.0)
    return torch.expm1(lr) - lr


def k3_grad(logp: Tensor, logp_anchor: Tensor) -> Tensor:
    """∂k3/∂logp = 1 − π_anchor(y)/π(y)   (log-ratio clamped as in ``k3``; beyond the clamp the push
    stays finite rather than dropping to the clamp's zero derivative)."""
    lr = (logp_anchor - logp).clamp(-20.0, 20.0)
    return -torch.expm1(lr)


@dataclass(frozen=True)
class Estimator:
    """A per-token KL estimator and its derivative with respect to ``logp``."""

    name: str
    value: Callable[[Tensor, Tensor], Tensor]
    grad: Callable[[Tensor, Tensor], Tensor]


K1 = Estimator("k1", k1, k1_grad)
K2 = Estimator("k2", k2, k2_grad)
K3 = Estimator("k3", k3, k3_grad)
ESTIMATORS = {e.name: e for e in (K1, K2, K3)}


def exact_kl(logp: Tensor, logq: Tensor, dim: int = -1) -> Tensor:
    """KL(p ‖ q) = Σ_y p(y)·(log p(y) − log q(y)) for full distributions given as log-probs.

    Terms with p(y) = 0 contribute 0 (the 0·log 0 = 0 convention), never NaN.
    """
    p = logp.exp()
    return torch.where(p > 0, p * (logp - logq), torch.zeros((), dtype=p.dtype)).sum(dim)


def per_prompt(beta, like: Tensor) -> Tensor:
    """Reshape β (float, 0-d or (P,) tensor) to broadcast against ``like`` of shape (P, ...)."""
    if not isinstance(beta, Tensor) or beta.dim() == 0:
        return beta
    return beta.reshape(beta.shape + (1,) * (like.dim() - beta.dim()))


# --- placements: the same interface, three places ---------------------------------------------

@dataclass(frozen=True)
class KLInReward:
    """Anchor KL inside the reward: R_total = r − β·Σ_t k(y_t), held constant (stop-gradient).

    With k1 the expected policy gradient is exactly ∇[E_π r − β·KL(π ‖ π_anchor)], whose
    maximiser is π* ∝ π_anchor·exp(r/β). Any baseline keeps that fixed point.
    """

    estimator: Estimator = K1

    def shape_reward(self, r: Tensor, logp: Tensor, logp_anchor: Tensor, mask: Tensor, beta) -> Tensor:
        """r (P,G), per-token log-probs (P,G,T) → R_total (P,G)."""
        kl_seq = masked_sum(self.estimator.value(logp, logp_anchor), mask, dim=-1)   # (P,G)
        return r - per_prompt(beta, r) * kl_seq

    def loss_terms(self, logp: Tensor, logp_anchor: Tensor, beta):
        """No KL term in the loss: (None, None) for (per-token value, per-token ∂/∂logp)."""
        return None, None

    def __str__(self):
        return f"reward:{self.estimator.name}"


@dataclass(frozen=True)
class KLInTokenReward:
    """Anchor KL as a per-token reward, the score added at the last token (PPO for RLHF: Ziegler et al.
    2019, §2.2; Ouyang et al. 2022, eq. 2), held constant:

        R_t = −β·k(y_t) + [t = last]·r        (P,G,T); 0 on padding

    Summed over t this is ``KLInReward``'s R_total; kept per token, a critic and GAE
    (``critic.py``) can credit each token with the rewards from there on. Only a per-token
    baseline (``critic.GAE``) reads it: the group baselines take one number per completion.
    """

    estimator: Estimator = K1

    def shape_reward(self, r: Tensor, logp: Tensor, logp_anchor: Tensor, mask: Tensor, beta) -> Tensor:
        """r (P,G), per-token log-probs (P,G,T) → R_t (P,G,T)."""
        m = mask.to(logp.dtype)
        R = -per_prompt(beta, logp) * self.estimator.value(logp, logp_anchor) * m          # (P,G,T)
        last = (mask.sum(-1, keepdim=True) - 1).clamp_min(0)                               # (P,G,1)
        return R.scatter_add(-1, last, r[..., None].to(R.dtype))

    def loss_terms(self, logp: Tensor, logp_anchor: Tensor, beta):
        return None, None

    def __str__(self):
        return f"token:{self.estimator.name}"


@dataclass(frozen=True)
class KLInLoss:
    """Anchor KL as a loss term: L = L_pg + β·aggregate(k(y_t)) (DeepSeekMath uses k3).

    Its gradient on samples from π is *not* ∇KL(π ‖ π_anchor) for k3: E_π[∇k3] = ∇KL(π_anchor ‖ π),
    the reverse KL, so the fixed point differs from π* (``optimum.reverse_kl_fixed_point``).
    """

    estimator: Estimator = K3

    def shape_reward(self, r: Tensor, logp: Tensor, logp_anchor: Tensor, mask: Tensor, beta) -> Tensor:
        return r

    def loss_terms(self, logp: Tensor, logp_anchor: Tensor, beta):
        """Per-token β·k and its derivative β·∂k/∂logp, both (P,G,T)."""
        b = per_prompt(beta, logp)
        return b * self.estimator.value(logp, logp_anchor), b * self.estimator.grad(logp, logp_anchor)

    def __str__(self):
        return f"loss:{self.estimator.name}"


@dataclass(frozen=True)
class NoKL:
    """No anchor at all (β is ignored): plain reward maximisation."""

    def shape_reward(self, r, logp, logp_anchor, mask, beta):
        return r

    def loss_terms(self, logp, logp_anchor, beta):
        return None, None

    def __str__(self):
        return "none"


def parse_kl(spec: str):
    """'reward:k1' | 'token:k1' | 'loss:k3' | 'none' → a placement. Used by the CLI and configs."""
    if spec == "none":
        return NoKL()
    where, _, est = spec.partition(":") if isinstance(spec, str) else (None, None, None)   # None, 5: refused below
    placements = {"reward": KLInReward, "token": KLInTokenReward, "loss": KLInLoss}
    if where not in placements or est not in ESTIMATORS:
        raise ValueError(
            f"kl={spec!r} is not a KL placement; allowed: 'none' or 'reward:<est>' / 'token:<est>' / 'loss:<est>' "
            f"with <est> one of {sorted(ESTIMATORS)} (e.g. 'reward:k1', 'loss:k3')")
    return placements[where](ESTIMATORS[est])


# --- β: fixed, or steered toward a target KL ---------------------------------------------------

class FixedBeta:
    """β held constant. ``value`` may be a float or a (P,) tensor (one β per prompt, for sweeps)."""

    def __init__(self, beta):
        self.value = beta

    def update(self, step) -> None:
        pass


class AdaptiveBeta:
    """Proportional controller toward a target KL (Ziegler et al. 2019, "Fine-Tuning Language
    Models from Human Preferences", §2.2):

        e = clip(KL / KL_target − 1, −0.2, 0.2);   β ← β · (1 + e · n / horizon)

    where n is the number of samples in the batch. KL above target raises β, below lowers it.
    """

    def __init__(self, beta: float, target_kl: float, horizon: float = 10_000.0):
        if not (beta > 0):
            raise ValueError(f"AdaptiveBeta: initial beta={beta!r} must be > 0 (a zero β can never grow)")
        if not (target_kl > 0):
            raise ValueError(f"AdaptiveBeta: target_kl={target_kl!r} must be > 0")
        if not (horizon > 0):
            raise ValueError(f"AdaptiveBeta: horizon={horizon!r} must be > 0")
        self.value, self.target_kl, self.horizon = float(beta), float(target_kl), float(horizon)

    def update(self, step) -> None:
        """Read the step's sampled KL (mean over completions) and adjust β."""
        kl = step.kl
        self.observe(kl.mean().item(), kl.numel())

    def observe(self, kl: float, n: int = 1) -> None:
        e = min(max(float(kl) / self.target_kl - 1.0, -0.2), 0.2)
        self.value *= 1.0 + e * n / self.horizon
