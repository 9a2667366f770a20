"""Running ``minigrpo`` as a subprocess, as the adversarial tests do, and reading its one error line.

Shared by tests/test_guards.py, tests/test_bad_inputs.py and tests/test_resume_guards.py.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# one thread each (a loaded 2-core machine), this checkout importable, and no leftover permission to write
# into the package's assets
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
       "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
ENV.pop("MINIGRPO_WRITE_ASSETS", None)
TIMEOUT = 600                             # a loaded 2-core machine: generous


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "minigrpo.cli", *args], env=ENV, cwd=cwd, capture_output=True,
                          text=True, timeout=TIMEOUT)


def error_line(res: subprocess.CompletedProcess, command: str = "train") -> str:
    """The one error line of a refused ``minigrpo <command>``: exit 2, no traceback (tqdm's progress bar may
    precede the line on stderr)."""
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = [l for l in res.stderr.replace("\r", "\n").splitlines() if f"minigrpo {command}:" in l]
    assert len(lines) == 1 and lines[0].startswith(f"minigrpo {command}: error: "), res.stderr[-3000:]
    return lines[0]
