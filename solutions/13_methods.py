"""Solutions to the exercises of notebooks/13_methods.ipynb (checked by tests/test_exercises.py)."""
import torch
import torch.nn.functional as F


def my_margin(logp, logp_anchor, mask):
    # each completion's sequence log-ratio log π/π_anchor: a token sum over its real tokens  (P, 2)
    ratio = torch.where(mask, logp - logp_anchor, 0.0).sum(dim=-1)
    # chosen (index 0) minus rejected (index 1)  (P,)
    return ratio[:, 0] - ratio[:, 1]


def my_dpo_ipo_losses(h, beta, tau):
    # DPO: the Bradley–Terry likelihood with the implicit reward β·log π/π_anchor
    dpo = -F.logsigmoid(beta * h)
    # IPO: a regression of h onto 1/(2τ)
    ipo = (h - 1 / (2 * tau)) ** 2
    return dpo, ipo


def my_gae(R, V, mask, gamma, lam):
    m = mask.to(R.dtype)
    R, V = R * m, V * m                                   # the padding holds nothing
    A = torch.zeros_like(R)
    next_A = torch.zeros_like(R[..., 0])                  # A_{t+1} and V_{t+1}: 0 past the end
    next_V = torch.zeros_like(R[..., 0])
    for t in reversed(range(R.shape[-1])):
        delta = R[..., t] + gamma * next_V - V[..., t]    # the TD error δ_t
        next_A = (delta + gamma * lam * next_A) * m[..., t]
        A[..., t] = next_A
        next_V = V[..., t]
    return A, A + V                                       # advantages and the critic's targets (returns)


def my_importance_ratio(logp, logp_behaviour):
    # a ratio of probabilities is a difference of log-probs; clamp it so exp cannot overflow
    return torch.exp((logp - logp_behaviour).clamp(-20.0, 20.0))
