"""Gymnasium bandits: check_env, seeding, validation; the vector env and ``EnvReward`` against the env means,
against direct arm draws (bit for bit), and as the path ``run_bandit`` really trains through."""
import inspect

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from minigrpo import FixedBeta, LeanAdam, TabularSoftmaxPolicy, kl_divergence, optimal_policy, seed_grpo, train
from minigrpo.bandit import runner
from minigrpo.bandit.arms import ArmRewards
from minigrpo.bandit.config import BanditConfig
from minigrpo.bandit.envs import BanditVectorEnv, EnvReward   # importing registers the minigrpo/ environments
from minigrpo.bandit.runner import run_bandit, single_thread
from minigrpo.core.protocols import Named, Reward
from minigrpo.core.scored import reward_name

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


# --- the single env's options -------------------------------------------------------------------------

def test_reset_options_show_a_chosen_context():
    env = gym.make(CONTEXTUAL[0], **CONTEXTUAL[1])
    for c in (1, 0, 1):
        obs, info = env.reset(seed=0, options={"context": c})
        assert info["context"] == c
        np.testing.assert_array_equal(obs, np.eye(2, dtype=np.float32)[c])
        assert env.step(2)[4]["mean"] == CONTEXTUAL[1]["means"][c][2]
    with pytest.raises(ValueError, match="context"):
        env.reset(options={"context": 2})


# --- the vector env: what GRPO steps --------------------------------------------------------------------

def make_vec(env_id, kwargs, num_envs):
    return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)


@pytest.mark.parametrize("env_id,kwargs", ENVS, ids=IDS)
def test_vector_env_has_the_spaces_of_n_single_envs(env_id, kwargs):
    """``make_vec``'s own loop over single envs (``sync``) and the batched env agree on the interface."""
    fast, sync = make_vec(env_id, kwargs, 5), gym.make_vec(env_id, num_envs=5, vectorization_mode="sync", **kwargs)
    assert isinstance(fast.unwrapped, BanditVectorEnv) and fast.num_envs == 5
    assert fast.action_space == sync.action_space and fast.observation_space == sync.observation_space
    assert fast.single_action_space == gym.make(env_id, **kwargs).action_space
    obs, info = fast.reset(seed=0)
    assert obs.shape == fast.observation_space.shape and info["context"].shape == (5,)
    obs, r, terminated, truncated, info = fast.step(torch.zeros(5, dtype=torch.long))
    assert r.shape == (5,) and terminated.all() and not truncated.any()


@pytest.mark.parametrize("env_id,kwargs", ENVS, ids=IDS)
def test_vector_env_reward_means_match_env_means(env_id, kwargs):
    """Every (context, arm) pair pulled 20,000 times in one step: the mean reward is μ[c, k] within 5 s.e."""
    table = torch.as_tensor(gym.make(env_id, **kwargs).unwrapped.mean_table())            # (C, K)
    C, K, n = *table.shape, 20_000
    envs = make_vec(env_id, kwargs, C * K * n)
    envs.reset(seed=0, options={"context": torch.arange(C).repeat_interleave(K * n)})
    _, r, _, _, info = envs.step(torch.arange(K).repeat_interleave(n).repeat(C))          # (C·K·n,)
    r = r.view(C * K, n).double()
    sd = torch.sqrt(table * (1 - table)).flatten() if kwargs["noise"] == "bernoulli" else torch.ones(C * K)
    err = (r.mean(1) - table.flatten()).abs()
    assert (err < 5 * sd / n ** 0.5 + 1e-12).all(), err
    if kwargs["noise"] == "bernoulli":
        assert set(r.unique().tolist()) <= {0.0, 1.0}


def test_vector_env_draws_contexts_from_np_random_when_not_shown():
    envs = make_vec(*CONTEXTUAL, 4000)
    obs, info = envs.reset(seed=3)
    c = info["context"]
    assert abs(c.double().mean().item() - 0.5) < 0.03
    assert torch.equal(obs, torch.eye(2)[c])
    assert torch.equal(envs.reset(seed=3)[1]["context"], c) and not torch.equal(envs.reset()[1]["context"], c)


@pytest.mark.parametrize("env_id,kwargs", ENVS, ids=IDS)
def test_env_reward_is_bit_for_bit_the_direct_arm_draw(env_id, kwargs):
    """The env path and ``ArmRewards`` with a generator seeded alike give the same numbers, step after step,
    as the prompts (and so the contexts shown) change."""
    table = torch.as_tensor(gym.make(env_id, **kwargs).unwrapped.mean_table())            # (C, K)
    C, K = table.shape
    P, G = 3, 16
    envs = make_vec(env_id, kwargs, P * G)
    envs.reset(seed=11)
    via_env = EnvReward(envs, contexts=None if C > 1 else torch.zeros(P, dtype=torch.long))
    direct = ArmRewards(table if C > 1 else table.expand(P, K), kwargs["noise"], 1.0, torch.Generator().manual_seed(11))
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        prompts = torch.randint(C, (P,), generator=g) if C > 1 else torch.arange(P)
        completions = torch.randint(K, (P, G, 1), generator=g)
        assert torch.equal(via_env(prompts, completions), direct(prompts, completions))


def test_env_reward_shows_its_contexts_again_after_an_outside_reset():
    """Noiseless rewards are μ[x, y] exactly: after ``envs.reset()`` draws other contexts, the next call still
    pulls in the prompts' own contexts."""
    means = CONTEXTUAL[1]["means"]
    envs = make_vec(CONTEXTUAL[0], dict(means=means, noise="none"), 2 * 50)
    envs.reset(seed=0)
    reward_fn = EnvReward(envs)
    prompts, arms = torch.tensor([1, 0]), torch.tensor([2, 1])[:, None, None].expand(2, 50, 1)
    expected = torch.tensor([means[1][2], means[0][1]], dtype=torch.float32)[:, None].expand(2, 50)
    assert torch.equal(reward_fn(prompts, arms), expected)
    envs.reset()                                               # random contexts for all 100 sub-envs
    assert torch.equal(reward_fn(prompts, arms), expected)


def test_env_reward_is_a_named_reward():
    envs = make_vec(*CONTEXTUAL, 4)
    reward_fn = EnvReward(envs)
    assert isinstance(reward_fn, Named) and reward_name(reward_fn) == "env[minigrpo/ContextualBandit-v0]"
    assert list(inspect.signature(reward_fn).parameters) == list(inspect.signature(Reward.__call__).parameters)[1:]


def test_env_reward_refuses_a_batch_that_does_not_fit_the_env():
    envs = make_vec(*KARMED, 8)
    envs.reset(seed=0)
    reward_fn = EnvReward(envs, contexts=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="num_envs"):
        reward_fn(torch.arange(2), torch.zeros(2, 3, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="T = 1"):
        reward_fn(torch.arange(2), torch.zeros(2, 4, 2, dtype=torch.long))


@pytest.mark.parametrize("actions", [torch.tensor([0, 3]), torch.tensor([0, -1]), torch.tensor([0.0, 1.0]),
                                     torch.tensor([0, 1, 2]), np.array([[0, 1]])])
def test_vector_env_bad_actions_raise(actions):
    envs = make_vec(*KARMED, 2)
    envs.reset(seed=0)
    with pytest.raises(ValueError, match="actions"):
        envs.step(actions)


@pytest.mark.parametrize("contexts", [[0, 2], [0, -1], [0.0, 1.0], [0, 1, 1]])
def test_vector_env_bad_contexts_raise(contexts):
    envs = make_vec(*CONTEXTUAL, 2)
    with pytest.raises(ValueError, match="context"):
        envs.reset(options={"context": contexts})


def test_vector_env_num_envs_must_be_positive():
    with pytest.raises(ValueError, match="num_envs"):
        make_vec(*KARMED, 0)


# --- the runner trains through env.step ---------------------------------------------------------------------

class CountingFlippedRewards(gym.vector.VectorRewardWrapper):
    """Counts ``step`` calls and pays 1 − r: a bandit whose best arm is the worst of the env it wraps."""

    steps = 0

    def rewards(self, rewards):
        type(self).steps += 1
        return 1 - rewards


def test_run_bandit_draws_its_rewards_through_env_step(monkeypatch):
    """Wrap the env ``run_bandit`` builds: every step goes through ``envs.step``, and the run converges
    to the optimum of the wrapped env's rewards (means 1 − μ), not of the config's μ (measured KL 2e-3 to
    the first, 3.0 to the second)."""
    make_vec_ = gym.make_vec
    monkeypatch.setattr(gym, "make_vec", lambda *a, **kw: CountingFlippedRewards(make_vec_(*a, **kw)))
    CountingFlippedRewards.steps = 0
    cfg = BanditConfig(steps=1500)
    res = run_bandit(cfg)
    assert CountingFlippedRewards.steps == cfg.steps
    flipped = optimal_policy(res.anchor.log(), 1 - res.means, cfg.beta)
    assert kl_divergence(res.policy[0].log(), flipped) < 1e-2
    assert res.kl_to_optimum()[-1, 0] > 1.0                  # far from the unflipped optimum


@pytest.mark.parametrize("noise", ["bernoulli", "gaussian"])
def test_run_bandit_through_the_env_is_the_run_with_direct_arm_draws(monkeypatch, noise):
    """Swap ``EnvReward`` for the ``ArmRewards`` it stands for, seeded as the env was: the same run, bit for bit."""
    cfg = BanditConfig(steps=200, group_size=16, noise=noise, seed=5)
    via_env = run_bandit(cfg, betas=[0.1, 1.0])

    def direct(envs, contexts):
        env = envs.unwrapped
        return ArmRewards(torch.as_tensor(env.mean_table())[contexts], env.bandit.noise, env.bandit.sigma,
                          torch.Generator().manual_seed(env.np_random_seed))
    monkeypatch.setattr(runner, "EnvReward", direct)
    direct_run = run_bandit(cfg, betas=[0.1, 1.0])
    assert torch.equal(via_env.probs, direct_run.probs) and torch.equal(via_env.reward, direct_run.reward)


def test_grpo_through_the_contextual_env_reaches_each_contexts_optimum():
    """A tabular policy, one row per context, trained through ``EnvReward``: each row lands on its own
    π*(·|c) ∝ π_anchor·exp(μ[c]/β) (measured KL 1e-3 … 2e-3 after 1,500 steps)."""
    means = torch.tensor([[0.9, 0.5, 0.1, 0.3], [0.2, 0.8, 0.4, 0.1], [0.3, 0.3, 0.35, 0.7]])
    (C, K), G, beta, steps, lr = means.shape, 64, 0.1, 1500, 0.05
    envs = make_vec("minigrpo/ContextualBandit-v0", dict(means=means.tolist()), C * G)
    envs.reset(seed=0)
    anchor_probs = torch.tensor([0.4, 0.3, 0.2, 0.1]).expand(C, K)
    policy = TabularSoftmaxPolicy.from_probs(anchor_probs)
    anchor = TabularSoftmaxPolicy.from_probs(anchor_probs, trainable=False)
    opt = LeanAdam(policy.parameters(), lr=lr)
    with single_thread():
        for t, _ in enumerate(train(policy, anchor, torch.arange(C), EnvReward(envs), seed_grpo(), FixedBeta(beta),
                                    opt, G, steps, generator=torch.Generator().manual_seed(1))):
            opt.lr = lr * (1 - 0.99 * (t + 1) / steps)
    target = optimal_policy(anchor_probs.log(), means, beta)                               # (C, K)
    kl = kl_divergence(policy.table(), target)
    assert (kl < 5e-3).all(), kl.tolist()
