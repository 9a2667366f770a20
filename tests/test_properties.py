"""Property-based tests (hypothesis) of the pure functions — baselines, KL estimators, masks,
aggregations, the surrogate — and the numerical guards of the GRPO step.

Properties: shapes; invariances (a constant added per group, a permutation inside a group);
scaling; bounds (k2, k3 ≥ 0; Samuelson's bound on std-scaled advantages; clip pessimism); and
agreement with exact values where the distribution is enumerable (E_π[k1] = E_π[k3] = KL(π‖q),
and the three gradient identities behind "where the recipes land").

Guards: all-equal rewards in a group, zero-length completions, log-ratios of ±1000, NaN/inf in
rewards and log-probs. Each gives a finite result or a clear error, and the weights never become NaN.
Complements tests/test_advantages.py, test_kl.py and test_loss.py (which hold the hand-computed cases).
"""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minigrpo.core.advantages import BASELINES, batch_mean, group_mean, group_mean_std, leave_one_out, no_baseline
from minigrpo.core.kl import K1, K2, K3, exact_kl, k1, k1_grad, k2, k3, k3_grad
from minigrpo.core.loss import (clip_fraction, constant_normaliser, pg_loss, pg_loss_grad, seq_mean_token_mean,
                           token_mean, aggregate)
from minigrpo.core.masks import masked_mean, masked_sum
from minigrpo.core.sampling import completion_mask

SETTINGS = settings(max_examples=60, deadline=None)
F64 = torch.float64


# --- strategies ------------------------------------------------------------------------------------

@st.composite
def rewards(draw, min_G=1, constant_groups=True):
    """R (P, G) float64; some groups all-equal when ``constant_groups``."""
    P, G = draw(st.integers(1, 4)), draw(st.integers(min_G, 6))
    vals = draw(st.lists(st.floats(-100, 100, allow_nan=False), min_size=P * G, max_size=P * G))
    R = torch.tensor(vals, dtype=F64).view(P, G)
    if constant_groups:
        for p in range(P):
            if draw(st.booleans()):
                R[p] = R[p, 0]
    return R


@st.composite
def categorical_pair(draw, max_V=8):
    """(log π, log q) over V outcomes, float64, every probability ≥ e^-12 / V (so |log-ratio| < 20)."""
    V = draw(st.integers(2, max_V))
    logit = st.floats(-5, 5, allow_nan=False)
    a = draw(st.lists(logit, min_size=V, max_size=V))
    b = draw(st.lists(logit, min_size=V, max_size=V))
    return torch.log_softmax(torch.tensor(a, dtype=F64), -1), torch.log_softmax(torch.tensor(b, dtype=F64), -1)


@st.composite
def masked_batch(draw):
    """x (P,G,T) float64 with NaN/inf garbage on padding, and a mask (P,G,T) of completion-shaped rows
    (a prefix of True, possibly empty: all padding)."""
    P, G, T = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 5))
    lengths = draw(st.lists(st.integers(0, T), min_size=P * G, max_size=P * G))
    mask = (torch.arange(T) < torch.tensor(lengths)[:, None]).view(P, G, T)
    vals = draw(st.lists(st.floats(-50, 50, allow_nan=False), min_size=P * G * T, max_size=P * G * T))
    x = torch.tensor(vals, dtype=F64).view(P, G, T)
    garbage = draw(st.sampled_from([math.inf, -math.inf, math.nan, 1e300]))
    return torch.where(mask, x, torch.full_like(x, garbage)), mask


# --- baselines -----------------------------------------------------------------------------------------

UNNORMALISED = [no_baseline, batch_mean, group_mean, leave_one_out]


@SETTINGS
@given(R=rewards())
def test_every_baseline_keeps_shape_and_dtype_and_stays_finite(R):
    P, G = R.shape
    for b in BASELINES.values():
        if G >= b.min_group:
            A = b(R, torch.arange(P))
            assert A.shape == (P, G) and A.dtype == F64 and torch.isfinite(A).all(), b.name


@SETTINGS
@given(R=rewards(min_G=2), c=st.floats(-1e3, 1e3, allow_nan=False))
def test_unnormalised_advantages_scale_with_the_rewards(R, c):
    """A(c·R) = c·A(R) for any real c (negative and zero included)."""
    for fn in UNNORMALISED:
        torch.testing.assert_close(fn(c * R), c * fn(R), rtol=1e-9, atol=1e-9 * (1 + abs(c)) * 100)


@SETTINGS
@given(R=rewards(min_G=2), c=st.floats(1e-3, 1e3))
def test_std_scaled_advantages_are_scale_free(R, c):
    """(cR − mean)/(std(cR) + c·eps) = (R − mean)/(std(R) + eps): with eps scaled too, exactly scale-free."""
    torch.testing.assert_close(group_mean_std(c * R, eps=c * 1e-4), group_mean_std(R, eps=1e-4), rtol=1e-8, atol=1e-8)


@SETTINGS
@given(R=rewards(min_G=1), c=st.floats(-100, 100, allow_nan=False))
def test_batch_mean_ignores_a_constant_added_to_every_reward(R, c):
    torch.testing.assert_close(batch_mean(R + c), batch_mean(R), rtol=0, atol=1e-10)


@SETTINGS
@given(R=rewards(min_G=2), data=st.data())
def test_group_advantages_are_permutation_equivariant_within_a_group(R, data):
    P, G = R.shape
    perm = torch.tensor(data.draw(st.permutations(range(G))))
    for fn in (group_mean, group_mean_std, leave_one_out):
        torch.testing.assert_close(fn(R[:, perm]), fn(R)[:, perm], rtol=1e-12, atol=1e-12)


@SETTINGS
@given(R=rewards(min_G=2))
def test_std_scaled_advantages_obey_samuelsons_bound(R):
    """|z| ≤ (G−1)/√G for a sample standardised by its unbiased std (Samuelson 1968); + eps only shrinks it."""
    G = R.shape[1]
    assert group_mean_std(R).abs().max() <= (G - 1) / math.sqrt(G) + 1e-12


@SETTINGS
@given(P=st.integers(1, 4), G=st.integers(2, 16), value=st.floats(-1e6, 1e6, allow_nan=False),
       dtype=st.sampled_from([torch.float32, F64]))
def test_all_equal_rewards_give_zero_advantage_not_nan(P, G, value, dtype):
    """A group whose rewards are all equal has nothing to teach: std-scaled advantages are exactly 0
    (not 0/0); mean-based ones are 0 up to the rounding of the mean (a few ulps of the reward)."""
    R = torch.full((P, G), value, dtype=dtype)
    assert torch.equal(group_mean_std(R), torch.zeros_like(R))
    ulp = torch.finfo(dtype).eps * abs(value)
    for fn in (group_mean, leave_one_out, batch_mean):
        A = fn(R)
        assert torch.isfinite(A).all() and A.abs().max() <= 8 * ulp, (fn.__name__, A)


# --- KL estimators against exact enumeration -------------------------------------------------------------

@SETTINGS
@given(pq=categorical_pair())
def test_k1_and_k3_average_to_the_exact_kl(pq):
    """E_{y~π}[k(y)] = Σ_y π(y)·k(y) = KL(π‖q) for k1 and k3 (unbiased), computed exactly."""
    logp, logq = pq
    pi = logp.exp()
    kl = exact_kl(logp, logq)
    torch.testing.assert_close((pi * k1(logp, logq)).sum(), kl, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close((pi * k3(logp, logq)).sum(), kl, rtol=1e-9, atol=1e-12)


@SETTINGS
@given(pq=categorical_pair())
def test_k2_is_half_k1_squared_and_bounds_the_kl(pq):
    """k2 = ½·k1² pointwise, so by Jensen E_π[k2] ≥ ½·(E_π[k1])² = ½·KL(π‖q)²."""
    logp, logq = pq
    torch.testing.assert_close(k2(logp, logq), 0.5 * k1(logp, logq) ** 2, rtol=1e-12, atol=0)
    assert (logp.exp() * k2(logp, logq)).sum() >= 0.5 * exact_kl(logp, logq) ** 2 - 1e-12


@SETTINGS
@given(pq=categorical_pair())
def test_expected_kl_pushes_are_the_gradients_of_the_right_divergences(pq):
    """For a softmax policy π = softmax(θ), ∇θ log π(y) = e_y − π, so E_π[f(y)·∇θ log π(y)] = π⊙f − π·E_π f.

    * KL in the reward (f = k1):      the push is ∇θ KL(π ‖ q)         → fixed point π*
    * k3 in the loss   (f = ∂k3/∂logp): the push is ∇θ KL(q ‖ π)     → the reverse-KL fixed point
    * k1 in the loss   (f = ∂k1/∂logp = 1): the push is 0            → no anchor pull at all
    """
    logp, logq = pq
    pi = logp.exp()

    def push(f):
        return pi * f - pi * (pi * f).sum()

    def grad(divergence):
        theta = logp.clone().requires_grad_()                  # softmax(θ) = π
        (g,) = torch.autograd.grad(divergence(torch.log_softmax(theta, -1)), theta)
        return g

    forward, reverse = grad(lambda logpi: exact_kl(logpi, logq)), grad(lambda logpi: exact_kl(logq, logpi))
    torch.testing.assert_close(push(k1(logp, logq)), forward, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(push(k3_grad(logp, logq)), reverse, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(push(k1_grad(logp, logq)), torch.zeros_like(logp), rtol=0, atol=1e-12)


extreme = st.floats(-1e4, 1e4, allow_nan=False)


@SETTINGS
@given(a=st.lists(extreme, min_size=1, max_size=8), b=st.lists(extreme, min_size=1, max_size=8),
       dtype=st.sampled_from([torch.float32, F64]))
def test_k2_k3_are_non_negative_and_finite_for_any_log_probs(a, b, dtype):
    n = min(len(a), len(b))
    logp, logq = torch.tensor(a[:n], dtype=dtype), torch.tensor(b[:n], dtype=dtype)
    for est in (K2, K3):
        v, g = est.value(logp, logq), est.grad(logp, logq)
        assert (v >= 0).all() and torch.isfinite(g).all(), est.name
    assert torch.isfinite(K3.value(logp, logq)).all()         # log-ratio clamped to ±20: no exp overflow


# --- masks and aggregations ---------------------------------------------------------------------------

@SETTINGS
@given(batch=masked_batch())
def test_masked_sum_and_mean_equal_a_python_loop_and_ignore_padding(batch):
    x, mask = batch
    P, G, T = x.shape
    rows = [[[x[p, g, t].item() for t in range(T) if mask[p, g, t]] for g in range(G)] for p in range(P)]
    loop_sum = torch.tensor([[sum(r) for r in row] for row in rows], dtype=F64)
    loop_mean = torch.tensor([[sum(r) / len(r) if r else 0.0 for r in row] for row in rows], dtype=F64)
    torch.testing.assert_close(masked_sum(x, mask, dim=-1), loop_sum, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(masked_mean(x, mask, dim=-1), loop_mean, rtol=1e-12, atol=1e-12)
    flat = [v for row in rows for r in row for v in r]
    assert masked_mean(x, mask).item() == pytest.approx(sum(flat) / len(flat) if flat else 0.0, rel=1e-12, abs=1e-12)


@SETTINGS
@given(batch=masked_batch())
def test_aggregation_weights_are_finite_zero_on_padding_and_normalised(batch):
    _, mask = batch
    P, G, T = mask.shape
    for fn in (seq_mean_token_mean, token_mean, constant_normaliser(), constant_normaliser(7)):
        W = fn(mask)
        assert W.shape == (P, G, T) and torch.isfinite(W).all() and (W >= 0).all()
        assert (W[~mask] == 0).all()
    lengths = mask.sum(-1)
    per_seq = seq_mean_token_mean(mask).sum(-1)                          # each non-empty sequence: 1/(P·G)
    torch.testing.assert_close(per_seq, (lengths > 0).to(per_seq.dtype) / (P * G))
    assert token_mean(mask).sum().item() == pytest.approx(1.0 if mask.any() else 0.0)
    torch.testing.assert_close(constant_normaliser()(mask), mask.to(per_seq.dtype) / (P * G * T))


@SETTINGS
@given(batch=masked_batch())
def test_aggregate_equals_the_loop_whatever_sits_on_padding(batch):
    x, mask = batch
    P, G, T = x.shape
    W = token_mean(mask).to(F64)
    loop = sum(W[p, g, t].item() * x[p, g, t].item()
               for p in range(P) for g in range(G) for t in range(T) if mask[p, g, t])
    L = aggregate(x, W)
    assert torch.isfinite(L) and L.item() == pytest.approx(loop, rel=1e-9, abs=1e-9)


@SETTINGS
@given(T=st.integers(1, 6), tokens=st.lists(st.integers(0, 3), min_size=6, max_size=6))
def test_completion_mask_is_a_prefix_through_the_first_eos(T, tokens):
    eos = 0
    y = torch.tensor(tokens[:T])
    m = completion_mask(y, eos)
    first = tokens[:T].index(eos) if eos in tokens[:T] else T - 1
    assert m.tolist() == [t <= first for t in range(T)]


# --- the surrogate ---------------------------------------------------------------------------------------

eps_choice = st.sampled_from([(None, None), (0.2, 0.2), (0.2, 0.28), (0.1, None), (None, 0.3)])


@st.composite
def ratios(draw, lo=-3.0, hi=3.0):
    n = draw(st.integers(1, 8))
    f = st.floats(lo, hi, allow_nan=False)
    logp = torch.tensor(draw(st.lists(f, min_size=n, max_size=n)), dtype=F64)
    logp_old = torch.tensor(draw(st.lists(f, min_size=n, max_size=n)), dtype=F64)
    A = torch.tensor(draw(st.lists(st.floats(-10, 10, allow_nan=False), min_size=n, max_size=n)), dtype=F64)
    return logp, logp_old, A


@SETTINGS
@given(r=ratios(), eps=eps_choice)
def test_surrogate_push_is_the_derivative_of_the_surrogate(r, eps):
    logp, logp_old, A = r
    x = logp.clone().requires_grad_()
    (auto,) = torch.autograd.grad(pg_loss(x, logp_old, A, *eps).sum(), x)
    torch.testing.assert_close(pg_loss_grad(logp, logp_old, A, *eps), auto, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(r=ratios(), eps=eps_choice)
def test_clipped_surrogate_is_pessimistic_and_exact_on_policy(r, eps):
    """The clip only ever raises the loss (PPO's lower bound on the objective), and at ρ = 1 every
    surrogate is −A with push −A."""
    logp, logp_old, A = r
    assert (pg_loss(logp, logp_old, A, *eps) >= pg_loss(logp, logp_old, A) - 1e-12).all()
    torch.testing.assert_close(pg_loss(logp, logp, A, *eps), -A)
    torch.testing.assert_close(pg_loss_grad(logp, logp, A, *eps), -A)
    frac = clip_fraction(logp, logp_old, A, torch.ones_like(A, dtype=torch.bool), *eps)
    assert 0 <= frac <= 1


# --- numerical guards -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("eps", [(None, None), (0.2, 0.2), (0.2, 0.28)])
@pytest.mark.parametrize("gap", [1000.0, -1000.0, 88.8, -104.0])          # float32 exp overflows above 88.7
def test_extreme_log_ratios_give_finite_losses_and_pushes(dtype, eps, gap):
    """logp − logp_old (or − logp_anchor) = ±1000: every term and its push stays finite (the log-ratio is
    clamped to ±20, documented in ``loss.importance_ratio`` and ``kl.k3``)."""
    logp = torch.tensor([0.0, -5.0], dtype=dtype)
    other = logp - gap
    A = torch.tensor([1.5, -1.5], dtype=dtype)
    for v in (pg_loss(logp, other, A, *eps), pg_loss_grad(logp, other, A, *eps)):
        assert torch.isfinite(v).all(), v
    assert 0 <= clip_fraction(logp, other, A, torch.ones(2, dtype=torch.bool), *eps) <= 1
    for est in (K1, K2, K3):
        assert torch.isfinite(est.value(logp, other)).all() and torch.isfinite(est.grad(logp, other)).all()
    x = logp.clone().requires_grad_()
    (g,) = torch.autograd.grad((pg_loss(x, other, A, *eps) + K3.value(x, other)).sum(), x)
    assert torch.isfinite(g).all()


def tabular_step(baseline, logits, reward_fn, *, G=6, T=3, beta=0.1, max_grad_norm=None, kl="reward:k1", policy=None):
    """One grpo_step on a 3-token tabular policy (token 0 is EOS), returning (step, θ before, θ after)."""
    from dataclasses import replace

    from minigrpo import LeanAdam, TabularSoftmaxPolicy, grpo_step, seed_grpo
    from minigrpo.core.advantages import LearnedValue
    from minigrpo.core.kl import parse_kl

    pol = policy if policy is not None else TabularSoftmaxPolicy(2, 3, torch.tensor([logits, logits]))
    anchor = TabularSoftmaxPolicy(2, 3, torch.tensor([logits, logits]))
    anchor.requires_grad_(False)
    b = LearnedValue(n_prompts=2) if baseline == "value" else BASELINES[baseline]
    recipe = replace(seed_grpo(), baseline=b, kl=parse_kl(kl))
    before = pol.theta.detach().clone()
    step = grpo_step(pol, anchor, torch.arange(2), reward_fn, recipe, beta, LeanAdam(pol.parameters(), 0.1), G,
                     generator=torch.Generator().manual_seed(0), max_new_tokens=T, eos_id=0, pad_id=0,
                     max_grad_norm=max_grad_norm)
    return step, before, pol.theta.detach().clone()


def constant_reward(prompts, completions):
    return torch.full(completions.shape[:2], 0.7)


def length_reward(prompts, completions):
    return (completions != 0).sum(-1).float()          # 0 for a completion that is EOS at t = 0


@pytest.mark.parametrize("baseline", ["none", "batch_mean", "group_mean", "group_mean_std", "leave_one_out", "value"])
def test_zero_length_completions_and_all_equal_rewards_teach_nothing_and_stay_finite(baseline):
    """Every completion is EOS at t = 0 (length 1, the EOS its only token; the rest padding), every
    reward equal, policy = anchor: the group has nothing to teach. A = 0 (the learned value's A is
    R − V with V = 0 at the start), every metric is finite and the weights stay finite."""
    step, before, after = tabular_step(baseline, [30.0, 0.0, 0.0], constant_reward)
    m = step.rollout.mask
    assert (step.rollout.completions[..., 0] == 0).all() and m[..., 0].all() and not m[..., 1:].any()
    if baseline in ("batch_mean", "group_mean", "group_mean_std", "leave_one_out"):
        assert step.A.abs().max() < 1e-6
    assert all(math.isfinite(v) for v in step.metrics().values()), step.metrics()
    assert torch.isfinite(after).all()
    if baseline in ("group_mean_std",):
        assert torch.equal(after, before)                   # A = 0 exactly and no KL push: not a single bit moves


@pytest.mark.parametrize("baseline", ["group_mean", "group_mean_std", "leave_one_out"])
@pytest.mark.parametrize("kl", ["reward:k1", "loss:k3"])
def test_a_mix_of_empty_and_full_completions_gives_finite_metrics(baseline, kl):
    step, _, after = tabular_step(baseline, [0.0, 0.0, 0.0], length_reward, kl=kl)
    lengths = step.rollout.mask.sum(-1)
    assert (lengths == 1).any() and (lengths == 3).any()
    assert all(math.isfinite(v) for v in step.metrics().values()) and torch.isfinite(after).all()


def test_an_inf_reward_is_an_error_naming_the_reward():
    def exploding_reward(prompts, completions):
        r = torch.zeros(completions.shape[:2])
        r[1, 2] = math.inf
        return r

    with pytest.raises(ValueError, match="exploding_reward.*non-finite"):
        tabular_step("group_mean", [0.0, 0.0, 0.0], exploding_reward)


class NaNLogProbs:
    """A policy wrapper whose graph-pass log-probs are NaN (as if its forward pass overflowed)."""

    def __new__(cls, logits):
        from minigrpo import TabularSoftmaxPolicy

        class Policy(TabularSoftmaxPolicy):
            def log_probs(self, prompts, completions):
                return super().log_probs(prompts, completions) * math.nan

        return Policy(2, 3, torch.tensor([logits, logits]))


def test_nan_log_probs_stop_the_step_before_the_update_when_clipping():
    pol = NaNLogProbs([0.0, 0.0, 0.0])
    before = pol.theta.detach().clone()
    with pytest.raises(FloatingPointError, match="non-finite|gradient norm is nan"):
        tabular_step("group_mean", [0.0, 0.0, 0.0], length_reward, max_grad_norm=1.0, policy=pol)
    assert torch.equal(pol.theta.detach(), before)


def test_nan_log_probs_stop_the_step_before_the_update_without_clipping():
    pol = NaNLogProbs([0.0, 0.0, 0.0])
    before = pol.theta.detach().clone()
    with pytest.raises(FloatingPointError, match="non-finite"):
        tabular_step("group_mean", [0.0, 0.0, 0.0], length_reward, policy=pol)
    assert torch.equal(pol.theta.detach(), before)


def test_a_non_finite_advantage_is_an_error_naming_it():
    """A NaN anchor log-prob (a broken anchor) makes R = r − β·KL and so A NaN."""
    from minigrpo import LeanAdam, TabularSoftmaxPolicy, grpo_step, seed_grpo

    class BrokenAnchor(TabularSoftmaxPolicy):
        def log_probs(self, prompts, completions):
            return super().log_probs(prompts, completions) * math.nan

    pol = TabularSoftmaxPolicy(2, 3)
    anchor = BrokenAnchor(2, 3)
    anchor.requires_grad_(False)
    before = pol.theta.detach().clone()
    with pytest.raises(FloatingPointError, match="advantage"):
        grpo_step(pol, anchor, torch.arange(2), length_reward, seed_grpo(), 0.1, LeanAdam(pol.parameters(), 0.1), 4,
                  generator=torch.Generator().manual_seed(0), max_new_tokens=3, eos_id=0)
    assert torch.equal(pol.theta.detach(), before)
