"""Exercises of notebooks/11_contextual_bandit.ipynb: the optimum of every context at once, and the std-normalised
advantages that re-weight the contexts."""
from __future__ import annotations

import torch

from minigrpo.core.advantages import group_mean_std as _group_mean_std
from minigrpo.core.optimum import optimal_policy as _optimal_policy
from minigrpo.lab.exercises import Exercise

NOTEBOOK = "11_contextual_bandit.ipynb"
MEANS = torch.tensor([[0.9, 0.5, 0.1, 0.3], [0.2, 0.8, 0.4, 0.1], [0.02, 0.05, 0.03, 0.12]])   # the notebook's μ


def _optimum_cases(gen: torch.Generator) -> list[tuple]:
    cases = [(torch.log_softmax(torch.randn(3, 4, generator=gen), -1), MEANS, 0.1)]      # the notebook's table
    for C, K, beta in [(5, 3, 1.0), (2, 6, 0.004), (1, 2, 10.0)]:                        # β = 0.004: exp(μ/β) = inf
        cases.append((torch.log_softmax(torch.randn(C, K, generator=gen), -1), torch.rand(C, K, generator=gen), beta))
    cases.append((torch.log_softmax(torch.randn(4, 5, generator=gen), -1), torch.rand(4, 5, generator=gen),
                  torch.tensor([[0.05], [0.1], [0.5], [2.0]])))                          # one β per context, (C, 1)
    return cases


context_optimum = Exercise(
    id="11.1", title="the optimum of every context", function="my_context_optimum",
    reference=_optimal_policy, cases=_optimum_cases,
    hint="log π*(·|x) = log π_anchor(·|x) + μ[x]/β − log Z(x), normalised in each row (over the arms, dim=-1), "
         "not over the whole table; stay in log space (torch.log_softmax(..., dim=-1)) so a small β does not "
         "overflow; β may be a float or a (C, 1) column that broadcasts against the table")


def _advantage_cases(gen: torch.Generator) -> list[tuple]:
    rare = (torch.rand(3, 16, generator=gen) < torch.tensor([[0.8], [0.5], [0.06]])).float()   # (C, G) Bernoulli
    rare[2] = 0.0
    rare[2, 5] = 1.0                                                              # context 2: one success
    flat = torch.full((2, 8), 0.3)                                                # its mean is not exactly 0.3
    flat[1] = torch.randn(8, generator=gen)
    return [(torch.randn(4, 8, generator=gen),),
            (rare,),
            (flat,),                                                              # a flat group: A = 0 exactly
            (torch.zeros(2, 5),),                                                 # nothing paid: A = 0, not NaN
            (torch.randn(3, 2, generator=gen),)]                                  # G = 2


std_advantages = Exercise(
    id="11.2", title="std-normalised advantages", function="my_std_advantages",
    reference=lambda R: _group_mean_std(R), cases=_advantage_cases,
    hint="A = (R − mean) / (std + 1e-4) per row (dim=1), with the unbiased std (divisor G − 1, torch.std's "
         "default); a group whose rewards are all equal gets A = 0 exactly: its mean can round (0.3 × 8 / 8 is "
         "not exactly 0.3), so set those rows to 0 with torch.where on (R == R[:, :1]).all(1, keepdim=True)")
