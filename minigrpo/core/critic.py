"""A learned value function and GAE: the per-token baseline of PPO (the critic).

Symbols (P × G × T: prompts × group × tokens):

===============  ==========  ==============================================================
``R``            (P,G,T)     per-token reward R_t (``kl.KLInTokenReward``: −β·k_t, r at the last
                             token); a (P,G) reward is placed on the last token
``V``            (P,G,T)     V_φ(x, y_<t): the critic's value of the state before token t
``delta``        (P,G,T)     TD error δ_t = R_t + γ·V_{t+1} − V_t, with V = 0 after the last token
``A``            (P,G,T)     GAE advantage
``returns``      (P,G,T)     A + V: the value target
``gamma, lam``   floats      discount γ and GAE's λ
===============  ==========  ==============================================================

PPO as RLHF uses it (Ziegler et al. 2019; Stiennon et al. 2020; Ouyang et al. 2022) replaces the
group's statistics with a learned V: each token's advantage is how much better the rest of the
completion went than V expected. The same ``Critic`` serves the bandit (``value_net`` a table with
one value per prompt, T = 1: A = R − V(x)) and a language model (``lm.critic.ValueModel``).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from minigrpo.core.masks import masked_mean


def gae(R: Tensor, V: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, "High-Dimensional Continuous Control
    Using Generalized Advantage Estimation", eq. 16):

        δ_t = R_t + γ·V_{t+1} − V_t                (V_{t+1} = 0 past the completion's last token)
        A_t = Σ_{l ≥ 0} (γλ)^l · δ_{t+l}  =  δ_t + γλ·A_{t+1}
        returns_t = A_t + V_t

    λ = 1 gives the Monte-Carlo return minus V (unbiased, high variance); λ = 0 gives the one-step
    TD error (low variance, biased by V's errors). Padding (mask False) gets A = 0. Returns (A, returns),
    both (P,G,T), without a graph.
    """
    P, G, T = R.shape
    m = mask.to(R.dtype)
    R, V = R.detach() * m, V.detach() * m
    A = torch.zeros_like(R)
    next_A = torch.zeros_like(R[..., 0])                                 # (P,G)
    next_V = torch.zeros_like(R[..., 0])
    for t in reversed(range(T)):
        delta = R[..., t] + gamma * next_V - V[..., t]
        next_A = (delta + gamma * lam * next_A) * m[..., t]              # padding: A = 0, nothing carried
        A[..., t] = next_A
        next_V = V[..., t]
    return A, A + V


def value_loss(V: Tensor, V_old: Tensor, returns: Tensor, mask: Tensor, clip: float | None = 0.2) -> Tensor:
    """PPO's clipped value loss (Schulman et al. 2017 baselines code; Ouyang et al. 2022):

        L_V = ½ · mean_t max((V − returns)², (V_old + clip(V − V_old, −ε, ε) − returns)²)

    over completion tokens; ``clip`` None is the plain squared error. The clip keeps one rollout's
    several minibatch epochs from moving V far from what it predicted when the rollout was scored.
    """
    err = (V - returns) ** 2
    if clip is not None:
        clipped = V_old + (V - V_old).clamp(-clip, clip)
        err = torch.maximum(err, (clipped - returns) ** 2)
    return 0.5 * masked_mean(err, mask)


@dataclass(frozen=True)
class GAE:
    """The piece a recipe names (``baseline=gae``): per-token advantages from a learned value by GAE.
    A recipe holds this declaration; a run binds it to a value network with ``Critic`` (the value
    net is the run's, as a policy is)."""

    gamma: float = 1.0
    lam: float = 0.95
    name: str = "gae"
    min_group: int = 1

    def __post_init__(self):
        for field_, v in (("gamma", self.gamma), ("lam", self.lam)):
            if not (isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 <= v <= 1):
                raise ValueError(f"GAE: {field_}={v!r} must be a number in [0, 1]")

    def __call__(self, R, prompts=None, valid=None, rollout=None):
        raise TypeError("baseline 'gae' needs a learned value: bind it to a value network with "
                        "core.critic.Critic(value_net, GAE(...)) (runs and the bandit runner do this)")


@dataclass
class CriticTargets:
    """What ``Critic.advantages`` measured on a rollout, kept for the value updates: V_old and returns (P,G,T)."""

    V_old: Tensor
    returns: Tensor
    mask: Tensor

    def rows(self, idx: Tensor) -> "CriticTargets":
        """The targets of the rows ``idx`` (a minibatch of prompts)."""
        return CriticTargets(self.V_old[idx], self.returns[idx], self.mask[idx])


class Critic(nn.Module):
    """A learned per-token baseline: ``advantages`` scores a rollout with V_φ and runs GAE; ``fit`` takes
    one optimizer step of the clipped value loss on a minibatch of it (the step calls it once per
    minibatch, beside the policy's update).

    ``value_net(prompts, completions) -> V (P,G,T)`` with a graph; ``optimizer`` defaults to Adam on
    its parameters with ``lr``. ``whiten`` rescales A to zero mean and unit variance over the batch's
    tokens (as most PPO code does); off by default, so A keeps its units.
    """

    name = "gae"
    min_group = 1

    def __init__(self, value_net: nn.Module, gae: GAE = GAE(), lr: float = 1e-3, value_clip: float | None = 0.2,
                 whiten: bool = False, optimizer=None, max_grad_norm: float | None = 1.0):
        super().__init__()
        if not (isinstance(lr, numbers.Real) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"Critic: lr={lr!r} must be a finite number > 0")
        if value_clip is not None and not (isinstance(value_clip, numbers.Real) and value_clip > 0):
            raise ValueError(f"Critic: value_clip={value_clip!r} must be None or a number > 0")
        self.value_net, self.gae, self.value_clip, self.whiten = value_net, gae, value_clip, whiten
        self.max_grad_norm = max_grad_norm
        params = [p for p in value_net.parameters() if p.requires_grad]
        if not params:
            raise ValueError("Critic: the value network has no trainable parameters")
        self.optimizer = optimizer if optimizer is not None else torch.optim.Adam(params, lr=lr)
        self.last_loss = float("nan")

    def advantages(self, R: Tensor, prompts, completions: Tensor, mask: Tensor,
                   valid: Tensor | None = None) -> tuple[Tensor, CriticTargets]:
        """Per-token advantages A (P,G,T) for a rollout, and the targets its value updates fit.
        ``R`` is the per-token reward (P,G,T), or (P,G) put on each completion's last token."""
        if R.dim() == 2:
            last = (mask.sum(-1, keepdim=True) - 1).clamp_min(0)                          # (P,G,1)
            R = torch.zeros(mask.shape, dtype=R.dtype, device=R.device).scatter(-1, last, R[..., None])
        m = mask if valid is None else mask & valid[..., None]
        with torch.no_grad():
            V = self.value_net(prompts, completions).to(R.dtype)                         # (P,G,T)
        A, returns = gae(R, V, m, self.gae.gamma, self.gae.lam)
        if self.whiten and m.any():
            mu = masked_mean(A, m)
            sd = masked_mean((A - mu) ** 2, m).sqrt()
            A = torch.where(m, (A - mu) / (sd + 1e-8), 0.0)
        return A, CriticTargets(V.detach(), returns, m)

    def fit(self, prompts, completions: Tensor, targets: CriticTargets) -> float:
        """One optimizer step on ``value_loss`` for these rows (a minibatch of the rollout)."""
        with torch.enable_grad():
            V = self.value_net(prompts, completions)
            loss = value_loss(V.to(targets.returns.dtype), targets.V_old, targets.returns, targets.mask,
                              self.value_clip)
            self.optimizer.zero_grad()
            loss.backward()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the critic's value loss is {loss.item()}; the critic was not updated "
                                     "(lower critic_lr, or check the rewards)")
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_([p for p in self.value_net.parameters() if p.grad is not None],
                                           self.max_grad_norm)
        self.optimizer.step()
        self.last_loss = loss.item()
        return self.last_loss


class ValueTable(nn.Module):
    """V(x) = v_x: one learned value per prompt id, the same for every token (a bandit's critic:
    completions have one token, so the only state is the context)."""

    def __init__(self, n_prompts: int):
        super().__init__()
        self.v = nn.Parameter(torch.zeros(n_prompts))

    def forward(self, prompts: Tensor, completions: Tensor) -> Tensor:
        P, G, T = completions.shape
        return self.v[prompts][:, None, None].expand(P, G, T)
