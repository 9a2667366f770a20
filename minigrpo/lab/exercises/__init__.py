"""Exercises: "fill in this function" cells, checked against the package's own reference on random inputs.

A notebook's exercise cell defines a function whose body is ``raise NotImplementedError`` and hands it to the
checker, one module per notebook (``minigrpo.lab.exercises.n01_bandit`` for ``01_bandit.ipynb``)::

    from minigrpo.lab.exercises import n01_bandit as ex

    def my_group_mean(R):
        # R: (P, G) total rewards -> A: (P, G) advantages
        raise NotImplementedError       # YOUR CODE HERE

    ex.group_mean.check(my_group_mean)

``check`` never raises, so a notebook with its exercises unsolved still runs top to bottom: it prints one verdict
(✓ matches the reference on N random inputs; ✗ not filled in yet; ✗ raised …; ✗ differs at input k, with the
input, the expected and the received values, and the exercise's hint) and returns whether it passed.

The solutions live apart, in the repository's ``solutions/<notebook>.py`` (same function names), not in the
notebooks; ``tests/test_exercises.py`` runs each solution, a stub and a wrong answer through every checker, and
checks that every notebook holds at least two exercises with their bodies left empty. The syllabus
(docs/syllabus.md) says which to assign.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Exercise", "Verdict", "same", "describe", "exercises_of"]


def same(got: Any, want: Any, atol: float = 1e-5, rtol: float = 1e-4) -> str | None:
    """None if ``got`` equals ``want`` (tensors and floats within the tolerances, NaN where NaN); else one line on
    the first difference. Recurses into tuples, lists, dicts and dataclasses."""
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"expected a tensor of shape {tuple(want.shape)}, got {type(got).__name__}"
        if got.shape != want.shape:
            return f"shape {tuple(got.shape)}, expected {tuple(want.shape)}"
        if want.dtype == torch.bool or not want.is_floating_point():
            if not torch.equal(got.to(want.dtype), want):
                bad = (got.to(want.dtype) != want).nonzero()[0].tolist()
                return f"differs at index {bad}: {got[tuple(bad)].item()} instead of {want[tuple(bad)].item()}"
            return None
        got = got.detach().to(want.dtype)
        want = want.detach()
        ok = torch.isclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
        if not bool(ok.all()):
            bad = (~ok).nonzero()[0].tolist()
            return (f"differs at index {bad}: {got[tuple(bad)].item():.6g} instead of {want[tuple(bad)].item():.6g} "
                    f"(largest gap {(got - want).abs().nan_to_num(math.inf).max().item():.3g})")
        return None
    if isinstance(want, bool) or want is None or isinstance(want, str):
        return None if got == want else f"{got!r} instead of {want!r}"
    if isinstance(want, (int, float)):
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if not isinstance(got, (int, float)):
            return f"expected a number, got {type(got).__name__}"
        if math.isnan(want) and math.isnan(got):
            return None
        return None if math.isclose(got, want, rel_tol=rtol, abs_tol=atol) else f"{got:.6g} instead of {want:.6g}"
    if dataclasses.is_dataclass(want) and not isinstance(want, type):
        want = {f.name: getattr(want, f.name) for f in dataclasses.fields(want)}
        got = ({f.name: getattr(got, f.name) for f in dataclasses.fields(got)}
               if dataclasses.is_dataclass(got) else got)
    if isinstance(want, Mapping):
        if not isinstance(got, Mapping) or set(got) != set(want):
            return f"expected keys {sorted(want)}, got {sorted(got) if isinstance(got, Mapping) else type(got).__name__}"
        for k in want:
            why = same(got[k], want[k], atol, rtol)
            if why:
                return f"[{k!r}]: {why}"
        return None
    if isinstance(want, Sequence):
        if not isinstance(got, Sequence) or isinstance(got, str) or len(got) != len(want):
            return f"expected {len(want)} values, got {len(got) if isinstance(got, Sequence) else type(got).__name__}"
        for i, (g, w) in enumerate(zip(got, want)):
            why = same(g, w, atol, rtol)
            if why:
                return f"item {i}: {why}"
        return None
    return None if got == want else f"{got!r} instead of {want!r}"


def describe(value: Any, width: int = 240) -> str:
    """A short text of an input or output for a failure message (tensors with their shape, cut at ``width``)."""
    if isinstance(value, torch.Tensor):
        flat = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in value.detach().reshape(-1)[:12].tolist()]
        more = " …" if value.numel() > 12 else ""
        text = f"tensor{tuple(value.shape)} [{', '.join(flat)}{more}]"
    elif isinstance(value, (tuple, list)):
        text = "(" + ", ".join(describe(v, width) for v in value) + ")"
    else:
        text = repr(value)
    return text if len(text) <= width else text[:width - 1] + "…"


def clone(value: Any) -> Any:
    """A deep copy of tensors in ``value``, so a candidate that writes into its input cannot spoil the comparison."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, tuple):
        return tuple(clone(v) for v in value)
    if isinstance(value, list):
        return [clone(v) for v in value]
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Exercise:
    """One "fill in this function" exercise.

    ``function`` is the name the notebook's cell defines (and ``solutions/<notebook>.py`` solves); ``reference`` is
    the package's implementation with the same signature; ``cases(gen)`` returns the inputs, each a tuple of
    positional arguments, drawn with ``gen`` (include the edge cases a learner gets wrong: ties, G = 2, padding);
    ``hint`` is printed on a wrong answer. ``compare(got, want)`` returns None or the first difference
    (default: :func:`same` with ``atol``).
    """
    id: str                                           # "01.1": notebook and number, as the syllabus lists it
    title: str
    function: str
    reference: Callable[..., Any]
    cases: Callable[[torch.Generator], list[tuple]]
    hint: str
    atol: float = 1e-5
    compare: Callable[[Any, Any], str | None] | None = None
    seed: int = 0
    notes: tuple[str, ...] = field(default=())       # extra lines printed after a pass (what to notice)

    def run(self, fn: Callable[..., Any]) -> tuple[bool, str]:
        """(passed, the verdict's text) of ``fn`` against the reference on every case."""
        cases = self.cases(torch.Generator().manual_seed(self.seed))
        head = f"exercise {self.id} ({self.title}, `{self.function}`)"
        for k, args in enumerate(cases):
            want = self.reference(*clone(args))
            try:
                got = fn(*clone(args))
            except NotImplementedError:
                return False, f"✗ {head}: not filled in yet: replace `raise NotImplementedError` with your code"
            except Exception as err:                  # the learner's bug: report it, never stop the notebook
                return False, (f"✗ {head} raised {type(err).__name__}: {err}\n    on input {k + 1}: "
                               f"{describe(args)}\n    hint: {self.hint}")
            why = (self.compare or (lambda g, w: same(g, w, self.atol)))(got, want)
            if why:
                return False, (f"✗ {head} differs from the reference on input {k + 1} of {len(cases)}: {why}\n"
                               f"    input: {describe(args)}\n    expected: {describe(want)}\n"
                               f"    got:      {describe(got)}\n    hint: {self.hint}")
        done = f"✓ {head} matches minigrpo's reference on {len(cases)} random inputs"
        return True, "\n".join([done, *self.notes])

    def check(self, fn: Callable[..., Any]) -> Verdict:
        """Print the verdict on ``fn``; return it (true when it passed). Never raises."""
        passed, text = self.run(fn)
        print(text)
        return Verdict(passed, text)


@dataclass(frozen=True)
class Verdict:
    """What ``Exercise.check`` found: true when the function passed. As a cell's last value it shows nothing
    (the verdict is printed already; a bare ``False`` under it would only confuse)."""
    passed: bool
    text: str

    def __bool__(self) -> bool:
        return self.passed

    def _ipython_display_(self) -> None:
        pass


def exercises_of(module) -> list[Exercise]:
    """The exercises a notebook module defines, in the order of their ids."""
    return sorted((v for v in vars(module).values() if isinstance(v, Exercise)), key=lambda e: e.id)
