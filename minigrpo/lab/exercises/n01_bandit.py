"""Exercises of notebooks/01_bandit.ipynb: the group-mean baseline and the closed-form optimum π*."""
from __future__ import annotations

import torch

from minigrpo.core.advantages import group_mean as _group_mean
from minigrpo.core.optimum import optimal_policy as _optimal_policy
from minigrpo.lab.exercises import Exercise

NOTEBOOK = "01_bandit.ipynb"


def _rewards(gen: torch.Generator) -> list[tuple]:
    return [(torch.randn(3, 8, generator=gen),),                          # (P, G) = (3, 8)
            (torch.randint(0, 2, (4, 16), generator=gen).float(),),       # Bernoulli rewards, many ties
            (torch.ones(2, 5),),                                          # a flat group: A = 0
            (torch.randn(1, 2, generator=gen),)]                          # G = 2


group_mean = Exercise(
    id="01.1", title="the group-mean baseline", function="my_group_mean",
    reference=lambda R: _group_mean(R), cases=_rewards,
    hint="subtract each row's mean over the group axis (dim=1), kept as (P, 1) with keepdim=True so it broadcasts")


def _optimum_cases(gen: torch.Generator) -> list[tuple]:
    cases = []
    for K, beta in [(3, 0.1), (5, 1.0), (8, 0.005), (2, 10.0)]:    # β = 0.005: exp(r/β) overflows float32
        logp_anchor = torch.log_softmax(torch.randn(K, generator=gen), -1)     # (K,)
        r = torch.rand(K, generator=gen)                                         # (K,) mean reward per arm
        cases.append((logp_anchor, r, beta))
    return cases


optimal_policy = Exercise(
    id="01.2", title="the closed-form optimum log π*", function="my_log_optimum",
    reference=_optimal_policy, cases=_optimum_cases,
    hint="log π* = log π_anchor + r/β − log Z, with log Z = logsumexp(log π_anchor + r/β); computing exp(r/β) "
         "first overflows at small β, so stay in log space (torch.logsumexp or torch.log_softmax)")
