"""`make lab` opens copies of the notebooks, so JupyterLab's autosave never touches the tracked ones.

The tracked notebooks stay saved clean (``test_notebooks.py::test_notebooks_are_saved_clean``); a lab
session writes outputs only into ``workspace/notebooks`` (ignored by git). These tests run the
Makefile's ``lab-workspace`` target, which ``make lab`` runs before starting JupyterLab.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def make_workspace(lab: Path) -> None:
    subprocess.run(["make", "-s", "lab-workspace", f"LAB={lab}"], cwd=ROOT, check=True, capture_output=True,
                   text=True, timeout=120)


def test_the_lab_works_on_copies_whose_relative_paths_resolve(tmp_path):
    lab = tmp_path / "ws"
    make_workspace(lab)
    tracked = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert sorted(p.name for p in (lab / "notebooks").glob("*.ipynb")) == tracked
    for name in tracked:
        assert (lab / "notebooks" / name).read_bytes() == (ROOT / "notebooks" / name).read_bytes()
    # the notebooks read ../examples and ../bench: the same files from the copies
    assert (lab / "notebooks" / ".." / "examples" / "word_problems").resolve() == ROOT / "examples" / "word_problems"
    assert (lab / "notebooks" / ".." / "bench" / "methods.json").resolve() == ROOT / "bench" / "methods.json"


def test_a_learners_copy_is_kept_and_the_original_stays_clean(tmp_path):
    lab = tmp_path / "ws"
    make_workspace(lab)
    copy = lab / "notebooks" / "01_bandit.ipynb"
    nb = json.loads(copy.read_text())
    cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
    cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["autosaved\n"]}]
    cell["execution_count"] = 1
    copy.write_text(json.dumps(nb))                          # what an autosave does
    original = (ROOT / "notebooks" / "01_bandit.ipynb").read_bytes()
    make_workspace(lab)                                       # the next `make lab`
    assert "autosaved" in copy.read_text(), "make lab overwrote a learner's copy"
    assert (ROOT / "notebooks" / "01_bandit.ipynb").read_bytes() == original


def test_the_default_workspace_is_ignored_by_git():
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    probe = subprocess.run(["git", "check-ignore", "-q", "workspace/notebooks/01_bandit.ipynb"], cwd=ROOT)
    assert probe.returncode == 0, "workspace/ must be in .gitignore: the lab's copies hold outputs"
