"""Exercises of notebooks/09_stepwise_vs_outcome.ipynb: the stepwise advantages and the KL per reasoning step."""
from __future__ import annotations

import torch

from minigrpo.core.advantages import step_advantages as _step_advantages
from minigrpo.core.step_kl import step_kl as _step_kl
from minigrpo.lab.exercises import Exercise

NOTEBOOK = "09_stepwise_vs_outcome.ipynb"


def _step_reward_cases(gen: torch.Generator) -> list[tuple]:
    # the notebook's group: "12,9,17", "2,9,7", "12,9,16", "12,8,16" (right steps 12, 9, 17)
    values = torch.tensor([[[1., 1., 1.], [0., 1., 0.], [1., 1., 0.], [1., 0., 0.]]])        # (1, 4, 3)
    ends = torch.tensor([[[2, 4, 7], [1, 3, 5], [2, 4, 7], [2, 4, 7]]])
    cases = [(values, ends, torch.ones(1, 4, 3, dtype=torch.bool), 8)]
    for P, G, S, T in [(2, 5, 3, 9), (3, 2, 4, 12), (1, 6, 2, 5)]:               # G = 2 among them
        lengths = torch.randint(1, T // S + 1, (P, G, S), generator=gen)
        ends = (lengths.cumsum(-1) - 1).clamp_max(T - 1)                          # (P, G, S) non-decreasing
        present = torch.rand(P, G, S, generator=gen) < 0.8                       # some steps missing
        present[..., 0] = True
        values = torch.randint(0, 2, (P, G, S), generator=gen).float()           # right or wrong, many ties
        cases.append((values, ends, present, T))
    return cases


step_advantages = Exercise(
    id="09.1", title="the stepwise advantages", function="my_step_advantages",
    reference=_step_advantages, cases=_step_reward_cases,
    hint="per step index s, subtract the group mean over the completions that have step s (dim=1, counting only "
         "present steps); then token t of completion (p, g) sums the centred values of every present step whose "
         "end is ≥ t (build a (P, G, S, T) 'covers' mask from torch.arange(T) <= ends[..., None])")


def _step_kl_cases(gen: torch.Generator) -> list[tuple]:
    cases = []
    for P, G, T, S in [(2, 4, 8, 3), (1, 2, 5, 2), (3, 3, 10, 5)]:
        logp = -torch.rand(P, G, T, generator=gen) * 3                           # log-probs ≤ 0
        logp_anchor = -torch.rand(P, G, T, generator=gen) * 3
        lengths = torch.randint(1, T + 1, (P, G), generator=gen)
        mask = torch.arange(T) < lengths[..., None]                              # (P, G, T) completion tokens
        seps = (torch.rand(P, G, T, generator=gen) < 0.3).long()                 # where a step ends
        ids = (seps.cumsum(-1) - seps).clamp_max(S - 1)                          # (P, G, T) step of each token
        ids = torch.where(mask, ids, -1)
        cases.append((logp, logp_anchor, mask, ids, S))
    logp, logp_anchor, mask, ids, S = cases[0]
    # padding that still carries a step id (and an inf log-prob) must add nothing; S above the largest id
    cases.append((logp.masked_fill(~mask, float("-inf")), logp_anchor, mask, torch.where(mask, ids, 0), S + 2))
    return cases


step_kl = Exercise(
    id="09.2", title="the KL of each reasoning step", function="my_step_kl",
    reference=lambda logp, logp_anchor, mask, step_ids, S: _step_kl(logp, logp_anchor, mask, step_ids, S),
    cases=_step_kl_cases,
    hint="k1 = logp − logp_anchor per token, set to 0 off the mask (torch.where, not a product: padding may hold "
         "inf); then for each step s sum k1 over the tokens whose step id is s — a one-hot (P, G, T, S) of the ids "
         "and an einsum, or scatter_add along the last axis; tokens with id −1 belong to no step")
