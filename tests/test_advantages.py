"""Baselines: hand-computed advantages, invariances, and the learned value table's closed-form trajectory."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minigrpo.core.advantages import (BASELINES, BATCH_MEAN, GROUP_MEAN, GROUP_MEAN_STD, LEAVE_ONE_OUT, NONE,
                                 LearnedValue, batch_mean, group_mean, group_mean_std, leave_one_out, no_baseline)

# P = 2 prompts, G = 4 completions each. Row means 3 and 0.5; batch mean 14/8 = 1.75.
R = torch.tensor([[1.0, 2.0, 3.0, 6.0],
                  [0.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
# unbiased group std: row 0 √((4+1+0+9)/3) = √(14/3); row 1 √((4·0.25)/3) = √(1/3)
STD = [math.sqrt(14 / 3), math.sqrt(1 / 3)]


def test_no_baseline_is_identity():
    assert torch.equal(no_baseline(R), R)


def test_batch_mean_hand():
    expected = torch.tensor([[-0.75, 0.25, 1.25, 4.25],
                             [-1.75, -1.75, -0.75, -0.75]], dtype=torch.float64)
    torch.testing.assert_close(batch_mean(R), expected, rtol=0, atol=1e-15)


def test_group_mean_hand():
    expected = torch.tensor([[-2.0, -1.0, 0.0, 3.0],
                             [-0.5, -0.5, 0.5, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(group_mean(R), expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("eps", [1e-4, 0.5])
def test_group_mean_std_hand(eps):
    expected = torch.tensor([[-2.0 / (STD[0] + eps), -1.0 / (STD[0] + eps), 0.0, 3.0 / (STD[0] + eps)],
                             [-0.5 / (STD[1] + eps), -0.5 / (STD[1] + eps), 0.5 / (STD[1] + eps),
                              0.5 / (STD[1] + eps)]], dtype=torch.float64)
    got = group_mean_std(R, eps=eps) if eps != 1e-4 else group_mean_std(R)    # 1e-4 is the default
    torch.testing.assert_close(got, expected, rtol=1e-14, atol=1e-15)


def test_leave_one_out_hand():
    # row 0: R_g − (12 − R_g)/3;  row 1: R_g − (2 − R_g)/3
    expected = torch.tensor([[1 - 11 / 3, 2 - 10 / 3, 3 - 9 / 3, 6 - 6 / 3],
                             [0 - 2 / 3, 0 - 2 / 3, 1 - 1 / 3, 1 - 1 / 3]], dtype=torch.float64)
    torch.testing.assert_close(leave_one_out(R), expected, rtol=0, atol=1e-15)


def test_leave_one_out_equals_scaled_group_mean():
    g = torch.Generator().manual_seed(0)
    for G in (2, 3, 8):
        Rr = torch.randn(5, G, generator=g, dtype=torch.float64)
        torch.testing.assert_close(leave_one_out(Rr), group_mean(Rr) * G / (G - 1), rtol=1e-12, atol=1e-14)


def test_leave_one_out_explicit_loop():
    g = torch.Generator().manual_seed(1)
    Rr = torch.randn(3, 5, generator=g, dtype=torch.float64)
    got = leave_one_out(Rr)
    for p in range(3):
        for i in range(5):
            others = [Rr[p, j].item() for j in range(5) if j != i]
            assert got[p, i].item() == pytest.approx(Rr[p, i].item() - sum(others) / 4, abs=1e-13)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("value,G", [(0.0, 3), (1.0, 4), (0.7, 3), (0.9, 16)])
def test_group_mean_std_all_equal_group_is_exactly_zero(dtype, value, G):
    """The docstring promises A = 0 exactly (not NaN, not a rounding residue / eps) for an all-equal group."""
    Rc = torch.stack([torch.full((G,), value, dtype=dtype), torch.arange(G, dtype=dtype)])
    A = group_mean_std(Rc)
    assert not torch.isnan(A).any()
    assert torch.equal(A[0], torch.zeros(G, dtype=dtype)), f"all-equal group got A = {A[0].tolist()}"
    assert (A[1] != 0).any()


@pytest.mark.parametrize("fn", [no_baseline, batch_mean, group_mean, group_mean_std, leave_one_out])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_shape_preserved(fn, dtype):
    A = fn(R.to(dtype))
    assert A.dtype == dtype and A.shape == R.shape


def test_baseline_wrappers_and_registry():
    assert {b.name for b in BASELINES.values()} == {"none", "batch_mean", "group_mean", "group_mean_std",
                                                    "leave_one_out"}
    for b, fn in ((NONE, no_baseline), (BATCH_MEAN, batch_mean), (GROUP_MEAN, group_mean),
                  (GROUP_MEAN_STD, group_mean_std), (LEAVE_ONE_OUT, leave_one_out)):
        torch.testing.assert_close(b(R, torch.arange(2)), fn(R))
    assert GROUP_MEAN.min_group == GROUP_MEAN_STD.min_group == LEAVE_ONE_OUT.min_group == 2
    assert NONE.min_group == BATCH_MEAN.min_group == 1


# --- property tests --------------------------------------------------------------------------------

@st.composite
def rewards_and_shift(draw):
    P = draw(st.integers(1, 4))
    G = draw(st.integers(2, 6))
    vals = draw(st.lists(st.floats(-100, 100, allow_nan=False), min_size=P * G, max_size=P * G))
    shift = draw(st.lists(st.floats(-100, 100, allow_nan=False), min_size=P, max_size=P))
    return (torch.tensor(vals, dtype=torch.float64).view(P, G),
            torch.tensor(shift, dtype=torch.float64)[:, None])


@settings(max_examples=150, deadline=None)
@given(data=rewards_and_shift())
def test_group_baselines_invariant_to_per_group_constant(data):
    Rr, c = data
    for fn, atol in ((group_mean, 1e-10), (leave_one_out, 1e-10)):
        torch.testing.assert_close(fn(Rr + c), fn(Rr), rtol=0, atol=atol)
    # group_mean_std divides by std + 1e-4: rounding in R + c (|R + c| ≤ 200) is amplified by ≤ 1e4
    torch.testing.assert_close(group_mean_std(Rr + c), group_mean_std(Rr), rtol=0, atol=1e-7)


@settings(max_examples=150, deadline=None)
@given(data=rewards_and_shift(), scale=st.floats(1e-3, 1e3))
def test_group_mean_scales_linearly(data, scale):
    Rr, _ = data
    torch.testing.assert_close(group_mean(scale * Rr), scale * group_mean(Rr), rtol=1e-9, atol=1e-9 * scale)
    torch.testing.assert_close(leave_one_out(scale * Rr), scale * leave_one_out(Rr), rtol=1e-9, atol=1e-9 * scale)


@settings(max_examples=100, deadline=None)
@given(data=rewards_and_shift())
def test_group_advantages_sum_to_zero_per_group(data):
    Rr, _ = data
    assert group_mean(Rr).sum(1).abs().max() < 1e-10
    assert leave_one_out(Rr).sum(1).abs().max() < 1e-10


# --- LearnedValue ----------------------------------------------------------------------------------

def test_learned_value_closed_form_trajectory():
    """With fixed rewards, V_p ← V_p + lr·(mean_g R_{p,g} − V_p): V_n = m_p·(1 − (1 − lr)^n), and each call
    returns A = R − V before its own update."""
    lr = 0.1
    lv = LearnedValue(n_prompts=3, lr=lr)
    prompts = torch.tensor([0, 2])
    Rr = torch.tensor([[1.0, 0.0, 1.0, 1.0],
                       [-2.0, 4.0, 0.0, 2.0]])
    m = torch.tensor([0.75, 1.0])
    for n in range(1, 31):
        V_before = m * (1 - (1 - lr) ** (n - 1))
        A = lv(Rr, prompts)
        torch.testing.assert_close(A, Rr - V_before[:, None], rtol=1e-5, atol=1e-5)
        V_now = lv.value_net(torch.arange(3)).detach()
        torch.testing.assert_close(V_now, torch.stack([m[0] * (1 - (1 - lr) ** n), torch.tensor(0.0),
                                                       m[1] * (1 - (1 - lr) ** n)]), rtol=1e-5, atol=1e-6)


def test_learned_value_tracks_mean_reward_under_noise():
    g = torch.Generator().manual_seed(0)
    lv = LearnedValue(n_prompts=2, lr=0.05)
    means = torch.tensor([0.2, 0.9])
    prompts = torch.tensor([0, 1])
    for _ in range(400):
        lv((torch.rand(2, 16, generator=g) < means[:, None]).float(), prompts)
    V = lv.value_net(prompts).detach()
    torch.testing.assert_close(V, means, rtol=0, atol=0.05)


def test_learned_value_repeated_prompt_ids_still_converge():
    """Prompts drawn with replacement repeat ids in one batch. V must still track E[R | x]; here prompt 0
    appears 30 times (rewards always 1). A per-row-summed loss moves it at rate 30·lr = 3 and diverges."""
    lv = LearnedValue(n_prompts=2, lr=0.1)
    prompts = torch.tensor([0] * 30 + [1])
    Rr = torch.ones(31, 4)
    for _ in range(50):
        lv(Rr, prompts)
    V = lv.value_net(torch.arange(2)).detach()
    assert torch.isfinite(V).all()
    torch.testing.assert_close(V, torch.full((2,), 1 - 0.9 ** 50), rtol=0, atol=1e-4)  # each prompt moves at rate lr


def test_learned_value_needs_table_size_or_net():
    with pytest.raises(ValueError, match="n_prompts"):
        LearnedValue()
