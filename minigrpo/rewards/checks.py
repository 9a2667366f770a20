"""Programmatic rewards: checks a program can make of a completion, as ``compose.RewardSet`` components.

==========================  =================================================================  ==========
component                   value per completion                                               kind
==========================  =================================================================  ==========
``exact_answer(task)``      1 if the text is exactly the task's answer, else 0                 outcome
``answer_format(task)``     1 if it ended with EOS and has the answer's shape, else 0          outcome
``length_penalty(n, c)``    −c·max(0, tokens − n): nothing up to n tokens, then c per token    outcome
``forbidden_strings(ws)``   −1 if any forbidden string occurs in the text, else 0              outcome
``step_checks(task)``       per step: 1 if the step's value is right, else 0 (multi-step tasks) stepwise
==========================  =================================================================  ==========

Each is a ``protocols.RewardComponent``, an object with ``score(batch)`` (a ``compose.Completions``) so it
can read token counts and whether the completion ended, and a ``name`` (``protocols.Named``).
"""
from __future__ import annotations

import torch
from torch import Tensor

from minigrpo.rewards.compose import Completions
from minigrpo.core.scored import StepRewards
from minigrpo.lm.data import answer_text
from minigrpo.lm.tasks import Task, TaskWithSteps


class exact_answer:
    """1 if the completion equals the answer, whitespace around either ignored (a BPE model writes
    ``" 7"`` for ``7``), else 0. The answer is the row's ``answer`` column when the prompt came with
    one (your data, or a task's rows), else ``task.solve(prompt)``."""

    def __init__(self, task=None):
        self.task, self.name = task, "correct"

    def answer(self, batch: Completions, p: int) -> str | None:
        """Prompt p's answer as text (None: the row has none, so its completions are not judged). A
        whole number read as a float (a CSV column with a gap) is written without its ".0"."""
        columns = batch.row_columns(p)
        if "answer" in columns:
            return answer_text(columns["answer"])
        if self.task is None:
            raise ValueError(f"the 'correct' check needs an 'answer' column {batch.where(p, None)}; the data has "
                             f"{sorted(columns) or 'no other columns'}")
        return self.task.solve(batch.prompts[p])

    def score(self, batch: Completions) -> Tensor | list:
        """(P, G): a tensor, or a list with None for the completions of a row without an answer."""
        answers = [self.answer(batch, p) for p in range(len(batch.texts))]
        out = [[None if a is None else float(t.strip() == a) for t in row] for a, row in zip(answers, batch.texts)]
        return out if None in answers else torch.tensor(out)


class answer_format:
    """1 if the completion ended with EOS and matches the task's answer pattern (digits, commas…)."""

    def __init__(self, task):
        self.task, self.name = task, "format"

    def score(self, batch: Completions) -> Tensor:
        ok = [[self.task.answer_pattern.fullmatch(t) is not None for t in row] for row in batch.texts]
        return (torch.tensor(ok, dtype=torch.bool) & batch.ended).to(torch.get_default_dtype())


class length_penalty:
    """r = −per_token·max(0, L − max_tokens), L the completion's tokens without the EOS; a completion
    cut off at the token limit before its EOS counts every token it has."""

    def __init__(self, max_tokens: int, per_token: float = 0.1):
        if not (isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens >= 0):
            raise ValueError(f"length_penalty: max_tokens={max_tokens!r}; must be an integer ≥ 0")
        if not (isinstance(per_token, (int, float)) and per_token >= 0 and per_token != float("inf")):
            raise ValueError(f"length_penalty: per_token={per_token!r}; must be a finite number ≥ 0")
        self.max_tokens, self.per_token, self.name = max_tokens, float(per_token), "length"

    def score(self, batch: Completions) -> Tensor:
        over = (batch.lengths() - self.max_tokens).clamp_min(0)
        return -self.per_token * over.to(torch.get_default_dtype())


class forbidden_strings:
    """A simple safety check: −1 if the completion contains any of ``words`` (case-sensitive), else 0.
    (Real safety rewards are classifiers; the plumbing is the same.)"""

    def __init__(self, words):
        if isinstance(words, str) or not words or not all(isinstance(w, str) and w for w in words):
            raise ValueError(f"forbidden_strings: words={words!r}; give a non-empty list of non-empty strings")
        self.words, self.name = tuple(words), "safety"

    def score(self, batch: Completions) -> Tensor:
        return torch.tensor([[-float(any(w in t for w in self.words)) for t in row] for row in batch.texts])


class step_checks:
    """Process reward for a multi-step task (``task.steps(prompt)`` gives each step's right value): the
    completion is cut into steps at ``separators``; step s earns 1 if it states the s-th value, else 0.
    Steps beyond the expected count earn ``extra`` (default −1: writing more steps is wrong); a missing
    step counts as a wrong one (0), placed at the completion's last token. Its reward reaches every
    token up to the step's end (``advantages.step_advantages``)."""

    def __init__(self, task: TaskWithSteps, separators: str = ",", extra: float = -1.0):
        if not isinstance(task, TaskWithSteps):
            name = task.name if isinstance(task, Task) else task
            raise ValueError(f"step_checks: task {name!r} has no steps(); stepwise "
                             "checks need a multi-step task such as 'chain'")
        self.task, self.separators, self.extra, self.name = task, separators, float(extra), "steps"

    def score(self, batch: Completions) -> StepRewards:
        P, G, T = batch.shape
        cuts = [[batch.steps(p, g, self.separators) for g in range(G)] for p in range(P)]
        truths = [[str(v) for v in self.task.steps(prompt)] for prompt in batch.prompts]
        S = max(1, max(len(c) for row in cuts for c in row), max(len(t) for t in truths))
        values, ends = torch.zeros(P, G, S), torch.zeros(P, G, S, dtype=torch.long)
        present = torch.zeros(P, G, S, dtype=torch.bool)
        last = (batch.mask.sum(-1) - 1).clamp_min(0)                                   # (P,G)
        for p in range(P):
            truth = truths[p]
            for g in range(G):
                cut = cuts[p][g]
                for s in range(max(len(cut), len(truth))):
                    end, text = cut[s] if s < len(cut) else (int(last[p, g]), None)
                    ok = s < len(truth) and text == truth[s]
                    values[p, g, s] = 1.0 if ok else (self.extra if s >= len(truth) else 0.0)
                    ends[p, g, s], present[p, g, s] = end, True
        return StepRewards(values, ends, present)


TASK_COMPONENTS = ("correct", "format", "length", "safety", "steps")


def task_reward(task, tokenizer, weights: dict[str, float] | None = None, *, combine: str = "sum",
                forbidden=None, max_tokens: int | None = None, length_per_token: float = 0.1):
    """A ``RewardSet`` of the checks above for a task, weighted by ``weights`` {component: weight}
    (default {"correct": 1}). Components: ``correct``, ``format``, ``length`` (over ``max_tokens``,
    default the task's longest answer), ``safety`` (needs ``forbidden``), ``steps`` (multi-step tasks).
    ``correct`` and ``format`` are always scored and logged, with weight 0 unless weighted."""
    from minigrpo.rewards.compose import RewardSet

    weights = dict(weights or {"correct": 1.0})
    weights = {"correct": 0.0, "format": 0.0, **weights}
    unknown = sorted(set(weights) - set(TASK_COMPONENTS))
    if unknown:
        raise ValueError(f"reward weights name {unknown}, which the {task.name} task does not score; its "
                         f"components are {list(TASK_COMPONENTS)}")
    makers = {"correct": lambda: exact_answer(task), "format": lambda: answer_format(task),
              "length": lambda: length_penalty(task.max_answer_len if max_tokens is None else max_tokens,
                                               length_per_token),
              "safety": lambda: forbidden_strings(forbidden) if forbidden else _fail_forbidden(forbidden),
              "steps": lambda: step_checks(task)}
    parts = {k: (makers[k](), w) for k, w in weights.items()}
    return RewardSet(tokenizer, parts, combine=combine, name=f"{task.name}_reward")


def _fail_forbidden(forbidden):
    raise ValueError(f"reward weight 'safety' needs forbidden strings (forbidden={forbidden!r}); give a list "
                     "such as ['666']")


def TaskReward(task, tokenizer, weights: dict[str, float] | None = None, **kwargs):
    """The task's programmatic reward (see ``checks.task_reward``): r = Σ weight·component, every
    component logged. Kept here, beside the tasks, as the name the notebooks use."""
    return task_reward(task, tokenizer, weights, **kwargs)
