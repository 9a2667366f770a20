"""KL estimators, placements and β controllers, checked against exact KL by enumeration and autograd."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minigrpo.core.kl import (ESTIMATORS, K1, K2, K3, AdaptiveBeta, KLInLoss, KLInReward, NoKL, exact_kl, k1,
                         k1_grad, k2, k2_grad, k3, k3_grad, parse_kl)


def random_logp(V, seed, scale=1.5):
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(scale * torch.randn(V, generator=g, dtype=torch.float64), -1)


def by_hand_kl(p, q):
    """KL(p‖q) from probabilities with plain Python floats and the 0·log 0 = 0 convention."""
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


# --- exact_kl ------------------------------------------------------------------------------------

def test_exact_kl_hand_value():
    p, q = [0.5, 0.25, 0.25], [0.2, 0.3, 0.5]
    got = exact_kl(torch.tensor(p, dtype=torch.float64).log(), torch.tensor(q, dtype=torch.float64).log())
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(by_hand_kl(p, q), abs=1e-14)


def test_exact_kl_is_zero_for_equal_and_matches_torch_kl_div():
    lp, lq = random_logp(7, 0), random_logp(7, 1)
    assert exact_kl(lp, lp).item() == pytest.approx(0.0, abs=1e-15)
    ref = torch.nn.functional.kl_div(lq, lp, reduction="sum", log_target=True)   # Σ p (log p − log q)
    torch.testing.assert_close(exact_kl(lp, lq), ref, rtol=1e-12, atol=1e-14)


def test_exact_kl_zero_probability_entries_give_no_nan():
    p = torch.tensor([0.0, 0.5, 0.5], dtype=torch.float64)
    q = torch.tensor([0.0, 0.25, 0.75], dtype=torch.float64)     # 0 where p is 0 too: −inf − (−inf)
    got = exact_kl(p.log(), q.log())
    assert torch.isfinite(got)
    assert got.item() == pytest.approx(by_hand_kl([0, .5, .5], [0, .25, .75]), abs=1e-14)
    q2 = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    assert exact_kl(p.log(), q2.log()).item() == pytest.approx(by_hand_kl([0, .5, .5], [.2, .3, .5]), abs=1e-14)
    # p > 0 where q = 0: the KL is genuinely infinite (not NaN)
    assert exact_kl(q2.log(), p.log()).item() == math.inf


def test_exact_kl_batched_over_rows():
    lp = torch.stack([random_logp(5, s) for s in range(3)])
    lq = torch.stack([random_logp(5, 10 + s) for s in range(3)])
    got = exact_kl(lp, lq)
    assert got.shape == (3,)
    for i in range(3):
        assert got[i].item() == pytest.approx(by_hand_kl(lp[i].exp().tolist(), lq[i].exp().tolist()), abs=1e-13)


# --- estimators: expectation by enumeration --------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("est", [k1, k3], ids=["k1", "k3"])
def test_k1_k3_are_unbiased_by_enumeration(est, seed):
    """E_{y~π}[k(y)] = Σ_y π(y)·k(y) equals KL(π ‖ π_anchor) exactly for k1 and k3."""
    lp, la = random_logp(6, seed), random_logp(6, 100 + seed)
    expectation = (lp.exp() * est(lp, la)).sum()
    torch.testing.assert_close(expectation, exact_kl(lp, la), rtol=1e-12, atol=1e-14)


def test_k2_bias_hand_example():
    """π = (½, ½), anchor = (¼, ¾): KL = ½·log(4/3), E[k2] = ½·(½·log²2 + ½·log²(2/3))."""
    lp = torch.tensor([0.5, 0.5], dtype=torch.float64).log()
    la = torch.tensor([0.25, 0.75], dtype=torch.float64).log()
    kl = 0.5 * math.log(4 / 3)
    e_k2 = 0.5 * (0.5 * math.log(2) ** 2 + 0.5 * math.log(2 / 3) ** 2)
    assert exact_kl(lp, la).item() == pytest.approx(kl, abs=1e-15)
    assert (lp.exp() * k2(lp, la)).sum().item() == pytest.approx(e_k2, abs=1e-15)
    assert e_k2 - kl == pytest.approx(0.0173727, abs=1e-6)   # biased: ≠ 0


def test_k2_bias_is_higher_order():
    """Schulman's note: for anchor = π·(1 + ε·h) (Σπh = 0), E[k2] − KL = O(ε³) while KL = O(ε²)."""
    lp = random_logp(5, 3)
    pi = lp.exp()
    h = torch.tensor([1.0, -2.0, 0.5, 0.3, 0.7], dtype=torch.float64)
    h = h - (pi * h).sum()                                     # Σ π·h = 0 keeps the anchor normalised
    rel = []
    for eps in (1e-1, 1e-2):
        la = (pi * (1 + eps * h)).log()
        assert (la.exp().sum() - 1).abs() < 1e-12
        kl = exact_kl(lp, la)
        e_k2 = (pi * k2(lp, la)).sum()
        rel.append(((e_k2 - kl) / kl).abs().item())
    assert rel[0] > 1e-4                                       # a real bias at ε = 0.1 ...
    assert rel[1] == pytest.approx(rel[0] / 10, rel=0.2)       # ... shrinking linearly in ε relative to KL


@pytest.mark.parametrize("name", ["k1", "k2", "k3"])
def test_monte_carlo_average_over_samples(name):
    """Averaged over many samples from π, k1 and k3 land within 5 standard errors of the exact KL;
    k2 lands on its (biased) exact expectation, which is not the KL here."""
    lp, la = random_logp(4, 7, scale=1.0), random_logp(4, 8, scale=1.0)
    g = torch.Generator().manual_seed(0)
    n = 200_000
    y = torch.multinomial(lp.exp(), n, replacement=True, generator=g)
    est = ESTIMATORS[name]
    vals = est.value(lp[y], la[y])
    target = (lp.exp() * est.value(lp, la)).sum()                # exact expectation by enumeration
    se = vals.std() / math.sqrt(n)
    assert (vals.mean() - target).abs() < 5 * se
    if name in ("k1", "k3"):
        torch.testing.assert_close(target, exact_kl(lp, la), rtol=1e-12, atol=1e-14)
    else:
        assert (target - exact_kl(lp, la)).abs() > 10 * se     # the bias is visible at this sample size


# --- estimators: non-negativity (property tests) ---------------------------------------------------

logits = st.lists(st.floats(-8.0, 8.0, allow_nan=False), min_size=2, max_size=8)


@settings(max_examples=200, deadline=None)
@given(a=logits, b=logits, dtype=st.sampled_from([torch.float32, torch.float64]))
def test_k2_k3_nonnegative(a, b, dtype):
    n = min(len(a), len(b))
    lp = torch.log_softmax(torch.tensor(a[:n], dtype=dtype), -1)
    la = torch.log_softmax(torch.tensor(b[:n], dtype=dtype), -1)
    assert (k2(lp, la) >= 0).all()
    assert (k3(lp, la) >= 0).all(), f"k3 < 0: {k3(lp, la).min().item()!r} at log-ratio {(la - lp).tolist()}"


@pytest.mark.parametrize("dtype,scale", [(torch.float32, 1e-3), (torch.float64, 1e-3), (torch.float64, 1e-8)])
def test_k3_nonnegative_for_small_log_ratios(dtype, scale):
    """exp(lr) − 1 − lr ≥ 0 for every lr; computed as written it can round below 0 near lr = 0
    (torch.expm1(lr) − lr cannot: expm1 is correctly rounded and expm1(x) ≥ x)."""
    g = torch.Generator().manual_seed(0)
    lr = (torch.rand(2000, generator=g, dtype=dtype) - 0.5) * 2 * scale      # log-ratios in (−scale, scale)
    v = k3(torch.zeros_like(lr), lr)
    assert (v >= 0).all(), f"{int((v < 0).sum())} of {v.numel()} values < 0, min {v.min().item()!r}"


@settings(max_examples=100, deadline=None)
@given(a=logits, b=logits)
def test_exact_kl_nonnegative(a, b):
    n = min(len(a), len(b))
    lp = torch.log_softmax(torch.tensor(a[:n], dtype=torch.float64), -1)
    la = torch.log_softmax(torch.tensor(b[:n], dtype=torch.float64), -1)
    assert exact_kl(lp, la).item() >= -1e-12


# --- estimators: derivatives against autograd ------------------------------------------------------

@pytest.mark.parametrize("est", [K1, K2, K3], ids=lambda e: e.name)
def test_grad_matches_autograd(est):
    g = torch.Generator().manual_seed(1)
    logp = (-3 * torch.rand(4, 3, 5, generator=g, dtype=torch.float64)).requires_grad_()
    logp_anchor = -3 * torch.rand(4, 3, 5, generator=g, dtype=torch.float64)   # |lr| < 3: inside k3's clamp
    (auto,) = torch.autograd.grad(est.value(logp, logp_anchor).sum(), logp)
    manual = est.grad(logp.detach(), logp_anchor)
    assert manual.dtype == torch.float64 and manual.shape == logp.shape
    torch.testing.assert_close(manual, auto, rtol=1e-12, atol=1e-14)


def test_grad_hand_values():
    logp = torch.tensor([math.log(0.5)], dtype=torch.float64)
    logp_anchor = torch.tensor([math.log(0.25)], dtype=torch.float64)
    assert k1_grad(logp, logp_anchor).item() == 1.0
    assert k2_grad(logp, logp_anchor).item() == pytest.approx(math.log(2))
    assert k3_grad(logp, logp_anchor).item() == pytest.approx(1 - 0.25 / 0.5)
    assert k3(logp, logp_anchor).item() == pytest.approx(0.5 - 1 - math.log(0.5))


def test_k3_clamps_extreme_log_ratio_to_finite():
    logp = torch.tensor([-60.0, 0.0], dtype=torch.float64)
    logp_anchor = torch.tensor([0.0, -60.0], dtype=torch.float64)
    v = k3(logp, logp_anchor)
    assert torch.isfinite(v).all() and torch.isfinite(k3_grad(logp, logp_anchor)).all()
    assert v[0].item() == pytest.approx(math.exp(20) - 1 - 20)
    assert v[1].item() == pytest.approx(math.exp(-20) - 1 + 20)


# --- placements ------------------------------------------------------------------------------------

def test_kl_in_reward_shape_reward_hand_example():
    """R = r − β_p · Σ_t k1 over masked tokens, P=2, G=2, T=3, padding holding garbage (even inf)."""
    logp = torch.tensor([[[-1.0, -2.0, -0.5], [-0.1, 0.0, 0.0]],
                         [[-0.3, -0.7, -1.1], [-2.0, -0.2, 0.0]]], dtype=torch.float64)
    logp_anchor = torch.tensor([[[-1.5, -1.0, -9.0], [-0.4, -math.inf, 5.0]],
                                [[-0.3, -0.2, -0.1], [-1.0, -1.0, 7.0]]], dtype=torch.float64)
    mask = torch.tensor([[[1, 1, 0], [1, 0, 0]],
                         [[1, 1, 1], [1, 1, 0]]], dtype=torch.bool)
    r = torch.tensor([[1.0, 0.0], [0.5, 2.0]], dtype=torch.float64)
    beta = torch.tensor([0.1, 2.0], dtype=torch.float64)
    # Σ_t (logp − logp_anchor) over the masked tokens, by hand:
    kl = [[(-1.0 + 1.5) + (-2.0 + 1.0), (-0.1 + 0.4)],
          [(-0.3 + 0.3) + (-0.7 + 0.2) + (-1.1 + 0.1), (-2.0 + 1.0) + (-0.2 + 1.0)]]
    expected = torch.tensor([[1.0 - 0.1 * kl[0][0], 0.0 - 0.1 * kl[0][1]],
                             [0.5 - 2.0 * kl[1][0], 2.0 - 2.0 * kl[1][1]]], dtype=torch.float64)
    got = KLInReward(K1).shape_reward(r, logp, logp_anchor, mask, beta)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-14, atol=1e-14)
    # a float β is the same as a constant per-prompt tensor
    torch.testing.assert_close(KLInReward(K1).shape_reward(r, logp, logp_anchor, mask, 0.3),
                               KLInReward(K1).shape_reward(r, logp, logp_anchor, mask,
                                                           torch.full((2,), 0.3, dtype=torch.float64)))
    assert KLInReward(K1).loss_terms(logp, logp_anchor, beta) == (None, None)


def test_kl_in_loss_terms_values_and_reward_untouched():
    g = torch.Generator().manual_seed(2)
    logp = -2 * torch.rand(2, 3, 4, generator=g, dtype=torch.float64)
    logp_anchor = -2 * torch.rand(2, 3, 4, generator=g, dtype=torch.float64)
    beta = torch.tensor([0.5, 3.0], dtype=torch.float64)
    val, grad = KLInLoss(K3).loss_terms(logp, logp_anchor, beta)
    for p in range(2):
        for gi in range(3):
            for t in range(4):
                lr = (logp_anchor[p, gi, t] - logp[p, gi, t]).item()
                assert val[p, gi, t].item() == pytest.approx(beta[p].item() * (math.exp(lr) - 1 - lr), rel=1e-12)
                assert grad[p, gi, t].item() == pytest.approx(beta[p].item() * (1 - math.exp(lr)), rel=1e-12)
    r = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=torch.float64)
    assert KLInLoss(K3).shape_reward(r, logp, logp_anchor, torch.ones(2, 3, 4, dtype=torch.bool), beta) is r
    v1, g1 = KLInLoss(K1).loss_terms(logp, logp_anchor, 0.7)
    torch.testing.assert_close(v1, 0.7 * (logp - logp_anchor))
    torch.testing.assert_close(g1, torch.full_like(logp, 0.7))


def test_no_kl_is_inert():
    r = torch.tensor([[1.0, 2.0]])
    assert NoKL().shape_reward(r, None, None, None, 5.0) is r
    assert NoKL().loss_terms(None, None, 5.0) == (None, None)


# --- parse_kl ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,cls,est", [("reward:k1", KLInReward, "k1"), ("reward:k3", KLInReward, "k3"),
                                          ("loss:k3", KLInLoss, "k3"), ("loss:k2", KLInLoss, "k2")])
def test_parse_kl_accepts(spec, cls, est):
    placement = parse_kl(spec)
    assert isinstance(placement, cls) and placement.estimator.name == est
    assert str(placement) == spec


def test_parse_kl_none():
    assert isinstance(parse_kl("none"), NoKL) and str(parse_kl("none")) == "none"


@pytest.mark.parametrize("spec", ["reward", "loss:k4", "rewards:k1", "", "reward:k1:x", "k1", "None", "loss:"])
def test_parse_kl_rejects_with_message_naming_value(spec):
    with pytest.raises(ValueError) as info:
        parse_kl(spec)
    assert repr(spec) in str(info.value)


# --- β controllers -------------------------------------------------------------------------------------

def test_adaptive_beta_direction_and_hand_value():
    ctl = AdaptiveBeta(0.1, target_kl=0.5, horizon=100.0)
    ctl.observe(1.0, n=10)           # e = clip(1.0/0.5 − 1, ±0.2) = 0.2 → β·(1 + 0.2·10/100)
    assert ctl.value == pytest.approx(0.1 * 1.02)
    before = ctl.value
    ctl.observe(0.45, n=10)          # e = 0.45/0.5 − 1 = −0.1 → β·(1 − 0.01)
    assert ctl.value == pytest.approx(before * 0.99)
    before = ctl.value
    ctl.observe(0.5, n=10)           # on target: unchanged
    assert ctl.value == pytest.approx(before)


def test_adaptive_beta_moves_monotonically():
    up, down = AdaptiveBeta(1.0, 0.1), AdaptiveBeta(1.0, 0.1)
    for _ in range(20):
        b_up, b_down = up.value, down.value
        up.observe(0.3, n=64)
        down.observe(0.01, n=64)
        assert up.value > b_up and down.value < b_down and down.value > 0


def test_adaptive_beta_update_reads_step_kl():
    class FakeStep:
        kl = torch.tensor([[2.0, 2.0], [2.0, 2.0]])
    ctl = AdaptiveBeta(0.1, target_kl=1.0, horizon=40.0)
    ctl.update(FakeStep())
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 4 / 40))


@pytest.mark.parametrize("kwargs,word", [(dict(beta=0.0, target_kl=0.1), "beta"),
                                         (dict(beta=-1.0, target_kl=0.1), "beta"),
                                         (dict(beta=float("nan"), target_kl=0.1), "beta"),
                                         (dict(beta=0.1, target_kl=0.0), "target_kl"),
                                         (dict(beta=0.1, target_kl=0.1, horizon=0.0), "horizon")])
def test_adaptive_beta_rejects_bad_init(kwargs, word):
    with pytest.raises(ValueError, match=word):
        AdaptiveBeta(**kwargs)
