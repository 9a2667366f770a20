"""Gymnasium bandits: check_env, seeding, validation, and the batched reward_fn against the env means."""
import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import minigrpo.bandit.envs  # noqa: F401  (registers the minigrpo/ environments)

KARMED = ("minigrpo/KArmedBandit-v0", dict(means=(0.2, 0.5, 0.8)))
CONTEXTUAL = ("minigrpo/ContextualBandit-v0", dict(means=((0.9, 0.1, 0.4), (0.1, 0.9, 0.6))))
ENVS = [(env_id, dict(kw, noise=noise)) for env_id, kw in (KARMED, CONTEXTUAL) for noise in ("bernoulli", "gaussian")]
IDS = [f"{e.split('/')[1]}-{kw['noise']}" for e, kw in ENVS]


@pytest.mark.parametrize("env_id,kwargs", ENVS, ids=IDS)
def test_check_env_passes(env_id, kwargs):
    env = gym.make(env_id, **kwargs)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("env_id,kwargs", ENVS, ids=IDS)
def test_episode_is_one_step(env_id, kwargs):
    env = gym.make(env_id, **kwargs)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    obs, r, terminated, truncated, info = env.step(1)
    assert terminated and not truncated and isinstance(r, float)
    assert env.observation_space.contains(obs)
    assert "mean" in info


def reward_sequence(env, seed, n=30):
    out = []
    env.reset(seed=seed)
    for i in range(n):
        obs, r, *_ = env.step(i % env.action_space.n)
        out.append((r, np.asarray(obs).tolist()))
        env.reset()
    return out


@pytest.mark.parametrize("env_id,kwargs", ENVS, ids=IDS)
def test_reset_seed_makes_rewards_reproducible(env_id, kwargs):
    env = gym.make(env_id, **kwargs)
    a, b, c = reward_sequence(env, 123), reward_sequence(env, 123), reward_sequence(env, 124)
    assert a == b
    assert a != c


def test_contextual_reset_draws_contexts_uniformly_and_shows_features():
    env = gym.make(CONTEXTUAL[0], **CONTEXTUAL[1]).unwrapped
    env.reset(seed=0)
    counts = np.zeros(2)
    for _ in range(4000):
        obs, info = env.reset()
        c = info["context"]
        counts[c] += 1
        np.testing.assert_array_equal(obs, np.eye(2, dtype=np.float32)[c])
        _, _, _, _, step_info = env.step(1)
        assert step_info["context"] == c and step_info["mean"] == CONTEXTUAL[1]["means"][c][1]
    assert abs(counts[0] / 4000 - 0.5) < 0.03


@pytest.mark.parametrize("noise", ["bernoulli", "gaussian"])
def test_step_reward_means_match_env_means(noise):
    env = gym.make("minigrpo/KArmedBandit-v0", means=(0.2, 0.5, 0.8), noise=noise, sigma=0.5).unwrapped
    env.reset(seed=1)
    n = 4000
    for arm, mu in enumerate((0.2, 0.5, 0.8)):
        rs = np.array([env.step(arm)[1] for _ in range(n)])
        sd = np.sqrt(mu * (1 - mu)) if noise == "bernoulli" else 0.5
        assert abs(rs.mean() - mu) < 5 * sd / np.sqrt(n)
        if noise == "bernoulli":
            assert set(np.unique(rs)) <= {0.0, 1.0}


# --- validation ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("env_id,kwargs,word", [
    ("minigrpo/KArmedBandit-v0", dict(means=(0.5,)), "arm"),
    ("minigrpo/KArmedBandit-v0", dict(means=()), "arm"),
    ("minigrpo/ContextualBandit-v0", dict(means=((0.5,), (0.2,))), "arm"),
    ("minigrpo/KArmedBandit-v0", dict(means=(0.2, 1.5)), "[0, 1]"),
    ("minigrpo/KArmedBandit-v0", dict(means=(-0.1, 0.5)), "[0, 1]"),
    ("minigrpo/ContextualBandit-v0", dict(means=((0.2, 0.5), (0.3, 1.2))), "[0, 1]"),
    ("minigrpo/KArmedBandit-v0", dict(means=(0.2, 0.5), noise="uniform"), "noise"),
    ("minigrpo/KArmedBandit-v0", dict(means=(0.2, 0.5), noise="gaussian", sigma=0.0), "sigma"),
    ("minigrpo/KArmedBandit-v0", dict(means=(0.2, float("nan")), noise="gaussian"), "finite"),
    ("minigrpo/ContextualBandit-v0", dict(means=(0.2, 0.5)), "table"),
    ("minigrpo/ContextualBandit-v0", dict(means=((0.2, 0.5), (0.3, 0.4)), features=np.eye(3)), "features"),
])
def test_invalid_construction_raises(env_id, kwargs, word):
    with pytest.raises(ValueError) as info:
        gym.make(env_id, **kwargs)
    assert word in str(info.value)


def test_gaussian_means_outside_unit_interval_are_fine():
    env = gym.make("minigrpo/KArmedBandit-v0", means=(-1.0, 2.0), noise="gaussian")
    env.reset(seed=0)
    env.step(1)


@pytest.mark.parametrize("env_id,kwargs", ENVS, ids=IDS)
@pytest.mark.parametrize("action", [3, -1, 1.5, "a"])
def test_bad_action_raises(env_id, kwargs, action):
    env = gym.make(env_id, **kwargs).unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(action)


# --- the batched torch reward ------------------------------------------------------------------------------

@pytest.mark.parametrize("env_id,kwargs", ENVS, ids=IDS)
def test_reward_fn_empirical_means_match_env_means(env_id, kwargs):
    env = gym.make(env_id, **kwargs).unwrapped
    table = torch.as_tensor(env.mean_table())                 # (C, K)
    C, K = table.shape
    reward_fn = env.reward_fn(torch.Generator().manual_seed(0))
    G = 20_000
    prompts = torch.arange(C).repeat_interleave(K)            # every (context, arm) pair as one prompt row
    arms = torch.arange(K).repeat(C)
    completions = arms[:, None, None].expand(C * K, G, 1)     # (P, G, 1)
    r = reward_fn(prompts, completions)
    assert r.shape == (C * K, G)
    sd = torch.sqrt(table * (1 - table)).flatten() if kwargs["noise"] == "bernoulli" else torch.ones(C * K)
    err = (r.double().mean(1) - table.flatten()).abs()
    assert (err < 5 * sd / G ** 0.5 + 1e-12).all(), err
    if kwargs["noise"] == "bernoulli":
        assert set(r.unique().tolist()) <= {0.0, 1.0}


def test_reward_fn_generator_makes_it_reproducible():
    env = gym.make(KARMED[0], **KARMED[1]).unwrapped
    prompts, comps = torch.zeros(2, dtype=torch.long), torch.randint(3, (2, 8, 1), generator=torch.Generator().manual_seed(0))
    a = env.reward_fn(torch.Generator().manual_seed(5))(prompts, comps)
    b = env.reward_fn(torch.Generator().manual_seed(5))(prompts, comps)
    assert torch.equal(a, b)
