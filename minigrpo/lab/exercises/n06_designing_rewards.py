"""Exercises of notebooks/06_designing_rewards.ipynb: normalising a component within its group, filling in
"not applicable", and the group baseline over the valid completions only."""
from __future__ import annotations

import torch

from minigrpo.core.advantages import group_mean as _group_mean
from minigrpo.lab.exercises import Exercise
from minigrpo.rewards.compose import fill_not_applicable as _fill_not_applicable
from minigrpo.rewards.compose import group_normalise as _group_normalise

NOTEBOOK = "06_designing_rewards.ipynb"


def _components(gen: torch.Generator) -> list[tuple]:
    flat = torch.full((1, 6), 0.3)                                      # the mean of six 0.3s is not exactly 0.3
    return [(torch.randn(3, 8, generator=gen),),                        # (P, G) = (3, 8)
            (-torch.randint(0, 100, (2, 4), generator=gen).float(),),   # closeness-like: a large scale
            (torch.cat([torch.randint(0, 2, (2, 6), generator=gen).float(),
                        torch.ones(1, 6)]),),                           # Bernoulli, and a group all right
            (torch.cat([flat, torch.tensor([[0.0, 1.0, 1.0, 0.0, 0.0, 1.0]])]),),   # a constant group; ties
            (torch.randn(2, 2, generator=gen),)]                        # G = 2


group_normalise = Exercise(
    id="06.1", title="a component in units of its group's spread", function="my_group_normalise",
    reference=lambda c: _group_normalise(c), cases=_components,
    hint="per row (dim=1): (c − mean) / (std + 1e-6) with the population std (unbiased=False); a row whose "
         "values are all equal must give exactly 0 — test that with (c == c[:, :1]).all(1, keepdim=True), "
         "since c − c.mean() can be a rounding error like 3e-8 rather than 0, and divided by 1e-6 that is not small")


def _not_applicable(gen: torch.Generator) -> list[tuple]:
    cases = []
    for P, G in [(3, 6), (4, 8), (2, 2)]:
        c = torch.randn(P, G, generator=gen)                   # values where not applicable are junk: ignore them
        applicable = torch.rand(P, G, generator=gen) < 0.6
        applicable[0, 0] = True                                # at least one judged completion in group 0
        cases.append((c, applicable))
    c = torch.randn(3, 4, generator=gen)
    applicable = torch.tensor([[True, False, False, True],
                               [False, False, False, False],  # nobody judged this group: fill with 0
                               [True, True, True, True]])     # everyone judged: unchanged
    cases.append((c, applicable))
    return cases


fill_not_applicable = Exercise(
    id="06.2", title="not applicable takes the group's mean", function="my_fill_not_applicable",
    reference=lambda c, applicable: _fill_not_applicable(c, applicable), cases=_not_applicable,
    hint="the mean per row over the applicable entries only: torch.where(applicable, c, 0.0).sum(1, keepdim=True) "
         "divided by the count applicable.sum(1, keepdim=True) clamped to at least 1 (a row with none gives 0, "
         "not NaN); then torch.where(applicable, c, that mean). The junk in c where not applicable must not count")


def _valid(gen: torch.Generator) -> list[tuple]:
    cases = []
    for P, G in [(3, 8), (2, 4)]:
        R = torch.randint(0, 2, (P, G), generator=gen).float()      # 0/1 rewards with ties
        cases.append((R, torch.rand(P, G, generator=gen) < 0.7))
    R = torch.randn(3, 4, generator=gen)
    valid = torch.tensor([[True, True, False, False],
                          [False, False, False, False],              # no valid completion: A = 0, not NaN
                          [True, True, True, True]])
    cases.append((R, valid))
    cases.append((torch.randn(1, 2, generator=gen), torch.tensor([[True, False]])))   # G = 2, one valid: A = 0
    return cases


masked_group_mean = Exercise(
    id="06.3", title="the group baseline over the valid completions", function="my_masked_group_mean",
    reference=lambda R, valid: _group_mean(R, valid), cases=_valid,
    hint="per row, the mean of R over the valid completions only: n = valid.sum(1, keepdim=True), "
         "total = torch.where(valid, R, 0.0).sum(1, keepdim=True); A = R − total / n.clamp_min(1) where valid, "
         "and exactly 0 where not (torch.where) — the invalid ones neither count nor get an advantage")
