"""Rewards: any callable ``reward_fn(prompts, completions) -> r`` with r of shape (P, G).

A plain Python function is enough. A reward made of named parts returns ``Scored(r, components)``
so every part is logged. ``check_rewards`` is applied to every reward the trainer receives so a
reward that returns the wrong count, or NaN/inf, fails loudly and by name.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Scored:
    """A reward with its named parts: ``r`` (P, G), the total that trains, and ``components``
    {name: (P, G)}, each logged as ``reward/<name>``."""

    r: Tensor
    components: dict = field(default_factory=dict)


def reward_name(reward_fn) -> str:
    if isinstance(reward_fn, str):
        return reward_fn
    return getattr(reward_fn, "name", None) or getattr(reward_fn, "__name__", None) or type(reward_fn).__name__


def check_scored(out, shape: tuple, reward_fn=None) -> tuple[Tensor, dict]:
    """(r, components) from whatever a reward function returned (a tensor, a list, or ``Scored``), checked."""
    if isinstance(out, Scored):
        comps = {k: check_rewards(v, shape, f"{reward_name(reward_fn)}/{k}") for k, v in out.components.items()}
        return check_rewards(out.r, shape, reward_fn), comps
    return check_rewards(out, shape, reward_fn), {}


def check_rewards(r, shape: tuple, reward_fn=None) -> Tensor:
    """Return r as a float tensor of ``shape`` (P, G), or raise naming the reward and the problem."""
    if not (isinstance(r, Tensor) and r.is_floating_point()):
        r = torch.as_tensor(r, dtype=torch.get_default_dtype())
    if r.shape != shape:
        name = reward_name(reward_fn) if reward_fn is not None else "reward"
        if r.numel() == shape[0] * shape[1] and r.dim() == 1:
            r = r.view(shape)   # a flat list of P·G rewards in prompt-major order is accepted
        else:
            raise ValueError(f"reward {name!r} returned shape {tuple(r.shape)}; expected (P, G) = {shape} "
                             f"(one reward per completion)")
    if not torch.isfinite(r).all():
        name = reward_name(reward_fn) if reward_fn is not None else "reward"
        bad = (~torch.isfinite(r)).nonzero()[0].tolist()
        raise ValueError(f"reward {name!r} returned a non-finite value {r[tuple(bad)].item()} at (prompt, "
                         f"completion) = {tuple(bad)}; rewards must be finite numbers")
    return r


def bernoulli_draw(mu: Tensor, sigma: float, generator) -> Tensor:
    """r ~ Bernoulli(μ): 1 with probability μ, else 0."""
    return torch.bernoulli(mu, generator=generator)


def gaussian_draw(mu: Tensor, sigma: float, generator) -> Tensor:
    """r ~ N(μ, σ²)."""
    return mu + sigma * torch.randn(mu.shape, generator=generator, dtype=mu.dtype)


def noiseless_draw(mu: Tensor, sigma: float, generator) -> Tensor:
    """r = μ."""
    return mu


NOISE_DRAWS = {"bernoulli": bernoulli_draw, "gaussian": gaussian_draw, "none": noiseless_draw}


class ArmRewards:
    """Bandit rewards: r(x, y) drawn around the arm mean μ[x, y].

    ``noise`` is 'bernoulli' (r ∈ {0, 1}, P(r = 1) = μ), 'gaussian' (r ~ N(μ, σ²)) or 'none'
    (r = μ exactly). The mean μ is what π* uses: noise changes the variance, not the optimum.
    """

    NOISES = tuple(NOISE_DRAWS)

    def __init__(self, means: Tensor, noise: str = "bernoulli", sigma: float = 1.0,
                 generator: torch.Generator | None = None):
        means = torch.as_tensor(means, dtype=torch.get_default_dtype())
        self.means = means if means.dim() == 2 else means[None, :]      # (n_contexts, K)
        if noise not in NOISE_DRAWS:
            raise ValueError(f"ArmRewards: noise={noise!r}; allowed: {self.NOISES}")
        if noise == "bernoulli" and not ((self.means >= 0) & (self.means <= 1)).all():
            raise ValueError(f"ArmRewards: Bernoulli arm means must lie in [0, 1], got {self.means.tolist()}")
        self.noise, self.sigma, self.generator = noise, float(sigma), generator
        self.draw = NOISE_DRAWS[noise]
        self.name = f"arm_rewards[{noise}]"

    def __call__(self, prompts: Tensor, completions: Tensor) -> Tensor:
        mu = self.means[prompts].gather(1, completions[:, :, 0])       # (P, G): one-token completions
        return self.draw(mu, self.sigma, self.generator)
