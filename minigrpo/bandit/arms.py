"""Bandit rewards: a draw around each arm's mean, the reward a one-token completion earns."""
from __future__ import annotations

import torch
from torch import Tensor


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
    """Bandit rewards: r(x, y) drawn around the arm mean μ[x, y] (a ``protocols.Reward``, ``Named``).

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
