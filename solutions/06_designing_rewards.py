"""Solutions to the exercises of notebooks/06_designing_rewards.ipynb (checked by tests/test_exercises.py)."""
import torch


def my_group_normalise(c):
    # each row in units of its own spread: (c − mean) / (population std + ε)
    centred = c - c.mean(dim=1, keepdim=True)
    scaled = centred / (c.std(dim=1, keepdim=True, unbiased=False) + 1e-6)
    # a constant row says nothing: exactly 0 (its centred values may be rounding errors, not zeros)
    constant = (c == c[:, :1]).all(dim=1, keepdim=True)
    return torch.where(constant, 0.0, scaled)


def my_fill_not_applicable(c, applicable):
    # the row's mean over the entries the component judged; 0 for a row it judged none of
    n = applicable.sum(dim=1, keepdim=True).clamp_min(1)
    mean = torch.where(applicable, c, 0.0).sum(dim=1, keepdim=True) / n
    # keep the judged values, put the mean where the component said None
    return torch.where(applicable, c, mean)


def my_masked_group_mean(R, valid):
    # baseline: the mean over the valid completions of each group
    n = valid.sum(dim=1, keepdim=True).clamp_min(1)
    baseline = torch.where(valid, R, 0.0).sum(dim=1, keepdim=True) / n
    # invalid completions get no advantage at all
    return torch.where(valid, R - baseline, 0.0)
