"""Exercises of notebooks/04_lm_grpo_run.ipynb: the drift measures, the exact KL between two next-token
distributions and the TV and KL between two answer distributions."""
from __future__ import annotations

import torch

from minigrpo.core.kl import exact_kl as _exact_kl
from minigrpo.core.optimum import kl_divergence as _kl_divergence
from minigrpo.core.optimum import total_variation as _total_variation
from minigrpo.lab.exercises import Exercise

NOTEBOOK = "04_lm_grpo_run.ipynb"


def _next_token_cases(gen: torch.Generator) -> list[tuple]:
    logp = torch.log_softmax(torch.randn(2, 2, 3, 12, generator=gen) * 2, -1)   # (P, G, T, V): every position
    one = torch.log_softmax(torch.randn(5, 4, 10, generator=gen), -1)
    same = torch.log_softmax(torch.randn(7, generator=gen), -1)
    cut = torch.log_softmax(torch.randn(3, 8, generator=gen) * 2, -1)
    cut[:, :3] = float("-inf")                                                    # π(v) = 0 for some tokens
    cut = torch.log_softmax(cut, -1)
    return [(logp, torch.log_softmax(torch.randn(2, 2, 3, 12, generator=gen), -1)),
            (one, torch.log_softmax(one + 0.3 * torch.randn(5, 4, 10, generator=gen), -1)),   # a small drift
            (same, same.clone()),                                                 # no drift: KL = 0
            (cut, torch.log_softmax(torch.randn(3, 8, generator=gen), -1))]       # 0·log 0 = 0, not NaN


token_kl = Exercise(
    id="04.1", title="the exact KL at one position", function="my_token_kl",
    reference=lambda logp, logp_anchor: _exact_kl(logp, logp_anchor), cases=_next_token_cases,
    hint="KL(π ‖ π_anchor) = Σ_v π(v)·(log π(v) − log π_anchor(v)) over the last axis, with π = logp.exp(); "
         "a token with π(v) = 0 has logp = −inf, and 0·(−inf) is NaN: drop those terms "
         "(torch.where(p > 0, …, 0))")


def _answer_drift(logp: torch.Tensor, logp_anchor: torch.Tensor) -> tuple[float, float]:
    """(TV, KL(π ‖ π_anchor)) of the two answer distributions renormalised over the list, as
    ``answer_distribution`` (softmax of the sequence log-probs) and ``drift.tv`` / ``drift.kl`` compute them."""
    lp, la = torch.log_softmax(logp, -1), torch.log_softmax(logp_anchor, -1)
    return _total_variation(lp, la).item(), _kl_divergence(lp, la).item()


def _answers(gen: torch.Generator, A: int, scale: float, shift: float) -> torch.Tensor:
    return (torch.randn(A, generator=gen, dtype=torch.float64) * scale - shift)   # (A,) log π(answer, EOS | x)


def _answer_cases(gen: torch.Generator) -> list[tuple]:
    base = _answers(gen, 12, 2.0, 4.0)
    cases = [(base, base + 0.8 * torch.randn(12, generator=gen, dtype=torch.float64)),
             (_answers(gen, 199, 3.0, 8.0), _answers(gen, 199, 3.0, 8.0)),      # every answer "0" … "198"
             (base, base - 1.5),                                                # less mass on the list, same shape
             (_answers(gen, 20, 2.0, 800.0), _answers(gen, 20, 2.0, 800.0))]    # exp(−800) = 0 even in float64
    big = _answers(gen, 6, 1.0, 5.0)
    big[2] = -0.05                                                              # one answer dominates
    cases.append((big, _answers(gen, 6, 1.0, 3.0)))
    return cases


answer_drift = Exercise(
    id="04.2", title="TV and KL between answer distributions", function="my_answer_drift",
    reference=_answer_drift, cases=_answer_cases,
    hint="renormalise each list first: log_softmax(logp) (not exp then divide: exp(−800) is 0 and 0/0 is "
         "NaN); with p, q the two distributions TV = ½·Σ|p − q| and KL = Σ p·(log p − log q); return (TV, KL) "
         "as two numbers")
