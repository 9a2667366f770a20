"""Gymnasium bandit environments, registered as ``minigrpo/KArmedBandit-v0`` and
``minigrpo/ContextualBandit-v0``, and the reward function that trains through them.

A bandit episode is one step: observe a context, pull an arm, receive a reward, done. A GRPO step
on a bandit is P prompts × G pulls = P·G one-step episodes at once, which is what gymnasium's
*vector* API is for (the ``envs.step(actions)`` of CleanRL's loops):

    envs = gym.make_vec("minigrpo/ContextualBandit-v0", num_envs=P * G, means=table)   # table: C × K means
    envs.reset(seed=0)
    reward_fn = EnvReward(envs)     # r (P, G): prompt p shows context p; r = envs.step(the P·G arms pulled)

``gym.make_vec`` returns a ``BanditVectorEnv`` (the ids register a ``vector_entry_point``): the
same rules as N copies of the single env, but one ``step`` pulls all N arms in one torch op. A
``SyncVectorEnv`` (``vectorization_mode="sync"``) loops over N Python envs instead: ~200× slower
at N = 128 (6 ms a reset + step against 30 µs). ``run_bandit`` trains through ``EnvReward``.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from torch import Tensor

from minigrpo.bandit.arms import NOISE_DRAWS

NOISES = tuple(NOISE_DRAWS)


def _seed_rewards(env, seed: int | None) -> None:
    """Seed ``env.reward_generator`` the way gymnasium seeds ``env.np_random``: with ``seed`` when one
    is given; otherwise, the first time only, from ``np_random`` (itself seeded from the OS then)."""
    if seed is not None:
        env.reward_generator.manual_seed(seed)
        env._rewards_seeded = True
    elif not env._rewards_seeded:
        env.reward_generator.manual_seed(int(env.np_random.integers(2 ** 63)))
        env._rewards_seeded = True


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

    ## Seeding
    ``reset(seed=s)`` seeds ``self.np_random`` (which draws contexts) and ``self.reward_generator``,
    a ``torch.Generator``, with s. Rewards are drawn in torch by ``draw`` (``arms.NOISE_DRAWS``) so
    that one pull here and a batch of pulls in ``BanditVectorEnv`` follow one rule, and a batch is one op.

    ## Arguments
    ``means`` (K ≥ 2 numbers), ``noise``, ``sigma``.
    """

    metadata = {"render_modes": []}

    def __init__(self, means=(0.2, 0.5, 0.8), noise: str = "bernoulli", sigma: float = 1.0):
        means = np.asarray(means, dtype=np.float64)
        if means.ndim != 1 or means.size < 2:
            raise ValueError(f"KArmedBanditEnv: arms={means.size} (means={means.tolist()}); a bandit needs at least 2 arms")
        if not np.isfinite(means).all():
            raise ValueError(f"KArmedBanditEnv: means={means.tolist()} must be finite")
        if noise not in NOISES:
            raise ValueError(f"KArmedBanditEnv: noise={noise!r}; allowed: {NOISES}")
        if noise == "bernoulli" and ((means < 0) | (means > 1)).any():
            raise ValueError(f"KArmedBanditEnv: Bernoulli means must lie in [0, 1], got {means.tolist()}")
        if not sigma > 0:
            raise ValueError(f"KArmedBanditEnv: sigma={sigma!r} must be > 0")
        self.means, self.noise, self.sigma = means, noise, float(sigma)
        self.action_space = spaces.Discrete(means.size)
        self.observation_space = spaces.Discrete(1)
        self.mu = torch.as_tensor(means[None, :], dtype=torch.get_default_dtype())    # (1, K), see ``draw``
        self.reward_generator, self._rewards_seeded = torch.Generator(), False
        self._context = 0

    @property
    def n_arms(self) -> int:
        return self.means.size

    @property
    def n_contexts(self) -> int:
        return self.mean_table().shape[0]

    def mean_table(self) -> np.ndarray:
        """μ as an (n_contexts, K) table (one row here)."""
        return self.means[None, :]

    def observation(self, context: int):
        """What the agent sees in context c: always 0 here."""
        return 0

    def observe(self, contexts: np.ndarray) -> np.ndarray:
        """The observations of a batch of contexts (N,), for ``BanditVectorEnv``: all 0 here."""
        return np.zeros(len(contexts), dtype=np.int64)

    def draw(self, mu: Tensor, generator: torch.Generator) -> Tensor:
        """The reward rule for any batch of pulls: r ~ noise around the pulled arms' means μ (any shape).

        ``self.mu`` holds the table in torch's default dtype, as ``ArmRewards`` does, so the same
        generator gives the same r."""
        return NOISE_DRAWS[self.noise](mu, self.sigma, generator)

    def _check_context(self, context) -> int:
        if not (isinstance(context, (int, np.integer)) and 0 <= context < self.n_contexts):
            raise ValueError(f"{type(self).__name__}.reset: options['context']={context!r}; "
                             f"allowed: an int in 0..{self.n_contexts - 1}")
        return int(context)

    def reset(self, *, seed=None, options=None):
        """Start an episode: draw a context (``options={'context': c}`` sets it instead)."""
        super().reset(seed=seed)
        _seed_rewards(self, seed)
        if options is not None and "context" in options:
            self._context = self._check_context(options["context"])
        else:
            self._context = int(self.np_random.integers(self.n_contexts))
        return self.observation(self._context), {"context": self._context}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"{type(self).__name__}.step: action={action!r}; allowed: 0..{self.n_arms - 1}")
        c, a = self._context, int(action)
        r = self.draw(self.mu[c, a:a + 1], self.reward_generator)                          # a batch of one
        return self.observation(c), float(r[0]), True, False, {"mean": float(self.mean_table()[c, a]), "context": c}


class ContextualBanditEnv(KArmedBanditEnv):
    """Contextual bandit with C discrete contexts.

    ## Description
    Each episode draws a context c uniformly; arm k then pays with mean μ[c, k]. Contexts are
    shown to the agent as feature vectors φ(c) (one-hot by default).

    ## Action space
    ``Discrete(K)``.

    ## Observation space
    ``Box(0, 1, (D,))``: the context's features φ(c) (unbounded ``Box`` when φ leaves [0, 1]).
    ``info['context']`` holds the id c.

    ## Rewards
    As ``KArmedBanditEnv``, with mean μ[c, k].

    ## Episode end
    Terminates after one step.

    ## Seeding
    As ``KArmedBanditEnv``: ``np_random`` draws the context, ``reward_generator`` the reward.
    ``reset(options={'context': c})`` shows context c instead of drawing one.

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
        self.mu = torch.as_tensor(table, dtype=torch.get_default_dtype())               # (C, K)
        C = table.shape[0]
        self.features = np.eye(C, dtype=np.float32) if features is None else np.asarray(features, dtype=np.float32)
        if self.features.shape[0] != C:
            raise ValueError(f"ContextualBanditEnv: features has {self.features.shape[0]} rows for {C} contexts")
        self.observation_space = spaces.Box(0.0, 1.0, shape=(self.features.shape[1],), dtype=np.float32) \
            if ((self.features >= 0) & (self.features <= 1)).all() else \
            spaces.Box(-np.inf, np.inf, shape=(self.features.shape[1],), dtype=np.float32)

    def mean_table(self) -> np.ndarray:
        return self.table

    def observation(self, context: int) -> np.ndarray:
        """φ(c), (D,)."""
        return self.features[context].copy()

    def observe(self, contexts: np.ndarray) -> np.ndarray:
        """φ(c) for a batch of contexts (N,) → (N, D)."""
        return self.features[contexts]


class BanditVectorEnv(VectorEnv):
    """N pulls of one bandit at once: what ``gym.make_vec(id, num_envs=N)`` returns for the ids above.

    ## Description
    N independent copies of ``bandit`` (a ``KArmedBanditEnv`` or ``ContextualBanditEnv``), stepped
    together: ``step(actions)`` looks up the N pulled arms' means and draws all N rewards with
    ``bandit.draw`` in one torch op.

    ## Arrays
    A ``VectorEnv`` is generic in its array type; this one takes and returns torch tensors (as
    ``gymnasium.wrappers.vector.NumpyToTorch`` makes a NumPy env do), because its caller is a torch
    trainer: a GRPO step's arms go in and its rewards come out without a copy. Actions may also be a
    NumPy array. The spaces are gymnasium's usual ones: ``action_space`` = ``MultiDiscrete([K] * N)``,
    ``observation_space`` = the single env's space batched N times.

    ## Episode end and reset
    Every step ends every sub-env's episode (``terminations`` all True). There is no autoreset
    (``AutoresetMode.DISABLED``): ``reset()`` draws new contexts, ``reset(options={'context': contexts})``
    with N context ids shows chosen ones (``EnvReward`` shows the G sub-envs of a group the same
    context). A bandit keeps no state but its context, so stepping again without a reset pulls again
    in the same contexts.

    ## Seeding
    ``reset(seed=s)`` seeds ``np_random`` (contexts) and ``reward_generator`` (rewards) with s. The
    rewards are exactly the numbers ``ArmRewards`` draws with ``torch.Generator().manual_seed(s)`` for
    the same pulls.
    """

    metadata = {"autoreset_mode": AutoresetMode.DISABLED}

    def __init__(self, bandit: KArmedBanditEnv, num_envs: int = 1):
        if not (isinstance(num_envs, (int, np.integer)) and num_envs >= 1):
            raise ValueError(f"BanditVectorEnv: num_envs={num_envs!r}; allowed: an integer ≥ 1")
        N = self.num_envs = int(num_envs)
        self.bandit = bandit
        self.single_action_space, self.single_observation_space = bandit.action_space, bandit.observation_space
        self.action_space = batch_space(bandit.action_space, N)                          # MultiDiscrete([K]*N)
        self.observation_space = batch_space(bandit.observation_space, N)
        self.reward_generator, self._rewards_seeded = torch.Generator(), False
        # every pull ends its episode: the same all-True / all-False flags each step (expanded, so read-only)
        self._terminated = torch.ones((), dtype=torch.bool).expand(N)
        self._truncated = torch.zeros((), dtype=torch.bool).expand(N)
        self._show(torch.zeros(N, dtype=torch.long))

    def mean_table(self) -> np.ndarray:
        return self.bandit.mean_table()

    def _show(self, contexts: Tensor) -> None:
        self._contexts = contexts                                                         # (N,)
        self._mu_rows = self.bandit.mu[contexts]                                          # (N, K): μ[c_n, ·]
        self._obs = torch.as_tensor(self.bandit.observe(contexts.numpy()))                # (N,) or (N, D)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)                                                          # seeds self.np_random
        _seed_rewards(self, seed)
        N, C = self.num_envs, self.bandit.n_contexts
        if options is not None and "context" in options:
            contexts = torch.as_tensor(options["context"])
            if torch.equal(contexts, self._contexts):             # the contexts shown already: nothing to redo
                return self._obs, {"context": self._contexts}
            if contexts.shape != (N,) or contexts.dtype != torch.long or not (0 <= contexts.min() and contexts.max() < C):
                raise ValueError(f"BanditVectorEnv.reset: options['context'] must be {N} int64 ids in 0..{C - 1}, "
                                 f"got {options['context']!r}")
        else:
            contexts = torch.from_numpy(self.np_random.integers(C, size=N))
        self._show(contexts.clone())
        return self._obs, {"context": self._contexts}

    def step(self, actions):
        N = self.num_envs
        a = torch.as_tensor(actions)                                                      # (N,), no copy
        if a.shape != (N,):
            raise self._bad_actions(actions)
        try:
            mu = self._mu_rows.gather(1, a[:, None])                                      # (N, 1): μ[c_n, a_n]
        except RuntimeError:      # gather checks the dtype and 0 ≤ a < K itself: no extra pass over a
            raise self._bad_actions(actions) from None
        r = self.bandit.draw(mu.view(N), self.reward_generator)                            # (N,), one torch op
        return self._obs, r, self._terminated, self._truncated, {"context": self._contexts}

    def _bad_actions(self, actions) -> ValueError:
        return ValueError(f"BanditVectorEnv.step: actions must be {self.num_envs} int64 arm ids in "
                          f"0..{self.bandit.n_arms - 1}, got {actions!r}")


def karmed_vector_env(num_envs: int = 1, **kwargs) -> BanditVectorEnv:
    """``vector_entry_point`` of ``minigrpo/KArmedBandit-v0``."""
    return BanditVectorEnv(KArmedBanditEnv(**kwargs), num_envs)


def contextual_vector_env(num_envs: int = 1, **kwargs) -> BanditVectorEnv:
    """``vector_entry_point`` of ``minigrpo/ContextualBandit-v0``."""
    return BanditVectorEnv(ContextualBanditEnv(**kwargs), num_envs)


class EnvReward:
    """The reward function GRPO calls (a ``core.protocols.Reward``), backed by a gymnasium vector env
    of P·G bandit pulls.

    ``reward_fn(prompts (P,), completions (P, G, 1)) -> r (P, G)``: one GRPO step is P·G one-step
    episodes. ``envs.reset(options={'context': ...})`` starts them, prompt p showing context
    ``contexts[p]`` (default: the prompt id is the context id) to its G sub-envs; ``envs.step`` pulls
    the P·G arms, and its rewards, reshaped to (P, G), are r. Seed the env first: ``envs.reset(seed=s)``.
    """

    def __init__(self, envs, contexts: Tensor | None = None):
        self.envs, self.contexts = envs, contexts
        self.name = f"env[{envs.spec.id if envs.spec is not None else type(envs.unwrapped).__name__}]"
        self._prompts = self._shown = None   # the last prompts, and the context each sub-env shows for them

    def __call__(self, prompts: Tensor, completions: Tensor) -> Tensor:
        P, G, T = completions.shape
        if T != 1 or P * G != self.envs.num_envs:
            raise ValueError(f"EnvReward: completions (P, G, T) = {(P, G, T)}; a bandit pull is one token (T = 1) "
                             f"and the vector env needs num_envs = P·G (it has {self.envs.num_envs})")
        if self._prompts is None or not torch.equal(prompts, self._prompts):     # new prompts: new contexts
            contexts = prompts if self.contexts is None else self.contexts[prompts]         # (P,)
            self._prompts, self._shown = prompts.clone(), contexts.repeat_interleave(G)     # (P·G,): group p sees x_p
        self.envs.reset(options={"context": self._shown})                                   # P·G new episodes
        _, r, _, _, _ = self.envs.step(completions.reshape(P * G))                          # (P·G,) arms → rewards
        return r.view(P, G)                                                                 # (P, G)


def register() -> None:
    """Register the environments under the ``minigrpo/`` namespace (idempotent), each with a
    ``vector_entry_point`` so ``gym.make_vec`` builds a ``BanditVectorEnv``."""
    for name, cls, vec in (("KArmedBandit-v0", "KArmedBanditEnv", "karmed_vector_env"),
                           ("ContextualBandit-v0", "ContextualBanditEnv", "contextual_vector_env")):
        env_id = f"minigrpo/{name}"
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=f"minigrpo.bandit.envs:{cls}",
                         vector_entry_point=f"minigrpo.bandit.envs:{vec}")


register()
