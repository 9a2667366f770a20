"""Every notebook runs headless, top to bottom, without a cell error (small settings: MINIGRPO_SMALL=1).

The notebooks carry their own checks against references (ψ against autograd, grpo_step against the
written-out step) as ``assert`` cells, so a failing check is a failing cell here.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
kernelspec = pytest.importorskip("jupyter_client.kernelspec")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
TUTORIALS = ["01_bandit.ipynb", "02_tokens_and_logprobs.ipynb", "03_one_grpo_step_by_hand.ipynb",
             "04_lm_grpo_run.ipynb", "05_gpt2.ipynb", "06_designing_rewards.ipynb", "07_reward_model.ipynb",
             "08_labelling_by_hand.ipynb", "09_stepwise_vs_outcome.ipynb", "10_reward_hacking.ipynb"]
KERNEL = "python3"


def kernel_python(name: str = KERNEL) -> str:
    """The interpreter the kernel spec ``name`` launches. jupyter_client runs a spec whose argv[0] is
    'python'/'python3'/'python3.X' with the current interpreter (``sys.executable``)."""
    argv0 = kernelspec.KernelSpecManager().get_kernel_spec(name).argv[0]
    generic = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}
    return sys.executable if argv0 in generic else argv0


def test_kernel_is_this_interpreter():
    """The notebooks must run in the interpreter that has this checkout of minigrpo installed."""
    assert Path(kernel_python()).resolve() == Path(sys.executable).resolve(), (
        f"kernel {KERNEL!r} would start {kernel_python()}, not this interpreter {sys.executable}; "
        f"run `{sys.executable} -m ipykernel install --sys-prefix` to point it here")


def test_every_tutorial_is_collected():
    """The notebooks are found by glob; a renamed or deleted tutorial must not silently drop out of the run."""
    missing = sorted(set(TUTORIALS) - {p.name for p in NOTEBOOKS})
    assert not missing, f"tutorial notebooks missing from {NOTEBOOK_DIR}: {missing}"


@pytest.mark.smoke
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, monkeypatch):
    monkeypatch.setenv("MINIGRPO_SMALL", "1")     # the kernel inherits this process's environment
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=300,
                                     resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{path.name}: a cell raised\n{err}", pytrace=False)


def test_notebooks_are_saved_clean():
    """Notebooks are committed without outputs, so diffs show only what a person wrote."""
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
        assert not dirty, f"{path.name}: code cells {dirty} hold outputs; clear them before committing"
