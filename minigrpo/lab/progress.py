"""A progress line under a notebook cell, for the cells that train (issue 15: no silent cell over ~10 s).

``CellProgress`` is a listener: hand it to ``train_lm(on_step=…)``, ``build_anchor(on_step=…)`` or ``sft(on_step=…)``
and it redraws one line in place, e.g. ``GRPO addition · step 40/120 · 12 s, about 24 s left · reward 0.63 ·
kl 0.012``. It is a display update, not a widget (tqdm's notebook bar is one): no comm messages between kernel and
front end, nothing to render when the notebook is read without a kernel, and the last line stays in the saved
notebook and on the course site. Redraws are at most every ``every`` seconds, so a fast loop sends few messages.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from IPython.display import display

__all__ = ["CellProgress", "progress_per_run"]

KEYS = ("reward", "kl", "loss", "test_accuracy")       # shown when a record has them
SHORT = {"test_accuracy": "acc"}


class CellProgress:
    """One line, redrawn in place: label, step/total, elapsed and estimated seconds left, the latest values.

    Call it with a training record (a dict with ``step``, as ``train_lm`` gives ``on_step``) or as
    ``progress(t, loss)`` with t counted from 0 (as ``sft`` and ``build_anchor`` give ``on_step``). ``show``
    puts the text somewhere: by default a display handle under the running cell; tests pass a list's ``append``."""

    def __init__(self, total: int, label: str, *, keys: Sequence[str] = KEYS, every: float = 0.5,
                 show: Callable[[str], None] | None = None, clock: Callable[[], float] = time.perf_counter):
        if total < 1:
            raise ValueError(f"CellProgress: total={total!r} must be a positive number of steps")
        self.total, self.label, self.keys, self.every = total, label, tuple(keys), every
        self.clock = clock
        self.start = clock()
        self.shown_at: float | None = None
        self.step, self.first_step = 0, None
        self.values: dict[str, float] = {}
        self.text = ""
        if show is None:                     # plain text (not a str's repr, which would show quotes)
            handle = display({"text/plain": self.line()}, raw=True, display_id=True)
            show = (lambda text: handle.update({"text/plain": text}, raw=True)) if handle is not None else print
        self.show = show

    def __call__(self, record: dict | int, loss: float | None = None) -> None:
        if isinstance(record, dict):
            step = int(record.get("step", self.step + 1))
            self.values |= {k: float(record[k]) for k in self.keys if isinstance(record.get(k), (int, float))}
        else:                                  # sft's on_step(t, loss): t = 0, 1, … is the step just taken
            step = int(record) + 1
            if loss is not None:
                self.values["loss"] = float(loss)
        if self.first_step is None:
            self.first_step = max(0, step - 1)  # a resumed run starts past 0: its rate counts only this session's steps
        self.step = step
        now = self.clock()
        if step >= self.total or self.shown_at is None or now - self.shown_at >= self.every:
            self.shown_at = now
            self.text = self.line()
            self.show(self.text)

    def line(self) -> str:
        """The current text: ``label · step s/T · elapsed, about N s left · key value …``."""
        elapsed = self.clock() - self.start
        parts = [self.label, f"step {self.step}/{self.total}"]
        done = self.step - (self.first_step or 0)
        if self.step >= self.total:
            parts.append(f"done in {elapsed:.0f} s")
        elif done > 0:
            left = elapsed / done * (self.total - self.step)
            parts.append(f"{elapsed:.0f} s, about {left:.0f} s left")
        else:
            parts.append("starting")
        parts += [f"{SHORT.get(k, k)} {self.values[k]:.3g}" for k in self.keys if k in self.values]
        return " · ".join(parts)


def progress_per_run(total: int, prefix: str = "") -> Callable[[str, dict], None]:
    """A listener for experiments that train several runs (``runs.experiments``: ``on_step(label, record)``): one
    ``CellProgress`` line per run, made when its first record arrives."""
    lines: dict[str, CellProgress] = {}

    def on_step(label: str, record: dict) -> None:
        if label not in lines:
            lines[label] = CellProgress(total, f"{prefix}{label}")
        lines[label](record)
    return on_step
