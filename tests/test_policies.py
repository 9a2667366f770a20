"""Policies: the closed-form tabular gradient and the autograd route against autograd, table caching,
from_probs and frozen copies."""
import copy

import pytest
import torch

from minigrpo.core.optimizer import LeanAdam
from minigrpo.bandit.policies import MLPPolicy, TabularSoftmaxPolicy, frozen_copy



def reference_logp(theta, prompts, completions):
    P, G, T = completions.shape
    return torch.log_softmax(theta, -1)[prompts].gather(1, completions.reshape(P, G * T)).view(P, G, T)


# --- TabularSoftmaxPolicy ------------------------------------------------------------------------

def test_tabular_log_probs_and_distribution(float64_default):
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(3, 5, generator=g)
    pol = TabularSoftmaxPolicy(3, 5, theta)
    prompts = torch.tensor([2, 0, 2])
    y = torch.randint(5, (3, 4, 2), generator=g)
    torch.testing.assert_close(pol.log_probs(prompts, y), reference_logp(theta, prompts, y))
    torch.testing.assert_close(pol.distribution(prompts), torch.log_softmax(theta, -1)[prompts])
    nxt = pol.next_token_logp(prompts, torch.zeros(3, 4, 1, dtype=torch.long))
    assert nxt.shape == (3, 4, 5)
    torch.testing.assert_close(nxt, torch.log_softmax(theta, -1)[prompts][:, None].expand(3, 4, 5))


@pytest.mark.parametrize("seed", range(3))
def test_tabular_accumulate_grad_equals_autograd(float64_default, seed):
    """P = 3 rows with repeated prompt ids (index_add accumulation), G = 4, T = 2, ψ zero on padding."""
    g = torch.Generator().manual_seed(seed)
    n_rows, V, G, T = 3, 5, 4, 2
    theta = torch.randn(n_rows, V, generator=g)
    pol = TabularSoftmaxPolicy(n_rows, V, theta)
    prompts = torch.tensor([1, 1, 0, 1])             # row 1 three times, row 2 never
    P = len(prompts)
    y = torch.randint(V, (P, G, T), generator=g)
    mask = torch.rand(P, G, T, generator=g) < 0.7
    psi = torch.randn(P, G, T, generator=g) * mask
    pol.accumulate_grad(prompts, y, pol.log_probs(prompts, y), psi)

    th = theta.clone().requires_grad_()
    (ref,) = torch.autograd.grad((psi * reference_logp(th, prompts, y)).sum(), th)
    assert pol.theta.grad.dtype == torch.float64
    torch.testing.assert_close(pol.theta.grad, ref, rtol=1e-12, atol=1e-14)
    assert torch.equal(pol.theta.grad[2], torch.zeros(V))          # an unused row gets no gradient


def test_tabular_accumulate_grad_adds_to_existing_grad(float64_default):
    g = torch.Generator().manual_seed(1)
    pol = TabularSoftmaxPolicy(2, 3, torch.randn(2, 3, generator=g))
    prompts = torch.tensor([0, 1])
    y = torch.randint(3, (2, 3, 1), generator=g)
    psi = torch.randn(2, 3, 1, generator=g)
    pol.accumulate_grad(prompts, y, pol.log_probs(prompts, y), psi)
    once = pol.theta.grad.clone()
    pol.accumulate_grad(prompts, y, pol.log_probs(prompts, y), psi)
    torch.testing.assert_close(pol.theta.grad, 2 * once)


def test_tabular_gradient_rows_sum_to_zero(float64_default):
    """∂/∂θ_x of Σψ·log softmax(θ_x)_y is Σψ·(e_y − π): each row sums to 0 (softmax shift invariance)."""
    g = torch.Generator().manual_seed(2)
    pol = TabularSoftmaxPolicy(2, 6, torch.randn(2, 6, generator=g))
    prompts = torch.tensor([0, 1, 0])
    y = torch.randint(6, (3, 5, 3), generator=g)
    pol.accumulate_grad(prompts, y, pol.log_probs(prompts, y), torch.randn(3, 5, 3, generator=g))
    torch.testing.assert_close(pol.theta.grad.sum(-1), torch.zeros(2), rtol=0, atol=1e-14)


def test_tabular_rejects_bad_logits_shape():
    with pytest.raises(ValueError, match="shape"):
        TabularSoftmaxPolicy(2, 3, torch.zeros(3, 2))


# --- table() caching ---------------------------------------------------------------------------------

def assert_table_fresh(pol):
    torch.testing.assert_close(pol.table(), torch.log_softmax(pol.theta.detach(), -1), rtol=0, atol=0)


def test_table_refreshes_after_in_place_changes():
    g = torch.Generator().manual_seed(3)
    pol = TabularSoftmaxPolicy(2, 4, torch.randn(2, 4, generator=g))
    assert_table_fresh(pol)
    first = pol.table()
    assert pol.table() is first                                   # cached while θ is unchanged
    with torch.no_grad():
        pol.theta.add_(torch.randn(2, 4, generator=g))
    assert_table_fresh(pol)
    # after a LeanAdam step
    opt = LeanAdam(pol.parameters(), lr=0.5)
    pol.theta.grad = torch.randn(2, 4, generator=g)
    opt.step()
    assert_table_fresh(pol)
    # after a torch.optim.Adam step (foreach implementation)
    topt = torch.optim.Adam(pol.parameters(), lr=0.5)
    pol.theta.grad = torch.randn(2, 4, generator=g)
    topt.step()
    assert_table_fresh(pol)
    # after load_state_dict
    pol.load_state_dict({"theta": torch.randn(2, 4, generator=g)})
    assert_table_fresh(pol)


def test_table_refreshes_after_training_steps_drive_log_probs():
    """log_probs after an update must use the new θ (the cache must not serve the pre-update table)."""
    g = torch.Generator().manual_seed(4)
    pol = TabularSoftmaxPolicy(1, 3, torch.randn(1, 3, generator=g))
    prompts = torch.zeros(1, dtype=torch.long)
    y = torch.tensor([[[0], [1], [2]]])
    opt = LeanAdam(pol.parameters(), lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        pol.accumulate_grad(prompts, y, pol.log_probs(prompts, y), torch.tensor([[[1.0], [-1.0], [0.5]]]))
        opt.step()
        torch.testing.assert_close(pol.log_probs(prompts, y), reference_logp(pol.theta.detach(), prompts, y),
                                   rtol=0, atol=0)


def test_frozen_copy_after_one_update_reads_its_own_theta():
    """Freeze the policy as a new anchor right after an update. The copy must serve log softmax of its
    own θ, not a table cached before the update (deepcopy restarts the version counter at 0)."""
    pol = TabularSoftmaxPolicy(1, 3, torch.zeros(1, 3))
    pol.table()                                                   # cached at θ version 0 (uniform)
    opt = LeanAdam(pol.parameters(), lr=0.5)
    pol.theta.grad = torch.tensor([[1.0, -1.0, 0.0]])
    opt.step()                                                    # θ changes; the cache is now stale
    anchor = frozen_copy(pol)
    assert_table_fresh(pol)
    assert_table_fresh(anchor)


def test_deepcopy_then_train_reads_its_own_theta():
    """A deep copy trained independently (e.g. one branch of a sweep) must not reuse the original's cache."""
    pol = TabularSoftmaxPolicy(1, 3, torch.zeros(1, 3))
    opt = LeanAdam(pol.parameters(), lr=0.5)
    pol.theta.grad = torch.tensor([[1.0, -1.0, 0.0]])
    opt.step()
    pol.table()                                                   # cached at version 1
    twin = copy.deepcopy(pol)                                     # twin θ version restarts at 0
    with torch.no_grad():
        twin.theta.add_(torch.tensor([[0.0, 3.0, 0.0]]))          # version 1 again, different values
    assert_table_fresh(twin)


def test_table_follows_dtype_conversion():
    pol = TabularSoftmaxPolicy(1, 3, torch.tensor([[0.0, 1.0, 2.0]]))
    pol.table()
    pol.double()
    assert pol.table().dtype == torch.float64
    assert_table_fresh(pol)


# --- from_probs and frozen_copy ------------------------------------------------------------------------

def test_from_probs_round_trip(float64_default):
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    pol = TabularSoftmaxPolicy.from_probs(probs, n_rows=3)
    assert pol.theta.shape == (3, 4)
    torch.testing.assert_close(pol.table().exp(), probs.expand(3, 4), rtol=1e-14, atol=1e-15)
    table = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.7, 0.1, 0.1, 0.1]])
    pol2 = TabularSoftmaxPolicy.from_probs(table)
    torch.testing.assert_close(pol2.table().exp(), table, rtol=1e-14, atol=1e-15)
    assert not pol2.table().isnan().any()
    assert not TabularSoftmaxPolicy.from_probs(probs, trainable=False).theta.requires_grad


def test_from_probs_rows_are_independent_parameters():
    pol = TabularSoftmaxPolicy.from_probs(torch.tensor([0.2, 0.3, 0.5]), n_rows=2)
    with torch.no_grad():
        pol.theta[0, 0] += 1.0
    torch.testing.assert_close(pol.table()[1].exp(), torch.tensor([0.2, 0.3, 0.5]))


def test_frozen_copy_is_frozen_and_independent():
    g = torch.Generator().manual_seed(6)
    pol = TabularSoftmaxPolicy(2, 3, torch.randn(2, 3, generator=g))
    anchor = frozen_copy(pol)
    before = anchor.table().clone()
    assert not any(p.requires_grad for p in anchor.parameters())
    assert pol.theta.requires_grad
    opt = LeanAdam(pol.parameters(), lr=0.3)
    prompts = torch.tensor([0, 1])
    y = torch.randint(3, (2, 4, 1), generator=g)
    for _ in range(3):
        opt.zero_grad()
        pol.accumulate_grad(prompts, y, pol.log_probs(prompts, y), torch.randn(2, 4, 1, generator=g))
        opt.step()
    assert not torch.allclose(pol.table(), before)
    assert torch.equal(anchor.table(), before)
    assert torch.equal(anchor.log_probs(prompts, y), reference_logp(before, prompts, y))
    with pytest.raises(ValueError):
        LeanAdam(anchor.parameters())                              # nothing trainable to optimise


# --- MLPPolicy (autograd) --------------------------------------------------------------------------------

def test_mlp_accumulate_grad_equals_autograd(float64_default):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(7)
    features = torch.randn(4, 3, generator=g)
    pol = MLPPolicy(features, n_actions=5, hidden=8)
    prompts = torch.tensor([3, 0, 3])
    y = torch.randint(5, (3, 4, 2), generator=g)
    psi = torch.randn(3, 4, 2, generator=g) * (torch.rand(3, 4, 2, generator=g) < 0.7)

    logp = pol.log_probs(prompts, y)
    # reference: the plain forward pass written out, then autograd of Σ ψ·logp
    params = list(pol.parameters())
    W1, b1, W2, b2 = params
    ref_logp = torch.log_softmax(torch.tanh(features[prompts] @ W1.T + b1) @ W2.T + b2, -1) \
        .gather(1, y.reshape(3, 8)).view(3, 4, 2)
    torch.testing.assert_close(logp, ref_logp)
    ref = torch.autograd.grad((psi * ref_logp).sum(), params)

    pol.accumulate_grad(prompts, y, logp, psi)
    for p, r in zip(params, ref):
        assert p.grad.dtype == torch.float64
        torch.testing.assert_close(p.grad, r, rtol=1e-12, atol=1e-14)
    # accumulates on a second call
    pol.accumulate_grad(prompts, y, pol.log_probs(prompts, y), psi)
    for p, r in zip(params, ref):
        torch.testing.assert_close(p.grad, 2 * r, rtol=1e-12, atol=1e-14)


def test_mlp_next_token_logp_matches_distribution(float64_default):
    torch.manual_seed(1)
    pol = MLPPolicy(torch.eye(3), n_actions=4)
    prompts = torch.tensor([0, 2])
    nxt = pol.next_token_logp(prompts, torch.zeros(2, 5, 0, dtype=torch.long))
    assert nxt.shape == (2, 5, 4)
    torch.testing.assert_close(nxt, pol.distribution(prompts)[:, None].expand(2, 5, 4))
    torch.testing.assert_close(pol.distribution(prompts).exp().sum(-1), torch.ones(2))
    anchor = frozen_copy(pol)
    assert not any(p.requires_grad for p in anchor.parameters())
    torch.testing.assert_close(anchor.distribution(prompts), pol.distribution(prompts).detach())
