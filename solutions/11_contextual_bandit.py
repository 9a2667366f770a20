"""Solutions to the exercises of notebooks/11_contextual_bandit.ipynb (checked by tests/test_exercises.py)."""
import torch


def my_context_optimum(log_anchor, means, beta):
    logits = log_anchor + means / beta                            # (C, K); β a float or a (C, 1) column
    return logits - torch.logsumexp(logits, dim=-1, keepdim=True)   # normalise each context's row


def my_std_advantages(R):
    centred = R - R.mean(dim=1, keepdim=True)
    std = R.std(dim=1, keepdim=True)                              # unbiased: divisor G − 1
    flat = (R == R[:, :1]).all(dim=1, keepdim=True)               # all rewards equal: A = 0 exactly
    return torch.where(flat, torch.zeros_like(R), centred / (std + 1e-4))
