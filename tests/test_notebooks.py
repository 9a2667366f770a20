"""Every notebook runs headless, top to bottom, without a cell error (small settings: MINIGRPO_SMALL=1).

The notebooks carry their own checks against references (ψ against autograd, grpo_step against the
written-out step) as ``assert`` cells, so a failing check is a failing cell here.

The harness starts each kernel itself and hands it to nbclient, so that a slow or failed kernel *start*
(seen on loaded CI machines: a start stalled for minutes, a kernel that never answered) is waited for
generously and tried once more, while a failed *cell* is never retried. Each notebook's kernel-start and
run seconds are listed under "notebook timings" at the end of the pytest output (tests/conftest.py).
"""
from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
kernelspec = pytest.importorskip("jupyter_client.kernelspec")
from jupyter_client.manager import AsyncKernelManager  # noqa: E402  (after the importorskip above)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docs"))
from execute_notebooks import poll_in_slices  # noqa: E402  (docs/execute_notebooks.py, the site's executor)

# nbclient sometimes misses a cell's reply after a widget cell and waits out the whole cell timeout (nbclient
# issue 312; seen here as an intermittent 300 s stall): poll in 1 s slices up to the same deadline instead
poll_in_slices()
NOTEBOOK_DIR = ROOT / "notebooks"
# each notebook that ran without an error is saved here with its outputs (figures, and the widget state that
# nbclient stores by default) for the course site (tests/test_site.py, `make site`); ignored by git
EXECUTED_DIR = ROOT / "build" / "executed"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
TUTORIALS = ["01_bandit.ipynb", "02_tokens_and_logprobs.ipynb", "03_one_grpo_step_by_hand.ipynb",
             "04_lm_grpo_run.ipynb", "05_gpt2.ipynb", "06_designing_rewards.ipynb", "07_reward_model.ipynb",
             "08_labelling_by_hand.ipynb", "09_stepwise_vs_outcome.ipynb", "10_reward_hacking.ipynb",
             "11_contextual_bandit.ipynb", "12_your_own_task.ipynb", "13_methods.ipynb"]
KERNEL = "python3"
STARTUP_TIMEOUT = 300       # s for one kernel start to answer; a cold start on a loaded 2-core machine took minutes
START_TRIES = 2             # a start that fails or times out is tried once more; a cell never is
CELL_TIMEOUT = 300          # s per cell
# zmq over unix sockets where there are any: no TCP port is picked and then raced for by another process
TRANSPORT = "tcp" if os.name == "nt" else "ipc"


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


class KernelStartError(RuntimeError):
    """Every try to start a kernel failed or timed out."""


async def stop_kernel(km: AsyncKernelManager, kc) -> None:
    """Stop the client's channels and the kernel process, and remove its connection and ipc files."""
    if kc is not None:
        kc.stop_channels()
    if km.has_kernel:
        await km.shutdown_kernel(now=True)      # also removes the connection and ipc files
    else:
        await km.cleanup_resources()            # a start that failed part-way may have written them


async def start_kernel(cwd: Path, ipc_dir: str, timing: dict):
    """Start kernel ``KERNEL`` in ``cwd`` and wait until it answers kernel_info: up to START_TRIES tries of
    STARTUP_TIMEOUT seconds each. Returns the (manager, client); records seconds and failed tries in ``timing``."""
    failures = []
    for attempt in range(1, START_TRIES + 1):
        t0 = time.perf_counter()
        km = AsyncKernelManager(kernel_name=KERNEL, transport=TRANSPORT)
        if TRANSPORT == "ipc":
            km.ip = os.path.join(ipc_dir, f"k{attempt}")      # absolute and short: a socket path has ~100 chars
        kc = None
        try:
            # an in-memory IPython history, as nbclient does, so kernels never wait on one sqlite file;
            # tracebacks without colour codes, so a failed cell reads plainly in a CI log
            args = ["--HistoryManager.hist_file=:memory:", "--InteractiveShell.colors=nocolor"]
            await asyncio.wait_for(km.start_kernel(cwd=str(cwd), extra_arguments=args), STARTUP_TIMEOUT)
            kc = km.client()
            kc.start_channels()
            await kc.wait_for_ready(timeout=STARTUP_TIMEOUT)
        except Exception as err:                    # a start that died or timed out: try again, then report
            why = str(err) or f"no kernel within {STARTUP_TIMEOUT} s"
            failures.append(f"try {attempt}: {type(err).__name__}: {why} ({time.perf_counter() - t0:.1f} s)")
            try:
                await stop_kernel(km, kc)
            except Exception as cleanup_err:        # a failed clean-up must not stop the next try
                failures.append(f"try {attempt}, stopping it: {type(cleanup_err).__name__}: {cleanup_err}")
            continue
        finally:
            timing["kernel_start_s"] = round(timing.get("kernel_start_s", 0.0) + time.perf_counter() - t0, 1)
            timing["start_tries"] = attempt
        kc.allow_stdin = False
        timing["failed_starts"] = failures
        return km, kc
    timing["failed_starts"] = failures
    raise KernelStartError(f"kernel {KERNEL!r} did not start in {START_TRIES} tries: " + "; ".join(failures))


async def execute_notebook(nb, cwd: Path, timing: dict):
    """Run every cell of ``nb`` in a fresh kernel started in ``cwd``. A failing cell raises nbclient's
    CellExecutionError, once: only the kernel start is retried."""
    ipc_dir = tempfile.mkdtemp(prefix="nbk-")
    try:
        km, kc = await start_kernel(cwd, ipc_dir, timing)
        t0 = time.perf_counter()
        try:
            client = nbclient.NotebookClient(nb, km=km, timeout=CELL_TIMEOUT,
                                             resources={"metadata": {"path": str(cwd)}})
            client.kc = kc      # our started, ready client: nbclient starts neither a kernel nor a client
            await client.async_execute()
        finally:
            timing["run_s"] = round(time.perf_counter() - t0, 1)
            await stop_kernel(km, kc)
    finally:
        shutil.rmtree(ipc_dir, ignore_errors=True)
    return nb


@pytest.mark.smoke
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, monkeypatch, record_property):
    monkeypatch.setenv("MINIGRPO_SMALL", "1")     # the kernel inherits this process's environment
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    saved = EXECUTED_DIR / path.name
    saved.unlink(missing_ok=True)                   # a copy from an earlier run must not stand in for this one
    timing, failure = {}, None
    try:
        asyncio.run(execute_notebook(nb, path.parent, timing))
    except nbclient.exceptions.CellExecutionError as err:
        failure = f"{path.name}: a cell raised\n{err}"
    except KernelStartError as err:
        failure = f"{path.name}: {err}"
    finally:
        record_property("notebook_timing", {"notebook": path.name, **timing})
    if failure:                                     # outside the except: the report shows the cell's error once
        pytest.fail(failure, pytrace=False)
    EXECUTED_DIR.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, saved)                       # only a notebook that ran without an error is saved


def test_notebooks_are_saved_clean():
    """Notebooks are committed without outputs, so diffs show only what a person wrote."""
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
        assert not dirty, f"{path.name}: code cells {dirty} hold outputs; clear them before committing"
