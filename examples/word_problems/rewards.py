"""Two reward functions for the word problems, one in each signature minigrpo reads.

    minigrpo train ... --reward-fn examples/word_problems/rewards.py:exact \\
                       --reward-fn examples/word_problems/rewards.py:close=0.2

======================================================  ================================================
``exact``: batched, TRL's form                          ``close``: one completion at a time
======================================================  ================================================
``exact(prompts, completions, answer, **kwargs)``       ``close(prompt, completion, answer)``
called once per step with every completion (P·G)        called once per completion
``answer``: a list, one value per completion            ``answer``: this row's value
returns a list of floats (None: does not apply)         returns a float, or None (does not apply)
======================================================  ================================================

The parameter names choose the form: ``completions`` (plural) is batched, ``completion`` is one at a
time. Any other name, like ``answer``, is a column of the data; ``**kwargs`` receives all of them. A
function written for TRL's ``GRPOTrainer(reward_funcs=[...])`` works here unchanged.

``exact`` says right or wrong. ``close`` gives partial credit, so a group of completions that are all
wrong still tells GRPO which ones were nearer: 0 for the answer, −0.1 per unit off down to −1 (ten or
more off), and None (not applicable: left out of the baseline, not scored as 0) for a completion that
is not a number. The floor matters: without it one rambling completion ("12121") scores −1212 and
sets its group's baseline on its own.
"""
from __future__ import annotations

import re


def exact(prompts, completions, answer, **kwargs) -> list[float]:
    """1.0 where the completion is the answer (spaces around it ignored), else 0.0."""
    return [float(c.strip() == str(a).strip()) for c, a in zip(completions, answer)]


def close(prompt, completion, answer) -> float | None:
    """−|completion − answer| / 10, at least −1; None when the completion is not a whole number."""
    if not re.fullmatch(r"-?\d+", completion.strip()):
        return None
    return -min(abs(int(completion) - int(answer)), 10) / 10
