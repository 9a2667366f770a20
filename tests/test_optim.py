"""LeanAdam against torch.optim.Adam, its hand-computed first step, and state round-trips."""

import pytest
import torch

from minigrpo.core.optimizer import LeanAdam


def make_params(seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, 4, generator=g, dtype=torch.float64).requires_grad_(),
            torch.randn(5, generator=g, dtype=torch.float64).requires_grad_()]


def random_grads(step, shapes):
    g = torch.Generator().manual_seed(1000 + step)
    return [torch.randn(s, generator=g, dtype=torch.float64) * (0.1 + step % 3) for s in shapes]


@pytest.mark.parametrize("lr,betas,eps", [(1e-3, (0.9, 0.999), 1e-8), (0.05, (0.8, 0.99), 1e-3),
                                          (0.3, (0.0, 0.9), 1e-6)])
def test_matches_torch_adam_for_50_steps(lr, betas, eps):
    ours, ref = make_params(0), make_params(0)
    opt = LeanAdam(ours, lr=lr, betas=betas, eps=eps)
    topt = torch.optim.Adam(ref, lr=lr, betas=betas, eps=eps)
    shapes = [p.shape for p in ours]
    for step in range(50):
        grads = random_grads(step, shapes)
        opt.zero_grad()
        topt.zero_grad()
        for p, q, gr in zip(ours, ref, grads):
            p.grad = gr.clone() if p.grad is None else p.grad.add_(gr)
            q.grad = gr.clone()
        opt.step()
        topt.step()
        for p, q in zip(ours, ref):
            assert p.dtype == torch.float64
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)
    for p, q in zip(ours, ref):          # much tighter than the requested 1e-6 in float64
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)


def test_first_step_by_hand():
    """Step 1: m̂ = g, v̂ = g², so θ ← θ − lr·g/(|g| + eps)."""
    p = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    opt = LeanAdam([p], lr=0.1, eps=1e-8)
    g = torch.tensor([0.3, -4.0, 0.0], dtype=torch.float64)
    p.grad = g.clone()
    opt.step()
    expected = [1.0 - 0.1 * 0.3 / (0.3 + 1e-8), -2.0 + 0.1 * 4.0 / (4.0 + 1e-8), 0.5]
    for got, want in zip(p.tolist(), expected):
        assert got == pytest.approx(want, abs=1e-14)


def test_state_dict_round_trip_resumes_identically():
    a = make_params(1)
    opt_a = LeanAdam(a, lr=0.01)
    shapes = [p.shape for p in a]
    for step in range(10):
        opt_a.zero_grad()
        for p, gr in zip(a, random_grads(step, shapes)):
            p.grad = gr.clone()
        opt_a.step()
    # a second run restored from the saved parameters and optimizer state
    b = [p.detach().clone().requires_grad_() for p in a]
    opt_b = LeanAdam(b, lr=0.01)
    state = opt_a.state_dict()
    opt_b.load_state_dict(state)
    assert opt_b.t == 10
    for step in range(10, 30):
        for opt, params in ((opt_a, a), (opt_b, b)):
            opt.zero_grad()
            for p, gr in zip(params, random_grads(step, shapes)):
                p.grad = gr.clone()
            opt.step()
    for p, q in zip(a, b):
        assert torch.equal(p, q)
    # state_dict holds copies: later steps did not change the saved state
    assert state["t"] == 10 and not torch.equal(state["m"][0], opt_a.m[0])


def test_restored_state_differs_from_fresh_start():
    """Bias correction depends on t: resuming without the state would not reproduce the run."""
    a = make_params(2)
    opt = LeanAdam(a, lr=0.01)
    for step in range(5):
        for p, gr in zip(a, random_grads(step, [p.shape for p in a])):
            p.grad = gr.clone()
        opt.step()
    b = [p.detach().clone().requires_grad_() for p in a]
    fresh = LeanAdam(b, lr=0.01)
    for opt_, params in ((opt, a), (fresh, b)):
        for p, gr in zip(params, random_grads(5, [p.shape for p in params])):
            p.grad = gr.clone()
        opt_.step()
    assert not torch.equal(a[0], b[0])


def test_skips_params_without_grad_and_frozen_params():
    p = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    frozen = torch.ones(2, dtype=torch.float64)
    opt = LeanAdam([p, frozen], lr=0.1)
    assert len(opt.params) == 1
    opt.step()                                     # p.grad is None: no update, no error
    assert torch.equal(p.detach(), torch.zeros(2, dtype=torch.float64))


@pytest.mark.parametrize("lr", [0.0, -1e-3, float("nan")])
def test_bad_lr_raises(lr):
    with pytest.raises(ValueError, match="lr"):
        LeanAdam([torch.zeros(1, requires_grad=True)], lr=lr)


def test_no_trainable_params_raises():
    with pytest.raises(ValueError, match="trainable"):
        LeanAdam([torch.zeros(1)])
