"""Shared pytest hooks."""
from __future__ import annotations

import os

import pytest

# No network at test time: a name that is not a local file must fail at once, not after the hub's retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture()
def one_thread():
    """torch on one thread for the test: tiny matrices gain nothing from a second thread, and on a 2-core
    machine shared with another job two threads made GRPO steps about 40 times slower. A test file
    opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture()
def float64_default():
    """torch's default dtype float64 for the test: tabular policies and aggregation weights take the
    default dtype, and exact comparisons (ψ against autograd, fixed points) want the tighter one."""
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def pytest_terminal_summary(terminalreporter):
    """List each notebook's kernel-start and run seconds (tests/test_notebooks.py), so a stall shows where
    it waited: starting the kernel or running the cells."""
    rows = [value for reports in terminalreporter.stats.values() for r in reports
            if getattr(r, "when", None) == "call" for key, value in getattr(r, "user_properties", ())
            if key == "notebook_timing"]
    if not rows:
        return
    terminalreporter.section("notebook timings")
    for row in sorted(rows, key=lambda r: r["notebook"]):
        tries = row.get("start_tries", "?")
        seconds = lambda key: f"{row[key]:6.1f} s" if key in row else "     - "
        line = (f"{row['notebook']:<36} kernel start {seconds('kernel_start_s')} ({tries} "
                f"{'try' if tries == 1 else 'tries'})   run {seconds('run_s')}")
        terminalreporter.write_line(line)
        for failure in row.get("failed_starts", ()):
            terminalreporter.write_line(f"    {failure}")
