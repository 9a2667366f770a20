"""The surrogate and aggregations: hand values, derivatives against autograd, and the policy gradient
it produces on a tabular softmax policy against the analytic softmax gradient."""
import math

import pytest
import torch

from minigrpo.core.kl import K3, KLInLoss
from minigrpo.core.loss import (PLAIN, Surrogate, aggregate, clip_fraction, clipped, constant_normaliser, pg_loss,
                           pg_loss_grad, seq_mean_token_mean, token_mean)
from minigrpo.bandit.policies import TabularSoftmaxPolicy



# ratios just inside / outside 1 − 0.2, 1 + 0.2, 1 + 0.28, and far away; both signs of A
RATIOS = [0.3, 0.75, 0.79, 0.81, 0.95, 1.0, 1.05, 1.19, 1.21, 1.25, 1.27, 1.29, 1.6, 3.0]
ADVS = [1.3, -0.7, 0.0]


def ratio_grid():
    ratio = torch.tensor(RATIOS, dtype=torch.float64)
    A = torch.tensor(ADVS, dtype=torch.float64)
    logp_old = torch.linspace(-2.0, -0.1, len(RATIOS), dtype=torch.float64)
    logp = logp_old + ratio.log()
    # (3, 14): every ratio against every advantage
    return logp.expand(3, -1).clone(), logp_old.expand(3, -1).clone(), A[:, None].expand(-1, len(RATIOS)).clone()


# --- pg_loss and its derivative -------------------------------------------------------------------

@pytest.mark.parametrize("eps_low,eps_high", [(None, None), (0.2, 0.2), (0.2, 0.28), (0.2, None), (None, 0.28)])
def test_pg_loss_grad_matches_autograd(eps_low, eps_high):
    logp, logp_old, A = ratio_grid()
    logp = logp.requires_grad_()
    value = pg_loss(logp, logp_old, A, eps_low, eps_high)
    (auto,) = torch.autograd.grad(value.sum(), logp)
    manual = pg_loss_grad(logp.detach(), logp_old, A, eps_low, eps_high)
    assert manual.dtype == value.dtype == torch.float64
    torch.testing.assert_close(manual, auto, rtol=1e-12, atol=1e-14)


def test_pg_loss_hand_values_clipped():
    """ℓ = −min(ρA, clip(ρ, 0.8, 1.28)·A) for a few (ρ, A) by hand."""
    cases = [(1.5, 1.0, -1.28, 0.0),      # A > 0, ρ above 1 + eps_high: clipped, no gradient
             (1.5, -1.0, 1.5, 1.5),       # A < 0, ρ high: unclipped term is the min
             (0.5, -1.0, 0.8, 0.0),       # A < 0, ρ below 1 − eps_low: clipped
             (0.5, 1.0, -0.5, -0.5),      # A > 0, ρ low: unclipped
             (1.1, 2.0, -2.2, -2.2)]      # inside the range
    for rho, A, loss, grad in cases:
        lp, lo = torch.tensor([math.log(rho)], dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
        At = torch.tensor([A], dtype=torch.float64)
        assert pg_loss(lp, lo, At, 0.2, 0.28).item() == pytest.approx(loss)
        assert pg_loss_grad(lp, lo, At, 0.2, 0.28).item() == pytest.approx(grad)
        # plain: ℓ = −ρA, ∂ℓ/∂logp = −ρA
        assert pg_loss(lp, lo, At).item() == pytest.approx(-rho * A)
        assert pg_loss_grad(lp, lo, At).item() == pytest.approx(-rho * A)


def test_surrogate_objects():
    logp, logp_old, A = ratio_grid()
    s = clipped(0.2, 0.28)
    torch.testing.assert_close(s.value(logp, logp_old, A), pg_loss(logp, logp_old, A, 0.2, 0.28))
    torch.testing.assert_close(s.grad(logp, logp_old, A), pg_loss_grad(logp, logp_old, A, 0.2, 0.28))
    assert (clipped(0.2).eps_low, clipped(0.2).eps_high) == (0.2, 0.2)
    assert str(PLAIN) == "plain"
    for bad in (dict(eps_low=0.0), dict(eps_low=1.0), dict(eps_high=-0.1), dict(eps_low=float("nan"))):
        with pytest.raises(ValueError, match="eps_"):
            Surrogate(**bad)


def test_clip_fraction_hand():
    ratio = torch.tensor([[1.5, 1.5, 0.5, 0.5, 1.0, 2.0]], dtype=torch.float64)
    A = torch.tensor([[1.0, -1.0, -1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    # clipped: (1.5, +1) and (0.5, −1); the (2.0, +1) token is padding and not counted → 2/5
    frac = clip_fraction(ratio.log(), torch.zeros_like(ratio), A, mask, 0.2, 0.2)
    assert frac.item() == pytest.approx(0.4)
    # with eps_high = 0.6 the (1.5, +1) token is inside the range → 1/5
    assert clip_fraction(ratio.log(), torch.zeros_like(ratio), A, mask, 0.2, 0.6).item() == pytest.approx(0.2)
    # no clip at all → 0
    assert clip_fraction(ratio.log(), torch.zeros_like(ratio), A, mask, None, None).item() == 0.0


# --- aggregation weights -----------------------------------------------------------------------------

# P=2, G=2, T=3, lengths 3, 1, 2 and 0 (an empty completion)
MASK = torch.tensor([[[1, 1, 1], [1, 0, 0]],
                     [[1, 1, 0], [0, 0, 0]]], dtype=torch.bool)


def test_seq_mean_token_mean_hand():
    W = seq_mean_token_mean(MASK)
    expected = torch.tensor([[[1 / 12, 1 / 12, 1 / 12], [1 / 4, 0, 0]],
                             [[1 / 8, 1 / 8, 0], [0, 0, 0]]])
    assert not torch.isnan(W).any()
    torch.testing.assert_close(W, expected.to(W.dtype))
    assert (W[1, 1] == 0).all()


def test_token_mean_hand():
    W = token_mean(MASK)
    torch.testing.assert_close(W, MASK.to(W.dtype) / 6)


def test_constant_normaliser_hand():
    W = constant_normaliser()(MASK)                  # T_max = rollout T = 3 → 1/(P·G·3) = 1/12
    torch.testing.assert_close(W, MASK.to(W.dtype) / 12)
    W5 = constant_normaliser(5)(MASK)                # T_max = 5 → 1/20
    torch.testing.assert_close(W5, MASK.to(W5.dtype) / 20)
    with pytest.raises(ValueError, match="max_tokens"):
        constant_normaliser(0)


def test_all_padding_batch_gives_zero_weights_not_nan():
    empty = torch.zeros(2, 3, 4, dtype=torch.bool)
    for fn in (seq_mean_token_mean, token_mean, constant_normaliser()):
        W = fn(empty)
        assert torch.equal(W, torch.zeros_like(W))


def loop_losses(x, mask):
    """The docstring formulas, written as explicit loops over a nested list."""
    P, G, T = mask.shape
    lengths = [[sum(int(mask[p, g, t]) for t in range(T)) for g in range(G)] for p in range(P)]
    seq = sum(sum(x[p, g, t] for t in range(T) if mask[p, g, t]) / lengths[p][g]
              for p in range(P) for g in range(G) if lengths[p][g] > 0) / (P * G)
    tok = sum(x[p, g, t] for p in range(P) for g in range(G) for t in range(T) if mask[p, g, t]) / \
        sum(map(sum, lengths))
    const = sum(x[p, g, t] for p in range(P) for g in range(G) for t in range(T) if mask[p, g, t]) / (P * G * T)
    return seq, tok, const


def test_aggregate_equals_docstring_formulas_by_loops():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 3, generator=g, dtype=torch.float64)
    x_padded = torch.where(MASK, x, torch.full_like(x, math.inf))      # garbage on padding must not leak
    xl = x.tolist()
    seq, tok, const = loop_losses(torch.tensor(xl), MASK)
    for fn, ref in ((seq_mean_token_mean, seq), (token_mean, tok), (constant_normaliser(), const)):
        L = aggregate(x_padded, fn(MASK))
        assert torch.isfinite(L)
        assert L.item() == pytest.approx(float(ref), rel=1e-6)   # weights are built in the default dtype


def test_aggregate_random_masks_by_loops():
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(3, 4, 5, generator=g) < 0.6
    x = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    seq, tok, const = loop_losses(x, mask)
    assert aggregate(x, seq_mean_token_mean(mask)).item() == pytest.approx(float(seq), rel=1e-6)
    assert aggregate(x, token_mean(mask)).item() == pytest.approx(float(tok), rel=1e-6)
    assert aggregate(x, constant_normaliser()(mask)).item() == pytest.approx(float(const), rel=1e-6)


def test_aggregation_weights_float64_under_float64_default(float64_default):
    g = torch.Generator().manual_seed(2)
    mask = torch.rand(3, 4, 5, generator=g) < 0.6
    x = torch.randn(3, 4, 5, generator=g)
    seq, tok, const = loop_losses(x, mask)
    assert seq_mean_token_mean(mask).dtype == torch.float64
    assert aggregate(x, seq_mean_token_mean(mask)).item() == pytest.approx(float(seq), rel=1e-13)
    assert aggregate(x, token_mean(mask)).item() == pytest.approx(float(tok), rel=1e-13)
    assert aggregate(x, constant_normaliser()(mask)).item() == pytest.approx(float(const), rel=1e-13)


# --- the key check: surrogate gradient = analytic softmax policy gradient --------------------------

def psi_grad(policy, prompts, y, logp_old, A, W, surrogate=PLAIN, kl=None, logp_anchor=None, beta=None):
    """θ-gradient the way grpo_step computes it: ψ = W·(ℓ'_pg + β·k'), then policy.accumulate_grad."""
    logp = policy.log_probs(prompts, y)
    dl = surrogate.grad(logp, logp_old, A[..., None])
    if kl is not None:
        _, kg = kl.loss_terms(logp, logp_anchor, beta)
        dl = dl + kg
    policy.theta.grad = None
    policy.accumulate_grad(prompts, y, logp, W * dl)
    return policy.theta.grad.clone()


def autograd_grad(theta, prompts, y, logp_old, A, W, surrogate=PLAIN, kl=None, logp_anchor=None, beta=None):
    """The same gradient by autograd through log_softmax(θ)[x].gather(y)."""
    P, G, T = y.shape
    th = theta.detach().clone().requires_grad_()
    logp = torch.log_softmax(th, -1)[prompts].gather(1, y.reshape(P, G * T)).view(P, G, T)
    per_token = surrogate.value(logp, logp_old, A[..., None])
    if kl is not None:
        per_token = per_token + kl.loss_terms(logp, logp_anchor, beta)[0]
    (g,) = torch.autograd.grad(aggregate(per_token, W), th)
    return g


def test_surrogate_gradient_is_the_softmax_policy_gradient(float64_default):
    P, G, V = 2, 6, 5
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(P, V, generator=g)
    policy = TabularSoftmaxPolicy(P, V, theta)
    prompts = torch.arange(P)
    y = torch.randint(V, (P, G, 1), generator=g)
    A = torch.randn(P, G, generator=g)
    W = seq_mean_token_mean(torch.ones(P, G, 1, dtype=torch.bool))
    logp_old = policy.log_probs(prompts, y)                       # on-policy: ρ = 1

    got = psi_grad(policy, prompts, y, logp_old, A, W)

    N = P * G
    pi = torch.softmax(theta, -1)
    hand = torch.zeros(P, V)
    for p in range(P):
        for i in range(G):
            e = torch.zeros(V)
            e[y[p, i, 0]] = 1.0
            hand[p] -= A[p, i] * (e - pi[p]) / N                    # −(1/N) Σ_i A_i (e_{y_i} − π)
    torch.testing.assert_close(got, hand, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(got, autograd_grad(theta, prompts, y, logp_old, A, W), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("agg", [seq_mean_token_mean, token_mean, constant_normaliser(6)],
                         ids=["seq_mean_token_mean", "token_mean", "constant_normaliser"])
@pytest.mark.parametrize("surrogate", [PLAIN, clipped(0.2), clipped(0.2, 0.28)], ids=str)
@pytest.mark.parametrize("with_kl", [False, True])
def test_psi_route_equals_autograd_off_policy_with_padding(float64_default, agg, surrogate, with_kl):
    """Several tokens per completion (repeated prompt rows, padding, ρ ≠ 1 so the clip acts, and the
    k3 loss term): ψ + accumulate_grad equals autograd of L = Σ W·(ℓ_pg + β·k3)."""
    n_rows, V, G, T = 3, 4, 5, 4
    g = torch.Generator().manual_seed(3)
    theta = torch.randn(n_rows, V, generator=g)
    policy = TabularSoftmaxPolicy(n_rows, V, theta)
    prompts = torch.tensor([0, 2, 0, 1])
    P = len(prompts)
    y = torch.randint(V, (P, G, T), generator=g)
    lengths = torch.randint(0, T + 1, (P, G), generator=g)
    mask = torch.arange(T) < lengths[..., None]
    logp_old = policy.log_probs(prompts, y) + 0.4 * torch.randn(P, G, T, generator=g)   # ratios spread ~ e^{±0.4}
    A = torch.randn(P, G, generator=g)
    W = agg(mask)
    kw = dict(kl=KLInLoss(K3), logp_anchor=torch.log_softmax(torch.randn(n_rows, V, generator=g), -1)[prompts]
              .gather(1, y.reshape(P, G * T)).view(P, G, T), beta=torch.tensor([0.1, 0.5, 1.0, 2.0])) \
        if with_kl else {}
    got = psi_grad(policy, prompts, y, logp_old, A, W, surrogate, **kw)
    ref = autograd_grad(theta, prompts, y, logp_old, A, W, surrogate, **kw)
    torch.testing.assert_close(got, ref, rtol=1e-11, atol=1e-13)


def test_expected_surrogate_gradient_is_gradient_of_expected_reward(float64_default):
    """Σ_y π(y)·∇θ[−ρ(y)·r(y)] at ρ = 1 = −∇θ E_π[r] = −π⊙(r − E_π r): REINFORCE is unbiased."""
    V = 5
    g = torch.Generator().manual_seed(4)
    theta = torch.randn(1, V, generator=g)
    r = torch.randn(V, generator=g)
    policy = TabularSoftmaxPolicy(1, V, theta)
    prompts = torch.zeros(1, dtype=torch.long)
    pi = torch.softmax(theta[0], -1)
    W = seq_mean_token_mean(torch.ones(1, 1, 1, dtype=torch.bool))       # = 1
    expected_grad = torch.zeros(V)
    for arm in range(V):
        y = torch.full((1, 1, 1), arm)
        logp_old = policy.log_probs(prompts, y)
        expected_grad += pi[arm] * psi_grad(policy, prompts, y, logp_old, r[arm].view(1, 1), W)[0]
    torch.testing.assert_close(-expected_grad, pi * (r - (pi * r).sum()), rtol=1e-12, atol=1e-14)
    th = theta[0].clone().requires_grad_()
    (true_grad,) = torch.autograd.grad((torch.softmax(th, -1) * r).sum(), th)
    torch.testing.assert_close(-expected_grad, true_grad, rtol=1e-12, atol=1e-14)


def test_grpo_step_parameter_gradient_equals_autograd_of_step_loss(float64_default):
    """End to end: the θ-gradient grpo_step hands the optimizer is ∇θ of the loss it reports."""
    from minigrpo.core.critic import Critic, ValueTable
    from minigrpo.core.recipe import PRESETS, replace
    from minigrpo.bandit.arms import ArmRewards
    from minigrpo.core.step import grpo_step

    class Recorder:
        def zero_grad(self):
            policy.theta.grad = None

        def step(self):
            self.grad = policy.theta.grad.clone()

    for name, make in sorted(PRESETS.items()):
        g = torch.Generator().manual_seed(5)
        theta = torch.randn(2, 4, generator=g)
        policy = TabularSoftmaxPolicy(2, 4, theta)
        anchor = TabularSoftmaxPolicy(2, 4, torch.randn(2, 4, generator=g))
        rewards = ArmRewards(torch.rand(2, 4, generator=g), noise="gaussian", generator=g)
        opt = Recorder()
        recipe = make()
        if name == "ppo":             # its baseline is a critic: one learned value per prompt
            recipe = replace(recipe, baseline=Critic(ValueTable(2), recipe.baseline))
        step = grpo_step(policy, anchor, torch.arange(2), rewards, recipe, 0.3, opt, G=6, generator=g)
        A = step.A if step.A.dim() == 2 else step.A[..., 0]      # ppo: per-token advantages of one-token completions
        ref = autograd_grad(theta, torch.arange(2), step.rollout.completions, step.rollout.logp, A, step.W,
                            recipe.surrogate, recipe.kl if step.R is step.r else None, step.logp_anchor, 0.3)
        torch.testing.assert_close(opt.grad, ref, rtol=1e-10, atol=1e-12, msg=name)
