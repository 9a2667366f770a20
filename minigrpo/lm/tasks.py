"""Synthetic tasks with verifiable answers, for training language models from scratch on a CPU.

A task makes ``Problem`` s (a prompt text and its answer), splits them into train and test by a
fixed hash of the prompt (so the held-out prompts never appear in training, whatever the seed), and
scores a completion text. Because the answer is a function of the prompt (``solve``), a reward
needs nothing but the prompt and completion ids — the same ``reward_fn(prompts, completions)``
signature the bandit uses.

==============  ==========================  =================================================
task            prompt → answer             what is hard
==============  ==========================  =================================================
``addition``    ``"47+85="`` → ``"132"``     carries, read left to right (digits=2 by default)
``chain``       ``"7+5-3+8="`` → ``"12,9,17"``  several steps, each a running total
==============  ==========================  =================================================

Every task subclasses ``Task``. Two abilities only some tasks have are written down as Protocols, so
code that needs one asks ``isinstance(task, TaskWithSteps)`` rather than probing for a method:
``TaskWithSteps`` (a chain of checkable running totals, for step rewards) and
``TaskWithCarelessAnswers`` (a teacher's plausible slip, for the anchor's SFT data and for wrong
answers to judge).
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from minigrpo.core.validate import refuse


@dataclass(frozen=True)
class Problem:
    prompt: str
    answer: str


def in_test_split(prompt: str, test_fraction: float) -> bool:
    """A fixed, seed-independent split: a prompt is held out when its CRC32 falls in the first
    ``test_fraction`` of the hash range."""
    return zlib.crc32(prompt.encode()) < test_fraction * 2 ** 32


@runtime_checkable
class TaskWithSteps(Protocol):
    """A task whose answer is a chain of steps, each checkable on its own (``checks.step_checks``)."""

    def steps(self, prompt: str) -> list[int]:
        """The right value of each step of the answer to ``prompt``, in order."""
        ...


@runtime_checkable
class TaskWithCarelessAnswers(Protocol):
    """A task with a characteristic wrong answer: what a careless teacher writes (``sft.SFTConfig.careless``)."""

    def careless_answer(self, prompt: str) -> str:
        """A plausible wrong answer to ``prompt`` (right when the slip does not apply)."""
        ...


class Task:
    """Base: subclasses define ``alphabet``, ``max_prompt_len``, ``max_answer_len``, ``draw`` and ``solve``;
    some also have ``steps`` (``TaskWithSteps``) or ``careless_answer`` (``TaskWithCarelessAnswers``)."""

    name = "task"
    answer_pattern = re.compile(r".*")
    test_fraction = 0.1
    sft_careless = 0.0        # fraction of careless teacher answers in the tiny anchor's SFT data

    def draw(self, generator: torch.Generator) -> str:
        raise NotImplementedError

    def solve(self, prompt: str) -> str:
        raise NotImplementedError

    def problem(self, prompt: str) -> Problem:
        return Problem(prompt, self.solve(prompt))

    def split_key(self, prompt: str) -> str:
        """The text whose hash decides the prompt's split (the prompt itself, for most tasks)."""
        return prompt

    def sample(self, n: int, split: str = "train", generator: torch.Generator | None = None) -> list[Problem]:
        """n problems from ``split`` ('train' or 'test'), drawn with ``generator``."""
        if split not in ("train", "test"):
            raise ValueError(f"split={split!r} is not allowed; use 'train' or 'test'")
        if not (isinstance(n, int) and n >= 1):
            raise ValueError(f"{self.name}: n={n!r} problems requested; must be an integer ≥ 1")
        want_test = split == "test"
        out = []
        for _ in range(1000 * n):
            prompt = self.draw(generator)
            if in_test_split(self.split_key(prompt), self.test_fraction) == want_test:
                out.append(self.problem(prompt))
                if len(out) == n:
                    return out
        raise ValueError(f"{self.name}: could not draw {n} {split} problems; the task is too small for the split")

    def test_set(self, n: int = 200, seed: int = 1234) -> list[Problem]:
        """The fixed held-out set used for accuracy: the same n problems on every run."""
        return self.sample(n, "test", torch.Generator().manual_seed(seed))

    def dataset(self, n: int, split: str = "train", seed: int = 0):
        """``n`` problems of ``split`` as a ``datasets.Dataset`` with ``prompt`` and ``answer`` columns: a
        task in the form of your data (``lm/data.py``), e.g. to write out with ``.to_json("add.jsonl")``."""
        import datasets

        problems = self.sample(n, split, torch.Generator().manual_seed(seed))
        return datasets.Dataset.from_list([{"prompt": p.prompt, "answer": p.answer} for p in problems])

    def score(self, prompt: str, completion: str, ended: bool = True) -> dict[str, float]:
        """Named reward components of one completion: ``correct`` (exact answer) and ``format`` (the
        answer's shape, ended by EOS)."""
        return {"correct": float(completion == self.solve(prompt)),
                "format": float(ended and self.answer_pattern.fullmatch(completion) is not None)}

    def sft_text(self, problem: Problem) -> tuple[str, str]:
        """(prompt, target) for supervised fine-tuning: the target is the answer (EOS added by the trainer)."""
        return problem.prompt, problem.answer


def _randint(lo: int, hi: int, generator) -> int:
    return int(torch.randint(lo, hi, (1,), generator=generator))


class AdditionTask(Task):
    """a + b for non-negative integers of up to ``digits`` digits: ``"347+85="`` → ``"432"``."""

    name = "addition"
    answer_pattern = re.compile(r"0|[1-9][0-9]*")
    alphabet = "0123456789+="

    sft_careless = 0.6        # the anchor forgets carries often: the flaw GRPO's exact-answer reward fixes

    def __init__(self, digits: int = 2):
        if not (isinstance(digits, int) and 1 <= digits <= 9):
            raise ValueError(f"addition: digits={digits!r} must be an integer from 1 to 9")
        self.digits = digits
        self.max_prompt_len = 2 * digits + 2
        self.max_answer_len = digits + 1

    def draw(self, generator) -> str:
        n = 10 ** self.digits
        return f"{_randint(0, n, generator)}+{_randint(0, n, generator)}="

    def solve(self, prompt: str) -> str:
        m = re.fullmatch(r"(\d+)\+(\d+)=", prompt)
        if m is None:
            raise ValueError(f"addition: prompt {prompt!r} is not of the form 'a+b='")
        return str(int(m.group(1)) + int(m.group(2)))

    def careless_answer(self, prompt: str) -> str:
        """The classic slip: add column by column and forget every carry (the leftmost column is written
        whole). 47+85 → "122" instead of "132"; a sum with no carries comes out right."""
        a, b = (s.zfill(self.digits + 1) for s in prompt[:-1].split("+"))
        cols = [int(x) + int(y) for x, y in zip(a, b)]                      # most significant first
        first = next((i for i, c in enumerate(cols) if c), len(cols) - 1)
        return str(cols[first]) + "".join(str(c % 10) for c in cols[first + 1:])


class ChainTask(Task):
    """A chain of ``n_ops`` additions/subtractions of single digits, answered with every running total:
    ``"7+5-3+8="`` → ``"12,9,17"``. Each total is a step that can be checked on its own."""

    name = "chain"
    alphabet = "0123456789+-=,"
    sft_careless = 0.5        # the anchor slips on single steps: where a per-step reward gives precise credit

    def __init__(self, n_ops: int = 3):
        if not (isinstance(n_ops, int) and 1 <= n_ops <= 8):
            raise ValueError(f"chain: n_ops={n_ops!r} must be an integer from 1 to 8")
        self.n_ops = n_ops
        self.answer_pattern = re.compile(r"-?\d+(,-?\d+){%d}" % (n_ops - 1))
        self.max_prompt_len = 2 * n_ops + 2
        self.max_answer_len = 4 * n_ops - 1       # each total has at most 2 digits and a sign, commas between

    def draw(self, generator) -> str:
        parts = [str(_randint(0, 10, generator))]
        for _ in range(self.n_ops):
            parts.append("+-"[_randint(0, 2, generator)] + str(_randint(0, 10, generator)))
        return "".join(parts) + "="

    def steps(self, prompt: str) -> list[int]:
        m = re.fullmatch(r"(\d)((?:[+-]\d)+)=", prompt)
        if m is None:
            raise ValueError(f"chain: prompt {prompt!r} is not of the form 'd±d±…='")
        total, out = int(m.group(1)), []
        for op, d in re.findall(r"([+-])(\d)", m.group(2)):
            total += int(d) if op == "+" else -int(d)
            out.append(total)
        return out

    def solve(self, prompt: str) -> str:
        return ",".join(str(v) for v in self.steps(prompt))

    def careless_answer(self, prompt: str) -> str:
        """A teacher who slips on single steps but keeps the true running total: a step that carries
        past 9 is written without its ten (7+5 → "2"), and a negative total without its sign (3−8 → "5").
        "7+5-3+8=" → "2,9,7" (right: "12,9,17"); steps with no carry or sign come out right."""
        out, prev = [], int(prompt[0])
        for v in self.steps(prompt):
            out.append(v - 10 if prev < 10 <= v else abs(v))
            prev = v
        return ",".join(str(v) for v in out)


class JudgeTask(Task):
    """Judge another task's answers: ``"47+85=132?"`` → ``"Y"`` (right) or ``"N"`` (wrong). Half the
    prompts carry the right answer, half a wrong one (near misses, the careless answer, malformed
    ones). SFT on it makes a tiny LM judge (``judge.LMJudge``). A base prompt is in the same split
    here as in the base task, so a judge never saw the held-out problems."""

    name = "judge"
    max_answer_len = 1

    def __init__(self, base: str = "addition", **base_args):
        if base == "judge" or base not in TASKS:
            raise ValueError(f"judge: base={base!r} is not allowed; choose one of {sorted(set(TASKS) - {'judge'})}")
        self.base = make_task(base, **base_args)
        self.alphabet = self.base.alphabet + "?YN"
        self.max_prompt_len = self.base.max_prompt_len + self.base.max_answer_len + 2
        self.answer_pattern = re.compile(r"[YN]")
        self.test_fraction = self.base.test_fraction

    def split_key(self, prompt: str) -> str:
        return prompt[:prompt.index("=") + 1]

    def draw(self, generator) -> str:
        base_prompt = self.base.draw(generator)
        truth = self.base.solve(base_prompt)
        if _randint(0, 2, generator) == 0:
            return f"{base_prompt}{truth}?"
        wrong = [c for c in candidate_answers(self.base, base_prompt, generator) if c != truth]
        return f"{base_prompt}{wrong[_randint(0, len(wrong), generator)]}?"

    def solve(self, prompt: str) -> str:
        base_prompt, answer = prompt[:prompt.index("=") + 1], prompt[prompt.index("=") + 1:-1]
        return "Y" if answer == self.base.solve(base_prompt) else "N"


TASKS = {"addition": AdditionTask, "chain": ChainTask, "judge": JudgeTask}


def make_task(name: str, **kwargs) -> Task:
    if name not in TASKS:
        hint = "; for a file of your own prompts give it as data (--data)" if "." in name or "/" in name else ""
        raise ValueError(f"task={name!r} is not allowed; choose one of {sorted(TASKS)}{hint}")
    return TASKS[name](**kwargs)


def candidate_answers(task, prompt: str, generator: torch.Generator) -> list[str]:
    """Plausible answers to rank for a numeric task: the right one, the careless one, misses by ±10
    and +100, a random number, a dropped or an extra digit, and an empty answer."""
    truth = task.solve(prompt)
    v = int(truth)
    r = lambda n: int(torch.randint(0, n, (1,), generator=generator))
    out = [truth, str(v + 10), str(max(v - 10, 0)), str(v + 100), str(r(10 ** len(truth))),
           truth[:-1] or "0", truth + str(r(10)), ""]
    if isinstance(task, TaskWithCarelessAnswers):
        out.append(task.careless_answer(prompt))
    return out


def checked_task(owner: str, task, task_args):
    """``tasks.make_task(task, **task_args)``, with every problem reported as a ValueError naming
    ``<owner>.task`` or ``<owner>.task_args``, its value and what is allowed."""
    def fail(name, value, allowed):
        refuse(owner, name, value, allowed)

    if not isinstance(task, str):
        fail("task", task, "must be a task name, e.g. 'addition' or 'chain'")
    if not (isinstance(task_args, dict) and all(not isinstance(v, bool) for v in task_args.values())):
        fail("task_args", task_args, "must be a mapping of task settings, e.g. {'digits': 2}")
    try:
        return make_task(task, **task_args)          # a ValueError on an unknown task or bad values
    except TypeError as e:                           # a setting the task does not have
        fail("task_args", task_args, f"task {task!r} does not take these settings ({e})")
