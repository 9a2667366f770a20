"""Gymnasium bandit environments, registered as ``minigrpo/KArmedBandit-v0`` and
``minigrpo/ContextualBandit-v0``.

A bandit episode is one step: observe (a context), pull an arm, receive a reward, done. GRPO
draws a *group* of pulls for the same context; the trainer does that through ``reward_fn()``,
which applies the same arm means and noise as ``step`` in batched torch form.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from minigrpo.bandit.arms import ArmRewards


class KArmedBanditEnv(gym.Env):
    """K-armed bandit.

    ## Description
    K arms; arm k pays a reward with mean μ_k. The observation is a constant 0 (there is no context).

    ## Action space
    ``Discrete(K)``: the arm to pull.

    ## Observation space
    ``Discrete(1)``: always 0.

    ## Rewards
    ``noise='bernoulli'``: 1 with probability μ_k, else 0 (μ_k ∈ [0, 1]).
    ``noise='gaussian'``: N(μ_k, σ²).  ``noise='none'``: μ_k exactly.

    ## Episode end
    Terminates after one step.

    ## Arguments
    ``means`` (K ≥ 2 numbers), ``noise``, ``sigma``. ``reset(seed=...)`` seeds the reward noise.
    """

    metadata = {"render_modes": []}

    def __init__(self, means=(0.2, 0.5, 0.8), noise: str = "bernoulli", sigma: float = 1.0):
        means = np.asarray(means, dtype=np.float64)
        if means.ndim != 1 or means.size < 2:
            raise ValueError(f"KArmedBanditEnv: arms={means.size} (means={means.tolist()}); a bandit needs at least 2 arms")
        if not np.isfinite(means).all():
            raise ValueError(f"KArmedBanditEnv: means={means.tolist()} must be finite")
        if noise not in ArmRewards.NOISES:
            raise ValueError(f"KArmedBanditEnv: noise={noise!r}; allowed: {ArmRewards.NOISES}")
        if noise == "bernoulli" and ((means < 0) | (means > 1)).any():
            raise ValueError(f"KArmedBanditEnv: Bernoulli means must lie in [0, 1], got {means.tolist()}")
        if not sigma > 0:
            raise ValueError(f"KArmedBanditEnv: sigma={sigma!r} must be > 0")
        self.means, self.noise, self.sigma = means, noise, float(sigma)
        self.action_space = spaces.Discrete(means.size)
        self.observation_space = spaces.Discrete(1)

    @property
    def n_arms(self) -> int:
        return self.means.size

    def mean_table(self) -> np.ndarray:
        """μ as an (n_contexts, K) table (one row here)."""
        return self.means[None, :]

    def _draw(self, mu: float) -> float:
        if self.noise == "bernoulli":
            return float(self.np_random.random() < mu)
        if self.noise == "gaussian":
            return float(mu + self.sigma * self.np_random.standard_normal())
        return float(mu)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return 0, {}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"KArmedBanditEnv.step: action={action!r}; allowed: 0..{self.n_arms - 1}")
        return 0, self._draw(self.means[int(action)]), True, False, {"mean": float(self.means[int(action)])}

    def reward_fn(self, generator=None) -> ArmRewards:
        """The batched torch reward for GRPO: prompts (P,) of context ids, completions (P,G,1) of arms."""
        return ArmRewards(self.mean_table(), self.noise, self.sigma, generator)


class ContextualBanditEnv(KArmedBanditEnv):
    """Contextual bandit with C discrete contexts.

    ## Description
    Each episode draws a context c uniformly; arm k then pays with mean μ[c, k]. Contexts are
    shown to the agent as feature vectors φ(c) (one-hot by default).

    ## Action space
    ``Discrete(K)``.

    ## Observation space
    ``Box(0, 1, (D,))``: the context's features φ(c). ``info['context']`` holds the id c.

    ## Rewards
    As ``KArmedBanditEnv``, with mean μ[c, k].

    ## Episode end
    Terminates after one step.

    ## Arguments
    ``means`` (C × K table, K ≥ 2), ``features`` (C × D, default one-hot), ``noise``, ``sigma``.
    """

    def __init__(self, means=((0.9, 0.1), (0.1, 0.9)), features=None, noise: str = "bernoulli", sigma: float = 1.0):
        table = np.asarray(means, dtype=np.float64)
        if table.ndim != 2:
            raise ValueError(f"ContextualBanditEnv: means must be a (contexts × arms) table, got shape {table.shape}")
        super().__init__(table[0], noise, sigma)            # validates arms, noise, sigma on one row
        if not np.isfinite(table).all() or (noise == "bernoulli" and ((table < 0) | (table > 1)).any()):
            raise ValueError(f"ContextualBanditEnv: means={table.tolist()} must be finite (and in [0, 1] for Bernoulli)")
        self.table = table
        C = table.shape[0]
        self.features = np.eye(C, dtype=np.float32) if features is None else np.asarray(features, dtype=np.float32)
        if self.features.shape[0] != C:
            raise ValueError(f"ContextualBanditEnv: features has {self.features.shape[0]} rows for {C} contexts")
        self.observation_space = spaces.Box(0.0, 1.0, shape=(self.features.shape[1],), dtype=np.float32) \
            if ((self.features >= 0) & (self.features <= 1)).all() else \
            spaces.Box(-np.inf, np.inf, shape=(self.features.shape[1],), dtype=np.float32)
        self._context = 0

    @property
    def n_contexts(self) -> int:
        return self.table.shape[0]

    def mean_table(self) -> np.ndarray:
        return self.table

    def reset(self, *, seed=None, options=None):
        gym.Env.reset(self, seed=seed)
        self._context = int(self.np_random.integers(self.n_contexts))
        return self.features[self._context].copy(), {"context": self._context}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"ContextualBanditEnv.step: action={action!r}; allowed: 0..{self.n_arms - 1}")
        mu = self.table[self._context, int(action)]
        obs = self.features[self._context].copy()
        return obs, self._draw(mu), True, False, {"mean": float(mu), "context": self._context}


def register() -> None:
    """Register the environments under the ``minigrpo/`` namespace (idempotent)."""
    for name, cls in (("KArmedBandit-v0", "KArmedBanditEnv"), ("ContextualBandit-v0", "ContextualBanditEnv")):
        env_id = f"minigrpo/{name}"
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=f"minigrpo.bandit.envs:{cls}")


register()
