"""Solutions to the exercises of notebooks/01_bandit.ipynb (checked by tests/test_exercises.py)."""
import torch


def my_group_mean(R):
    # the mean over the group axis, kept as (P, 1) to broadcast against (P, G)
    return R - R.mean(dim=1, keepdim=True)


def my_log_optimum(logp_anchor, r, beta):
    # π* ∝ π_anchor·exp(r/β), normalised in log space: no overflow of exp(r/β) at small β
    logits = logp_anchor + r / beta
    return logits - torch.logsumexp(logits, dim=-1, keepdim=True)
