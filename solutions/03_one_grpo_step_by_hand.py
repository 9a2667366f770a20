"""Solutions to the exercises of notebooks/03_one_grpo_step_by_hand.ipynb (checked by tests/test_exercises.py)."""
import torch


def my_total_reward(r, logp_old, logp_anchor, mask, beta):
    k1 = logp_old - logp_anchor                                   # (P, G, T) per-token KL estimate
    kl_seq = torch.where(mask, k1, torch.zeros_like(k1)).sum(-1)  # (P, G) over real tokens only
    return r - beta * kl_seq


def my_psi(logp, logp_old, A, mask):
    P, G, T = mask.shape
    lengths = mask.sum(-1, keepdim=True).float().clamp_min(1.0)   # |o|, (P, G, 1); an empty completion: W = 0
    W = mask / (P * G * lengths)                                  # per-sequence mean's weights
    rho = torch.exp(logp - logp_old)                              # importance ratio
    return W * (-rho * A[..., None])                              # ψ = W · ∂ℓ/∂logp with ℓ = −ρA


def my_k3(logp, logp_anchor):
    lr = (logp_anchor - logp).clamp(-20.0, 20.0)                  # log π_anchor/π, kept finite
    k3 = torch.expm1(lr) - lr                                     # e^lr − 1 − lr, never rounds below 0
    grad = -torch.expm1(lr)                                       # ∂k3/∂logp = 1 − e^lr
    return k3, grad
