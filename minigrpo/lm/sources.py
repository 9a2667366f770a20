"""Where a run's prompts come from: a built-in task or your data, as rows of one form (``data.Row``).

* ``load_train_test``: your data's training rows and held-out rows (from ``test_data``, a DatasetDict's
  test split, or a fixed fraction by prompt hash).
* ``TaskPrompts``: a task's problems drawn as rows with an ``answer`` column.
* ``DataPrompts``: your rows in shuffled passes (each row once per epoch); the order is a function of
  the seed and the step alone, so a resumed run draws the rows an uninterrupted one would.
"""
from __future__ import annotations

import os
from typing import Protocol, runtime_checkable

import torch

from minigrpo.lm.data import PromptData, Row, read_dataset
from minigrpo.lm.tasks import Task


def load_train_test(data: str, test_data: str | None = None, test_fraction: float = 0.1,
                    prompt_column: str = "prompt", config: str | None = None) -> tuple[PromptData, PromptData | None]:
    """(training rows, held-out rows or None) for a run: the held-out rows come from ``test_data``,
    else from the "test" split of a save_to_disk ``DatasetDict``, else the fixed ``test_fraction`` of
    ``data`` by prompt hash (none when it is 0). ``prompt_column`` names the prompts' column in both;
    ``config`` is a hub dataset's configuration (``data`` only)."""
    rows = lambda ds, source: PromptData.from_dataset(ds, source, prompt_column)
    ds = read_dataset(os.fspath(data), config=config)
    if isinstance(ds, dict):                                 # a DatasetDict: its train split, and its test split
        if "train" not in ds:
            raise ValueError(f"data {data!r} holds the splits {sorted(ds)}; it needs a 'train' split")
        train = rows(ds["train"], os.fspath(data))
        if test_data is None and "test" in ds:
            return train, rows(ds["test"], f"{data} (test split)")
    else:
        train = rows(ds, os.fspath(data))
    if test_data is not None:
        test = read_dataset(os.fspath(test_data))
        if isinstance(test, dict):
            test = test["test"] if "test" in test else test["train"]
        return train, rows(test, os.fspath(test_data))
    if not test_fraction:
        return train, None
    train, test = train.split(test_fraction)
    return train, (test if test.rows else None)


# --- prompt sources: what a run draws its prompts from ---------------------------------------------

@runtime_checkable
class PromptSource(Protocol):
    """Where a run's prompts come from: a built-in task (``TaskPrompts``) or your data (``DataPrompts``)."""

    name: str

    def train_rows(self, step: int, n: int, generator: torch.Generator) -> list[Row]:
        """The ``n`` training rows of step ``step`` (1, 2, …)."""
        ...

    def test_rows(self, n: int) -> list[Row]:
        """The fixed held-out rows (at most ``n``), the same on every run."""
        ...


class TaskPrompts:
    """A built-in task as a prompt source: each problem a row with an ``answer`` column."""

    columns = ["answer"]

    def __init__(self, task: Task):
        self.task, self.name, self.test_name = task, task.name, task.name

    def longest_answer(self, tokenizer) -> int:
        return self.task.max_answer_len

    def check(self, tokenizer, max_new_tokens: int, context: int | None) -> None:
        """Refuse a model whose context cannot hold the task's longest prompt and max_new_tokens."""
        need = self.task.max_prompt_len + max_new_tokens
        if context is not None and need > context:
            raise ValueError(f"task {self.name!r}: a prompt of up to {self.task.max_prompt_len} characters + "
                             f"max_new_tokens={max_new_tokens} does not fit the model's context of {context} tokens")

    def train_rows(self, step: int, n: int, generator: torch.Generator) -> list[Row]:
        return [Row(p.prompt, {"answer": p.answer}) for p in self.task.sample(n, "train", generator)]

    def test_rows(self, n: int) -> list[Row]:
        return [Row(p.prompt, {"answer": p.answer}) for p in self.task.test_set(n)]


class DataPrompts:
    """Your data as a prompt source: a shuffled pass over the training rows per epoch (each row once
    per epoch), the order a function of ``seed`` and the step alone, so a resumed run continues
    exactly; held-out rows in their file order."""

    def __init__(self, train: PromptData, test: PromptData | None, seed: int = 0):
        self.train, self.test, self.seed = train, test, seed
        self.name, self.columns = train.source, train.columns
        self.test_name = None if test is None else test.source
        self._orders: dict[int, list[int]] = {}

    def longest_answer(self, tokenizer) -> int:
        """The longest ``answer`` (or else ``completion``) in tokens, 0 when the data has neither."""
        for column in ("answer", "completion"):
            if column in self.columns:
                return self.train.max_length(tokenizer, column)
        return 0

    def check(self, tokenizer, max_new_tokens: int, context: int | None) -> None:
        """Every prompt, held-out ones too, encodes to tokens that fit the context with max_new_tokens."""
        for data in (self.train, self.test):
            if data is not None:
                data.check_lengths(tokenizer, max_new_tokens, context)

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2 ** 63)
            self._orders = {epoch: torch.randperm(len(self.train), generator=g).tolist()}
        return self._orders[epoch]

    def train_rows(self, step: int, n: int, generator: torch.Generator | None = None) -> list[Row]:
        N = len(self.train)
        start = (step - 1) * n
        out = []
        for i in range(start, start + n):
            out.append(self.train.rows[self._order(i // N)[i % N]])
        return out

    def test_rows(self, n: int) -> list[Row]:
        return [] if self.test is None else self.test.rows[:n]
