"""The pieces PPO, DPO/IPO and offline GRPO are built from, each checked against a hand computation.

GAE and the value loss against Python loops; the per-token KL reward against the sequence KL reward;
the critic against GAE by hand; DPO/IPO derivatives and ``preference_step``'s ψ and parameter gradient
against autograd; ``learn``'s minibatches, ``offline_step`` with the policy's own log-probs, ``concat`` and
``hybrid_step``; ``group_token_mean`` against its formula; and the recipe refusals that keep per-token KL
rewards and the critic together. Where the bandit lands with these pieces is tests/test_methods_bandit.py.
"""
import copy

import pytest
import torch

from minigrpo.bandit.arms import ArmRewards
from minigrpo.bandit.policies import MLPPolicy, TabularSoftmaxPolicy
from minigrpo.core.advantages import group_mean
from minigrpo.core.critic import GAE, Critic, ValueTable, gae, value_loss
from minigrpo.core.kl import ESTIMATORS, KLInReward, KLInTokenReward
from minigrpo.core.loss import group_token_mean, seq_mean_token_mean, token_mean
from minigrpo.core.offline import LoggedBatch, concat, hybrid_step, offline_step
from minigrpo.core.preference import DPO, IPO, preference_margin, preference_step
from minigrpo.core.recipe import compose, replace, seed_grpo
from minigrpo.core.step import Step, collect, grpo_step, learn

pytestmark = pytest.mark.usefixtures("one_thread")



def right_padded(P, G, T, g, min_len=0):
    """A random right-padded mask (P,G,T) with lengths in [min_len, T] (0: an empty completion)."""
    lengths = torch.randint(min_len, T + 1, (P, G), generator=g)
    return torch.arange(T) < lengths[..., None]


class Recorder:
    """An 'optimizer' that keeps the gradient it is handed and leaves the weights alone."""

    def __init__(self, params):
        self.params = list(params)

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        self.grads = [None if p.grad is None else p.grad.clone() for p in self.params]


# --- GAE and the value loss ---------------------------------------------------------------------------

def gae_by_hand(R, V, mask, gamma, lam):
    """δ_t = R_t + γ·V_{t+1} − V_t (V = 0 past the last token), A_t = δ_t + γλ·A_{t+1}, in Python floats."""
    P, G, T = R.shape
    A = [[[0.0] * T for _ in range(G)] for _ in range(P)]
    ret = [[[0.0] * T for _ in range(G)] for _ in range(P)]
    for p in range(P):
        for i in range(G):
            n = int(mask[p, i].sum())
            next_a = next_v = 0.0
            for t in reversed(range(n)):
                r, v = float(R[p, i, t]), float(V[p, i, t])
                a = r + gamma * next_v - v + gamma * lam * next_a
                A[p][i][t], ret[p][i][t] = a, a + v
                next_a, next_v = a, v
    return torch.tensor(A, dtype=torch.float64), torch.tensor(ret, dtype=torch.float64)


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 0.0), (0.5, 1.0), (1.0, 1.0)])
def test_gae_equals_the_recursion_by_hand_and_padding_gets_zero(gamma, lam):
    g = torch.Generator().manual_seed(0)
    P, G, T = 3, 4, 6
    R, V = torch.randn(P, G, T, generator=g, dtype=torch.float64), torch.randn(P, G, T, generator=g, dtype=torch.float64)
    mask = right_padded(P, G, T, g)
    R_pad, V_pad = R.masked_fill(~mask, 7.0), V.masked_fill(~mask, -3.0)     # junk on padding must not leak in
    A, returns = gae(R_pad, V_pad, mask, gamma, lam)
    A_hand, ret_hand = gae_by_hand(R, V, mask, gamma, lam)
    torch.testing.assert_close(A, A_hand, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(returns, ret_hand, rtol=1e-12, atol=1e-12)
    assert (A[~mask] == 0).all() and (returns[~mask] == 0).all()


def test_gae_with_lambda_one_gamma_one_gives_reward_to_go():
    """λ = γ = 1: returns_t = Σ_{s ≥ t} R_s (the Monte-Carlo return), A_t = returns_t − V_t."""
    g = torch.Generator().manual_seed(1)
    P, G, T = 2, 5, 7
    R, V = torch.randn(P, G, T, generator=g, dtype=torch.float64), torch.randn(P, G, T, generator=g, dtype=torch.float64)
    mask = right_padded(P, G, T, g)
    m = mask.double()
    A, returns = gae(R, V, mask, 1.0, 1.0)
    to_go = (R * m).flip(-1).cumsum(-1).flip(-1) * m
    torch.testing.assert_close(returns, to_go, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(A, (to_go - V) * m, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("clip", [None, 0.2, 0.05])
def test_value_loss_equals_the_formula_and_has_a_finite_gradient(clip):
    g = torch.Generator().manual_seed(2)
    P, G, T = 2, 3, 5
    V_old = torch.randn(P, G, T, generator=g, dtype=torch.float64)
    V = (V_old + 0.3 * torch.randn(P, G, T, generator=g, dtype=torch.float64)).requires_grad_()
    ret = torch.randn(P, G, T, generator=g, dtype=torch.float64)
    mask = right_padded(P, G, T, g)
    loss = value_loss(V, V_old, ret, mask, clip)
    terms = []
    Vd = V.detach()
    for p, i, t in mask.nonzero().tolist():
        v, vo, y = float(Vd[p, i, t]), float(V_old[p, i, t]), float(ret[p, i, t])
        err = (v - y) ** 2
        if clip is not None:
            err = max(err, (vo + min(max(v - vo, -clip), clip) - y) ** 2)
        terms.append(err)
    assert loss.item() == pytest.approx(0.5 * sum(terms) / len(terms), rel=1e-12)
    if clip is None:                                           # plain ½·MSE over the completion tokens
        assert loss.item() == pytest.approx(0.5 * ((V - ret)[mask] ** 2).mean().item(), rel=1e-12)
    (grad,) = torch.autograd.grad(loss, V)
    assert torch.isfinite(grad).all() and (grad[~mask] == 0).all() and grad.abs().sum() > 0


# --- the KL as a per-token reward -----------------------------------------------------------------------

@pytest.mark.parametrize("est", sorted(ESTIMATORS))
@pytest.mark.parametrize("beta", [0.3, "per_prompt"])
def test_token_kl_reward_sums_to_the_sequence_kl_reward_with_r_on_the_last_token(est, beta):
    g = torch.Generator().manual_seed(3)
    P, G, T = 3, 4, 5
    logp = -torch.rand(P, G, T, generator=g, dtype=torch.float64) * 3
    logp_anchor = -torch.rand(P, G, T, generator=g, dtype=torch.float64) * 3
    r = torch.randn(P, G, generator=g, dtype=torch.float64)
    mask = right_padded(P, G, T, g, min_len=1)
    b = torch.tensor([0.1, 0.5, 2.0], dtype=torch.float64) if beta == "per_prompt" else beta
    token = KLInTokenReward(ESTIMATORS[est]).shape_reward(r, logp, logp_anchor, mask, b)        # (P,G,T)
    seq = KLInReward(ESTIMATORS[est]).shape_reward(r, logp, logp_anchor, mask, b)              # (P,G)
    assert token.shape == (P, G, T)
    torch.testing.assert_close(token.sum(-1), seq, rtol=1e-12, atol=1e-12)
    bb = b[:, None, None] if isinstance(b, torch.Tensor) else b
    kl_part = -bb * ESTIMATORS[est].value(logp, logp_anchor) * mask
    rest = token - kl_part                                    # r alone, on each completion's last real token
    last = mask.sum(-1) - 1
    expected = torch.zeros(P, G, T, dtype=torch.float64)
    expected[torch.arange(P)[:, None], torch.arange(G)[None, :], last] = r
    torch.testing.assert_close(rest, expected, rtol=0, atol=1e-12)
    assert (token[~mask] == 0).all()


# --- the critic -------------------------------------------------------------------------------------------

def test_critic_advantages_with_a_value_table_equal_gae_by_hand_and_fit_lowers_the_value_loss(float64_default):
    g = torch.Generator().manual_seed(4)
    P, G, T = 3, 4, 5
    table = ValueTable(4)
    with torch.no_grad():
        table.v.copy_(torch.randn(4, generator=g))
    critic = Critic(table, GAE(gamma=0.9, lam=0.7), lr=0.05, value_clip=None, max_grad_norm=None)
    prompts = torch.tensor([2, 0, 3])
    completions = torch.randint(6, (P, G, T), generator=g)
    mask = right_padded(P, G, T, g, min_len=1)
    r = torch.randn(P, G, generator=g)
    A, targets = critic.advantages(r, prompts, completions, mask)       # (P,G): r is put on the last token
    R = torch.zeros(P, G, T)
    R[torch.arange(P)[:, None], torch.arange(G)[None, :], mask.sum(-1) - 1] = r
    V = table.v.detach()[prompts][:, None, None].expand(P, G, T)
    A_hand, ret_hand = gae_by_hand(R, V, mask, 0.9, 0.7)
    torch.testing.assert_close(A, A_hand, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(targets.returns, ret_hand, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(targets.V_old, V)

    def loss_now():
        with torch.no_grad():
            return value_loss(table(prompts, completions), targets.V_old, targets.returns, targets.mask, None).item()

    before = loss_now()
    reported = [critic.fit(prompts, completions, targets) for _ in range(20)]
    assert reported[0] == pytest.approx(before, rel=1e-12)          # fit reports the loss it stepped on
    assert loss_now() < 0.8 * before, (before, loss_now())
    # an invalid slot is no target: its tokens leave the mask
    valid = torch.ones(P, G, dtype=torch.bool)
    valid[1, 2] = False
    _, t2 = critic.advantages(r, prompts, completions, mask, valid)
    assert not t2.mask[1, 2].any() and (t2.mask == (mask & valid[..., None])).all()


# --- DPO / IPO ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("loss", [DPO(0.1), DPO(2.0), IPO(0.1), IPO(1.5)], ids=repr)
def test_preference_loss_grad_is_the_derivative_of_its_value(loss):
    h = torch.linspace(-30, 30, 61, dtype=torch.float64).requires_grad_()
    (auto,) = torch.autograd.grad(loss.value(h).sum(), h)
    torch.testing.assert_close(loss.grad(h.detach()), auto, rtol=1e-12, atol=1e-14)


def pair_batch(g, P=5, T=3, V=6):
    completions = torch.randint(V, (P, 2, T), generator=g)
    mask = right_padded(P, 2, T, g, min_len=1)
    logp_anchor = torch.log_softmax(torch.randn(P, 2, T, V, generator=g), -1).gather(
        -1, completions[..., None])[..., 0].masked_fill(~mask, 0.0)
    return completions, mask, logp_anchor


@pytest.mark.parametrize("loss", [DPO(0.5), IPO(0.3)], ids=lambda l: l.name)
def test_preference_step_psi_and_gradient_equal_autograd_of_the_weighted_loss(float64_default, loss):
    """ψ = ∂L/∂logp and the parameter gradient of an MLP policy equal autograd of
    L = Σ_p w_p·ℓ(h_p) / Σ_p w_p, with h built from the log-probs with a graph."""
    g = torch.Generator().manual_seed(5)
    torch.manual_seed(5)
    P = 5
    policy = MLPPolicy(torch.randn(4, 3, generator=g), n_actions=6, hidden=8)
    prompts = torch.tensor([0, 3, 1, 3, 2])
    completions, mask, logp_anchor = pair_batch(g, P)
    w = torch.tensor([1.0, 3.0, 2.0, 1.0, 5.0])
    opt = Recorder(policy.parameters())
    out = preference_step(policy, logp_anchor, prompts, completions, mask, loss, opt, weights=w)

    lp = policy.log_probs(prompts, completions).detach().requires_grad_()
    L = (w * loss.value(preference_margin(lp, logp_anchor, mask))).sum() / w.sum()
    (psi_auto,) = torch.autograd.grad(L, lp)
    torch.testing.assert_close(out.psi, psi_auto, rtol=1e-12, atol=1e-14)
    assert out.loss.item() == pytest.approx(L.item(), rel=1e-12)

    L_theta = (w * loss.value(preference_margin(policy.log_probs(prompts, completions), logp_anchor, mask))).sum() / w.sum()
    auto = torch.autograd.grad(L_theta, list(policy.parameters()))
    for got, ref in zip(opt.grads, auto):
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-13)


def test_preference_step_weights_are_counts_of_repeated_rows(float64_default):
    g = torch.Generator().manual_seed(6)
    policy = TabularSoftmaxPolicy(3, 6, torch.randn(3, 6, generator=g))
    prompts = torch.tensor([0, 2, 1, 0])
    completions, mask, logp_anchor = pair_batch(g, 4)
    counts = torch.tensor([3, 1, 2, 4])
    rec_w, rec_rep = Recorder(policy.parameters()), Recorder(policy.parameters())
    for loss in (DPO(0.2), IPO(0.4)):
        a = preference_step(policy, logp_anchor, prompts, completions, mask, loss, rec_w, weights=counts)
        idx = torch.repeat_interleave(torch.arange(4), counts)
        b = preference_step(policy, logp_anchor[idx], prompts[idx], completions[idx], mask[idx], loss, rec_rep)
        torch.testing.assert_close(rec_w.grads[0], rec_rep.grads[0], rtol=1e-12, atol=1e-14)
        assert a.loss.item() == pytest.approx(b.loss.item(), rel=1e-12)


# --- learn: one batch, minibatches ----------------------------------------------------------------------------

def bandit_setup(g, P=4, V=5):
    policy = TabularSoftmaxPolicy(P, V, torch.randn(P, V, generator=g))
    anchor = TabularSoftmaxPolicy(P, V, torch.randn(P, V, generator=g))
    anchor.requires_grad_(False)
    rewards = ArmRewards(torch.rand(P, V, generator=g), noise="gaussian", generator=g)
    return policy, anchor, rewards


def test_learn_with_one_minibatch_is_the_one_batch_step(float64_default):
    """grpo_step (collect, then learn with minibatches=1) moves θ by −η·∇θL with
    L = Σ W·(−ρ·A), A = group_mean(r − β·Σk1), computed here by autograd from the same rollout."""
    g = torch.Generator().manual_seed(7)
    policy, anchor, rewards = bandit_setup(g)
    theta0 = policy.theta.detach().clone()
    recipe, beta, lr = seed_grpo(), 0.3, 0.5
    step = grpo_step(policy, anchor, torch.arange(4), rewards, recipe, beta, torch.optim.SGD(policy.parameters(), lr=lr),
                     G=6, generator=torch.Generator().manual_seed(8))
    y = step.rollout.completions
    th = theta0.clone().requires_grad_()
    logp = torch.log_softmax(th, -1).gather(1, y[..., 0]).unsqueeze(-1)
    A = group_mean(step.r - beta * (step.rollout.logp - step.logp_anchor).sum(-1))
    L = (seq_mean_token_mean(step.rollout.mask) * -(logp - logp.detach()).exp() * A[..., None]).sum()
    (grad,) = torch.autograd.grad(L, th)
    torch.testing.assert_close(policy.theta.detach(), theta0 - lr * grad, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(step.A, A)


def test_two_minibatches_each_average_over_their_own_rows(float64_default):
    """minibatches=2, updates=1, plain surrogate, seq_mean_token_mean, SGD: each half is a mean over its own
    rows (weights 1/(P/2·G·|o|)); the prompts are distinct rows of a tabular policy, so the halves touch
    disjoint parameters and the two steps together move θ exactly twice as far as the one full-batch
    step. ``Step.psi`` is reported on the full batch's scale: equal to the one-batch ψ."""
    g = torch.Generator().manual_seed(9)
    policy, anchor, rewards = bandit_setup(g)
    prompts = torch.arange(4)
    rollout, scored = collect(policy, prompts, rewards, 6, generator=g)
    theta0 = policy.theta.detach().clone()
    recipe, beta, lr = seed_grpo(), 0.2, 0.1
    results = {}
    for n in (1, 2):
        pol = copy.deepcopy(policy)
        s = learn(pol, anchor, prompts, rollout, scored, recipe, beta, torch.optim.SGD(pol.parameters(), lr=lr),
                  minibatches=n, generator=torch.Generator().manual_seed(10))
        results[n] = (pol.theta.detach() - theta0, s)
    (d1, s1), (d2, s2) = results[1], results[2]
    torch.testing.assert_close(d2, 2 * d1, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(s2.psi, s1.psi, rtol=1e-12, atol=1e-14)
    assert d1.abs().sum() > 0


def test_offline_step_with_the_policys_own_logprobs_is_the_online_update(float64_default):
    """Logged completions whose behaviour log-probs are the policy's own: ratio 1, and the KL measured with
    the current policy is the sampler's: the same update as ``learn`` online, over two clipped epochs."""
    g = torch.Generator().manual_seed(11)
    policy, anchor, rewards = bandit_setup(g)
    prompts = torch.arange(4)
    rollout, scored = collect(policy, prompts, rewards, 5, generator=g)
    recipe = compose("deepseek", kl="reward:k1")               # clipped, std-scaled: every piece acts
    online, offline = copy.deepcopy(policy), copy.deepcopy(policy)
    s_on = learn(online, anchor, prompts, rollout, scored, recipe, 0.3, torch.optim.SGD(online.parameters(), lr=1.0),
                 updates=2)
    batch = LoggedBatch(prompts, rollout.completions, rollout.mask, scored.r, torch.ones(4, 5, dtype=torch.bool),
                        rollout.logp)
    s_off = offline_step(offline, anchor, batch, recipe, 0.3, torch.optim.SGD(offline.parameters(), lr=1.0), updates=2)
    torch.testing.assert_close(offline.theta, online.theta, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(s_off.R, s_on.R, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(s_off.psi, s_on.psi, rtol=1e-12, atol=1e-14)
    assert (offline.theta != policy.theta).any()


# --- concat and hybrid_step ------------------------------------------------------------------------------------

def logged(P, L, G, T, fill):
    prompts = torch.full((P, L), fill)
    completions = torch.full((P, G, T), fill)
    mask = torch.ones(P, G, T, dtype=torch.bool)
    return LoggedBatch(prompts, completions, mask, torch.full((P, G), float(fill)), torch.ones(P, G, dtype=torch.bool),
                       torch.full((P, G, T), -float(fill)))


def test_concat_pads_prompts_left_completions_right_and_marks_missing_slots_invalid():
    a, b = logged(2, 3, 4, 2, fill=7), logged(1, 5, 2, 6, fill=9)
    both = concat(a, b, pad_id=0)
    assert both.prompts.shape == (3, 5) and both.shape == (3, 4, 6)
    assert (both.prompts[:2, :2] == 0).all() and (both.prompts[:2, 2:] == 7).all()     # left-padded
    assert (both.prompts[2] == 9).all()
    assert (both.completions[:2, :, :2] == 7).all() and (both.completions[:2, :, 2:] == 0).all()   # right-padded
    assert (both.mask[:2, :, :2]).all() and not both.mask[:2, :, 2:].any()
    assert (both.logp[:2, :, 2:] == 0).all() and (both.logp[2, :2] == -9).all()
    assert both.valid[:2].all() and both.valid[2, :2].all() and not both.valid[2, 2:].any()      # G 2 → 4
    assert not both.mask[2, 2:].any() and (both.r[2, 2:] == 0).all()
    with pytest.raises(ValueError, match="do not stack"):
        concat(a, LoggedBatch(torch.zeros(1, dtype=torch.long), b.completions, b.mask, b.r, b.valid, b.logp))


def test_hybrid_step_on_a_bandit_returns_a_step_over_both_batches(float64_default):
    g = torch.Generator().manual_seed(12)
    policy, anchor, rewards = bandit_setup(g, P=3)
    Gl = 7
    y = torch.randint(5, (2, Gl, 1), generator=g)
    batch = LoggedBatch(torch.tensor([1, 2]), y, torch.ones(2, Gl, 1, dtype=torch.bool),
                        torch.rand(2, Gl, generator=g), torch.ones(2, Gl, dtype=torch.bool))       # logp None: the anchor
    theta0 = policy.theta.detach().clone()
    step = hybrid_step(policy, anchor, torch.arange(3), rewards, batch, seed_grpo(), 0.1,
                       torch.optim.SGD(policy.parameters(), lr=0.5), G=4, generator=g)
    assert isinstance(step, Step)
    assert step.rollout.completions.shape == (5, Gl, 1) and step.A.shape == (5, Gl)
    assert step.scored.valid[:3, :4].all() and not step.scored.valid[:3, 4:].any() and step.scored.valid[3:].all()
    assert (step.A[:3, 4:] == 0).all()                              # empty slots teach nothing
    # the logged rows' ratio is to the anchor (their behaviour): its log-probs are the denominator
    torch.testing.assert_close(step.logp_old[3:], anchor.log_probs(torch.tensor([1, 2]), y))
    assert torch.isfinite(policy.theta).all() and (policy.theta != theta0).any()


# --- aggregations -------------------------------------------------------------------------------------------

def test_group_token_mean_equals_its_formula_and_differs_from_token_mean():
    """W = m/(P·Σ_g|o_{p,g}|): each prompt weighs 1/P, each token within it the same; equal to the batch
    token mean exactly when every group has the same number of tokens."""
    g = torch.Generator().manual_seed(13)
    P, G, T = 3, 4, 6
    mask = right_padded(P, G, T, g)
    mask[2] = False                                              # a group with no tokens: weight 0, not NaN
    W = group_token_mean(mask)
    for p in range(P):
        n = int(mask[p].sum())
        for i in range(G):
            for t in range(T):
                want = (1.0 / (P * n)) if mask[p, i, t] else 0.0
                assert W[p, i, t].item() == pytest.approx(want, rel=1e-6, abs=0)
    assert torch.isfinite(W).all() and W[:2].sum(dim=(1, 2)).tolist() == pytest.approx([1 / P] * 2)
    ragged = torch.tensor([[[1, 1, 1]], [[1, 0, 0]]], dtype=torch.bool)     # group totals 3 and 1
    assert not torch.allclose(group_token_mean(ragged), token_mean(ragged))
    same_total = torch.tensor([[[1, 1, 0], [1, 0, 0]], [[1, 1, 1], [0, 0, 0]]], dtype=torch.bool)   # 3 and 3
    torch.testing.assert_close(group_token_mean(same_total), token_mean(same_total))


# --- recipe refusals ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,pieces", [
    ("seed", {"kl": "token:k1"}),                 # a per-token KL reward no group baseline can read
    ("deepseek", {"kl": "token:k3"}),
    ("seed", {"baseline": "gae"}),                # a critic with nothing per token to credit
    ("ppo", {"kl": "reward:k1"}),
    ("ppo", {"baseline": "group_mean"}),
])
def test_compose_keeps_token_kl_and_the_critic_together(name, pieces):
    with pytest.raises(ValueError, match="token:") as err:
        compose(name, **pieces)
    assert "\n" not in str(err.value)
    ppo = compose("ppo")
    assert str(ppo.kl) == "token:k1" and isinstance(ppo.baseline, GAE)


def test_an_unbound_gae_baseline_is_refused_by_the_step():
    """A recipe that declares 'gae' but was never bound to a value network cannot run a step."""
    g = torch.Generator().manual_seed(14)
    policy, anchor, rewards = bandit_setup(g, P=2)
    with pytest.raises((TypeError, ValueError)):
        grpo_step(policy, anchor, torch.arange(2), rewards, compose("ppo"), 0.1,
                  torch.optim.SGD(policy.parameters(), lr=0.1), G=3, generator=g)
    recipe = replace(compose("ppo"), baseline=Critic(ValueTable(2), GAE(), lr=0.1))
    step = grpo_step(policy, anchor, torch.arange(2), rewards, recipe, 0.1, torch.optim.SGD(policy.parameters(), lr=0.1),
                     G=3, generator=g)
    assert step.R.shape == (2, 3) and step.A.shape == (2, 3, 1)

