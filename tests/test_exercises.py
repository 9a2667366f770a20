"""The course's exercises (minigrpo/lab/exercises/, solutions/, notebooks/, docs/syllabus.md).

Every checker passes the solution kept in solutions/, and fails, with its hint, a stub and a wrong answer; every
notebook holds at least two exercises, each a function whose body is left as ``raise NotImplementedError`` and a
cell that checks it, with no solution beside it; the syllabus lists every exercise.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import pkgutil
import re
from pathlib import Path

import pytest
import torch

import minigrpo.lab.exercises as exercises
from minigrpo.lab.exercises import Exercise, exercises_of, same

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MODULES = {m.name: importlib.import_module(f"minigrpo.lab.exercises.{m.name}")
           for m in pkgutil.iter_modules(exercises.__path__)}
BY_NOTEBOOK = {mod.NOTEBOOK: mod for mod in MODULES.values()}
ALL = [(mod.NOTEBOOK, ex) for mod in MODULES.values() for ex in exercises_of(mod)]


def solutions(notebook: str):
    path = ROOT / "solutions" / notebook.replace(".ipynb", ".py")
    spec = importlib.util.spec_from_file_location(f"solutions_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def perturb(value):
    """A wrong answer of the right type: every float moved by 0.5 (and a bool/int tensor flipped)."""
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool:
            return ~value
        return value + 0.5 if value.is_floating_point() else value + 1
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 0.5
    if isinstance(value, (tuple, list)):
        return type(value)(perturb(v) for v in value)
    if isinstance(value, dict):
        return {k: perturb(v) for k, v in value.items()}
    raise TypeError(f"no wrong answer made for a {type(value).__name__}; give the exercise a test of its own")


def code_cells(path: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def test_every_notebook_has_an_exercise_module():
    missing = sorted({p.name for p in NOTEBOOKS} - set(BY_NOTEBOOK))
    assert not missing, f"notebooks without minigrpo/lab/exercises/nNN_*.py: {missing}"


@pytest.mark.parametrize("notebook", [p.name for p in NOTEBOOKS])
def test_notebook_holds_its_exercises_unsolved(notebook):
    """At least two exercises; each defined with its body left to the learner and checked in the notebook."""
    mod = BY_NOTEBOOK.get(notebook)
    assert mod is not None, f"{notebook}: no exercise module"
    found = exercises_of(mod)
    assert len(found) >= 2, f"{notebook}: {len(found)} exercise(s), at least 2 wanted"
    cells = code_cells(ROOT / "notebooks" / notebook)
    for ex in found:
        assert ex.id.startswith(notebook[:2] + "."), f"{ex.id} is not numbered after {notebook}"
        defining = [c for c in cells if re.search(rf"^def {ex.function}\(", c, re.M)]
        assert len(defining) == 1, f"{notebook}: {len(defining)} cells define {ex.function}, 1 wanted"
        body = defining[0].split(f"def {ex.function}(", 1)[1]
        assert "raise NotImplementedError" in body, f"{notebook}: {ex.function} is solved in the notebook"
        attr = next(k for k, v in vars(mod).items() if v is ex)
        assert any(re.search(rf"\.{attr}\.check\({ex.function}\)", c) for c in cells), \
            f"{notebook}: no cell calls ex.{attr}.check({ex.function})"


@pytest.mark.parametrize("notebook, ex", ALL, ids=[ex.id for _, ex in ALL])
def test_solution_passes_and_wrong_answers_fail(notebook, ex: Exercise, capsys):
    solution = getattr(solutions(notebook), ex.function)
    passed, text = ex.run(solution)
    assert passed, text
    assert text.startswith("✓")

    def stub(*args):
        raise NotImplementedError
    passed, text = ex.run(stub)
    assert not passed and "not filled in yet" in text

    wrong = lambda *args: perturb(ex.reference(*args))   # noqa: E731
    passed, text = ex.run(wrong)
    assert not passed and ex.hint in text, text

    def broken(*args):
        raise ValueError("oops")
    passed, text = ex.run(broken)
    assert not passed and "ValueError: oops" in text and ex.hint in text
    verdict = ex.check(stub)
    assert not verdict and capsys.readouterr().out.startswith("✗") and verdict.text.startswith("✗")
    assert ex.check(solution) and capsys.readouterr().out.startswith("✓")


def test_checker_does_not_let_a_candidate_spoil_the_inputs():
    """A candidate that writes into its input must not change what the reference is compared on."""
    ex = BY_NOTEBOOK["01_bandit.ipynb"].group_mean

    def in_place(R):
        R -= R.mean(dim=1, keepdim=True)
        return R
    assert ex.run(in_place)[0]


def test_same_reports_the_first_difference():
    assert same(torch.ones(2), torch.ones(2)) is None
    assert "shape (3,)" in same(torch.ones(3), torch.ones(2))
    assert "index [1]" in same(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 3.0]))
    assert same(float("nan"), float("nan")) is None
    assert "expected a tensor" in same(1.0, torch.ones(1))
    assert "item 1" in same((1.0, 2.0), (1.0, 2.5))
    assert same(torch.tensor([True]), torch.tensor([True])) is None


def test_syllabus_lists_every_notebook_and_exercise():
    text = (ROOT / "docs" / "syllabus.md").read_text()
    missing = [p.name for p in NOTEBOOKS if p.stem not in text] + [ex.id for _, ex in ALL if ex.id not in text]
    assert not missing, f"docs/syllabus.md does not mention: {missing}"
