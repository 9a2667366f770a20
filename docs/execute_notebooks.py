"""Execute the notebooks for the course site (``make site``; not a page, see ``exclude_docs`` in mkdocs.yml).

Each notebook runs top to bottom in a fresh kernel started in ``notebooks/``, in full mode (``--small``: the tests'
quick settings, MINIGRPO_SMALL=1), and is saved with its outputs and its widgets' state to
``build/executed/<name>.ipynb``. A cell error stops the run with exit status 1, and the failing notebook is not
saved, so the site (docs/site_hooks.py) refuses to build.

nbclient waits for each cell's reply with one poll of the whole cell timeout. After a cell that displays widgets,
that poll sometimes misses the reply, which has arrived, and returns only at the timeout (nbclient issue 312;
measured here: 2 of 15 runs of a small widget notebook waited out a 20 s timeout, and one site run waited on a
notebook for more than ten minutes). The shell channel is therefore polled in 1 s slices up to the same deadline:
a missed reply costs at most a second, and a cell that really runs too long still fails at the timeout.

    python docs/execute_notebooks.py [--small] [--out build/executed] [--timeout 3600] [notebooks/NN_name.ipynb ...]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from queue import Empty

import nbclient
import nbformat
from jupyter_client.channels import AsyncZMQSocketChannel

ROOT = Path(__file__).resolve().parent.parent
POLL_SLICE = 1.0        # s


def poll_in_slices() -> None:
    """Make every async channel's ``get_msg(timeout)`` poll in POLL_SLICE-second slices up to the same deadline."""
    whole = AsyncZMQSocketChannel.get_msg
    if getattr(whole, "in_slices", False):
        return

    async def get_msg(self, timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = POLL_SLICE if deadline is None else max(0.0, min(POLL_SLICE, deadline - time.monotonic()))
            try:
                return await whole(self, timeout=left)
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    get_msg.in_slices = True
    AsyncZMQSocketChannel.get_msg = get_msg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebooks/*.ipynb, in order")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "executed", help="where the executed copies go")
    parser.add_argument("--small", action="store_true", help="the tests' quick settings (MINIGRPO_SMALL=1)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds one cell may run")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))

    # the kernels inherit this environment: full mode unless --small, and matplotlib's inline backend for figures
    if args.small:
        os.environ["MINIGRPO_SMALL"] = "1"
    else:
        os.environ.pop("MINIGRPO_SMALL", None)
    os.environ.pop("MPLBACKEND", None)
    poll_in_slices()

    args.out.mkdir(parents=True, exist_ok=True)
    mode = "small" if args.small else "full"
    start = time.perf_counter()
    for path in notebooks:
        saved = args.out / path.name
        saved.unlink(missing_ok=True)                       # never leave an older copy in place of this run's
        nb = nbformat.read(path, as_version=4)
        t0 = time.perf_counter()
        print(f"{time.strftime('%H:%M:%S')} executing {path.name} ({mode} mode)", flush=True)
        client = nbclient.NotebookClient(nb, timeout=args.timeout, startup_timeout=300,
                                         extra_arguments=["--InteractiveShell.colors=nocolor"],  # a plain traceback
                                         kernel_name=nb.metadata.get("kernelspec", {}).get("name", "python3"),
                                         resources={"metadata": {"path": str(path.resolve().parent)}})
        try:
            client.execute()
        except nbclient.exceptions.CellExecutionError as err:
            print(f"a cell raised\n{err}", file=sys.stderr)
            return 1
        except (nbclient.exceptions.CellTimeoutError, nbclient.exceptions.DeadKernelError) as err:
            print(f"{type(err).__name__}: {err}", file=sys.stderr)
            return 1
        nbformat.write(nb, saved)
        print(f"{time.strftime('%H:%M:%S')} {path.name}: {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"{len(notebooks)} notebooks executed in {time.perf_counter() - start:.0f} s, saved in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
