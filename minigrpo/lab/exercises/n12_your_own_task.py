"""Exercises of notebooks/12_your_own_task.ipynb: an exact-answer reward of your own in TRL's batched form, reading
the data's ``answer`` column, and the SFT loss that makes the anchor."""
from __future__ import annotations

import torch

from minigrpo.core.masks import masked_mean
from minigrpo.lab.exercises import Exercise
from minigrpo.lm.data import Row
from minigrpo.rewards.checks import exact_answer
from minigrpo.rewards.compose import Completions

NOTEBOOK = "12_your_own_task.ipynb"


def _exact(prompts, completions, answer):
    """The package's ``correct`` check (``checks.exact_answer``, which reads the row's ``answer`` column with
    ``data.answer_text``), one completion per row, as a list of floats."""
    batch = Completions(None, None, None, list(prompts), [[c] for c in completions], None, None,
                        rows=[Row(p, {"answer": a}) for p, a in zip(prompts, answer)])
    return exact_answer().score(batch)[:, 0].tolist()


def _exact_cases(gen: torch.Generator) -> list[tuple]:
    prompt = "Ann has 3 bags of 4 pens. How many?"
    cases = [([prompt] * 5, ["12", "7", "13", "twelve", "1212"], ["12"] * 5),         # the notebook's tries
             (["Tom has 9 apples and gives 4 away. How many are left?"] * 4,
              ["5", " 5", "5\n", "4"], ["5", "5 ", "5", "5"]),                            # spaces around either
             ([prompt] * 3, ["12", "12.0", "-12"], [12, 12.0, 12.0]),                    # int, and float from a CSV
             (["How much is half of 5?"] * 2, ["2.5", "2"], [2.5, 2.5]),
             (["What is 3 minus 8?"] * 2, ["-5", "5"], [-5, "-5"])]
    nums = torch.randint(0, 30, (8,), generator=gen).tolist()
    said = [str(n + int(d)) for n, d in zip(nums, torch.randint(-1, 2, (8,), generator=gen))]   # right or off by 1
    cases.append(([f"What is {n}?" for n in nums], said, [str(n) for n in nums]))
    return cases


exact = Exercise(
    id="12.1", title="an exact-answer reward in TRL's batched form", function="my_exact",
    reference=_exact, cases=_exact_cases,
    hint="one float per completion: 1.0 where completion.strip() equals the answer as text, else 0.0; the answer "
         "column may hold a string with spaces, an int, or a whole number read as a float (a CSV column with a "
         "gap reads 12 as 12.0, and str(12.0) is '12.0', not '12'): write such a float as str(int(a))")


def _sft_cases(gen: torch.Generator) -> list[tuple]:
    cases = []
    for P, T, lengths in [(4, 5, [5, 2, 3, 1]), (3, 4, [4, 4, 4]), (1, 3, [2])]:
        logp = torch.log_softmax(torch.randn(P, 1, T, 9, generator=gen), -1)[..., 0]     # (P, 1, T) log π(target)
        mask = (torch.arange(T) < torch.tensor(lengths)[:, None])[:, None, :]              # answer + EOS, then pad
        logp = torch.where(mask, logp, torch.full_like(logp, -50.0))                      # junk on the padding
        cases.append((logp, mask))
    return cases


sft_loss = Exercise(
    id="12.2", title="the SFT loss", function="my_sft_loss",
    reference=lambda logp, mask: -masked_mean(logp, mask), cases=_sft_cases,
    hint="L = −(Σ over answer and EOS tokens of log π) / (number of those tokens), a 0-d tensor: one mean over "
         "every real token of the batch (not the mean of per-row means), the padding (mask False) left out, "
         "and the minus sign: it is a loss to minimise")
