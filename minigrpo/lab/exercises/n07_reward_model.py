"""Exercises of notebooks/07_reward_model.ipynb: the Bradley–Terry loss, the pair accuracy, and an LM judge's
expected verdict."""
from __future__ import annotations

import torch

from minigrpo.lab.exercises import Exercise
from minigrpo.rewards.judge import expected_verdict as _expected_verdict
from minigrpo.rewards.reward_model import bradley_terry_loss as _bradley_terry_loss
from minigrpo.rewards.reward_model import pair_accuracy as _pair_accuracy

NOTEBOOK = "07_reward_model.ipynb"


def _pairs(gen: torch.Generator) -> list[tuple]:
    r_c, r_r = torch.randn(16, generator=gen), torch.randn(16, generator=gen)
    ties = torch.randint(0, 3, (10,), generator=gen).float()
    return [(r_c, r_r),                                                         # N = 16 random scores
            (torch.tensor([2.0, 0.5, -1.0]), torch.tensor([1.0, 1.0, -3.0])),   # section 2's three pairs
            (ties, torch.randint(0, 3, (10,), generator=gen).float()),          # many ties: r_c = r_r
            (torch.tensor([60.0, -60.0, 0.0]), torch.tensor([-60.0, 60.0, 0.0])),   # margins of ±120
            (torch.randn(1, generator=gen), torch.randn(1, generator=gen))]     # one pair


bradley_terry_loss = Exercise(
    id="07.1", title="the Bradley–Terry loss", function="my_bradley_terry_loss",
    reference=lambda r_c, r_r: _bradley_terry_loss(r_c, r_r), cases=_pairs,
    hint="L = −mean log σ(r_c − r_r), a 0-d tensor; σ(−120) is 0 in float32 and log 0 = −inf, so use "
         "torch.nn.functional.logsigmoid on the margin instead of log(sigmoid(…))")


pair_accuracy = Exercise(
    id="07.2", title="the pair accuracy", function="my_pair_accuracy",
    reference=lambda r_c, r_r: _pair_accuracy(r_c, r_r), cases=_pairs,
    hint="the fraction of pairs with r_c > r_r, as a float; a tie (r_c == r_r) counts as wrong: strictly greater")


def _judge_cases(gen: torch.Generator) -> list[tuple]:
    cases = []
    for N, V, verdicts, values in [(4, 12, [3, 7], [1.0, 0.0]),                 # a yes/no judge: r = p(Y)
                                   (6, 30, [5, 2], [1.0, 0.0]),                 # verdict ids not in order
                                   (3, 20, [11, 12, 13, 14, 15], [1.0, 2.0, 3.0, 4.0, 5.0]),   # a 1…5 grader
                                   (1, 8, [0, 1], [1.0, -1.0])]:
        logp_all = torch.log_softmax(3 * torch.randn(N, V, generator=gen), -1)   # (N, V) next-token log-probs
        cases.append((logp_all, torch.tensor(verdicts), torch.tensor(values)))
    return cases


judge_score = Exercise(
    id="07.3", title="an LM judge's expected verdict", function="my_judge_score",
    reference=_expected_verdict, cases=_judge_cases,
    hint="keep the verdict tokens' columns, logp_all[:, verdict_ids] (N, n_v), renormalise them over the verdicts "
         "only (log_softmax over the last dim, then exp; most of the probability sits on other tokens), and take "
         "Σ_v value_v·p(v) as a matrix-vector product with values")
