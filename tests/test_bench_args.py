"""The bench scripts refuse a bad command line in one line before any work, and never damage their results.

Each case runs ``python bench/<script>.py`` as a subprocess: exit code 2, one stderr line with ``error:``
naming the flag and the value, no traceback, and bench/'s committed results (JSON, PNG, RESULTS.md)
byte for byte as they were.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
       "PYTHONPATH": str(ROOT)}
TIMEOUT = 300                              # a loaded 2-core machine: generous
# the config of a default methods.py bench, as its results file records it
DEFAULT_CONFIG = {"steps": 60, "P": 16, "G": 8, "beta": 0.05, "eval_every": 5, "eval_size": 200, "eval_samples": 4}


def bench_files() -> dict[str, str]:
    paths = [*ROOT.glob("bench/*.json"), *ROOT.glob("bench/*.png"), ROOT / "bench" / "RESULTS.md"]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.exists()}


@pytest.fixture(autouse=True)
def bench_untouched():
    before = bench_files()
    yield
    assert bench_files() == before


@pytest.fixture()
def tmp(tmp_path):
    """A folder with an earlier methods.py results file, trl_compare.py reports and a damaged RESULTS file."""
    run = {"setting": "chain", "method": "ppo", "seed": 0}
    (tmp_path / "methods.json").write_text(json.dumps({"config": DEFAULT_CONFIG, "settings": {"chain": "c"},
                                                       "runs": [run]}))
    (tmp_path / "empty.json").write_text(json.dumps({"device": "cpu", "speed": []}))
    (tmp_path / "report.json").write_text(json.dumps({"device": "cpu", "speed": [{}]}))
    (tmp_path / "RESULTS.md").write_text("# Results\n<!-- gpu-check: end -->\n")
    return tmp_path


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"bench/{script}", *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=TIMEOUT)


def error_line(res: subprocess.CompletedProcess, script: str) -> str:
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = [line for line in res.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith(f"{script}: error: "), res.stderr[-3000:]
    return lines[0]


CASES = [
    # methods.py: refused while parsing (no torch imported)
    ("methods.py", ["--steps", "-1"], ["--steps", "'-1'", "≥ 1"]),
    ("methods.py", ["--lr", "abc"], ["--lr", "'abc'"]),
    ("methods.py", ["--lr", "nan"], ["--lr", "'nan'", "finite"]),
    ("methods.py", ["--lr", "-1e-3"], ["--lr", "'-1e-3'"]),
    ("methods.py", ["--methods", "grpo_seed,nope"], ["--methods", "'nope'", "grpo_seed, grpo_deepseek"]),
    ("methods.py", ["--settings", "chain,foo"], ["--settings", "'foo'", "addition, chain, hacking"]),
    ("methods.py", ["--seeds", "1,x"], ["--seeds", "'x'"]),
    ("methods.py", ["--seeds", "0,0"], ["--seeds", "'0'", "more than once"]),
    ("methods.py", ["--jobs", "0"], ["--jobs", "'0'"]),
    ("methods.py", ["--timeout", "0"], ["--timeout", "'0'"]),
    ("methods.py", ["--results", "bench"], ["--results", "'bench'", "folder"]),
    ("methods.py", ["--report-only", "--results", "{tmp}/missing.json"], ["--report-only", "missing.json"]),
    # a subset with another config would drop the earlier file's other runs
    ("methods.py", ["--steps", "5", "--seeds", "1", "--settings", "addition", "--methods", "grpo_seed", "--results",
                    "{tmp}/methods.json"], ["--results", "methods.json", "steps 60 → 5", "drop the 1 of them"]),
    # every run's TrainConfig is built before the first run starts
    ("methods.py", ["--group-size", "1", "--seeds", "0", "--settings", "addition", "--methods", "grpo_seed",
                    "--results", "{tmp}/new.json"], ["group_size=1", "grpo_seed on addition"]),
    # gpu_results.py
    ("gpu_results.py", ["--tests", "x"], ["--compare", "required"]),
    ("gpu_results.py", ["--compare", "{tmp}/nope.json", "--tests", "x"], ["--compare", "nope.json", "no such file"]),
    ("gpu_results.py", ["--compare", "bench/RESULTS.md", "--tests", "x", "--results", "{tmp}/R.md"],
     ["--compare", "bench/RESULTS.md", "JSON"]),
    ("gpu_results.py", ["--compare", "{tmp}/empty.json", "--tests", "x", "--results", "{tmp}/R.md"],
     ["--compare", "empty.json", "no speed results"]),
    ("gpu_results.py", ["--compare", "{tmp}/report.json", "--tests", "x", "--seconds", "-1"], ["--seconds", "'-1'"]),
    ("gpu_results.py", ["--compare", "{tmp}/report.json", "--tests", "x", "--results", "{tmp}/RESULTS.md"],
     ["--results", "RESULTS.md", "marker"]),
    # the scripts that import torch first: one or two cases each
    ("attention_cpu.py", ["--threads", "0"], ["--threads", "'0'"]),
    ("bandit_speed.py", ["--repeats", "0"], ["--repeats", "'0'"]),
    ("guided_rewards.py", ["--seeds", "0,-1"], ["--seeds", "'-1'"]),
    ("guided_rewards.py", ["--target", "1.5"], ["--target", "'1.5'", "≤ 1"]),
    ("soak.py", ["--group-size", "1"], ["--group-size", "'1'", "≥ 2"]),
    ("soak.py", ["--steps", "100"], ["--steps 100", "--warmup 200", "--every 25"]),
    ("your_data.py", ["--steps", "2"], ["--steps", "'2'", "≥ 3"]),
    ("trl_compare.py", ["--sizes", "tiny,huge"], ["--sizes", "'huge'", "tiny, gpt2"]),
    ("trl_compare.py", ["--device", "gpu"], ["--device", "'gpu'"]),
    ("trl_compare.py", ["--vocab", "3"], ["--vocab", "'3'"]),
]


@pytest.mark.parametrize("script,args,needles", CASES, ids=[f"{s} {' '.join(a)}" for s, a, _ in CASES])
def test_a_bad_command_line_is_one_line_before_any_work(tmp, script, args, needles):
    before = {p: p.read_bytes() for p in tmp.iterdir()}
    line = error_line(run(script, *(a.replace("{tmp}", str(tmp)) for a in args)), script)
    for needle in needles:
        assert needle in line, line
    assert {p: p.read_bytes() for p in tmp.iterdir()} == before


def test_methods_leaves_its_results_file_alone_when_every_run_fails(tmp):
    """Both runs (60 steps each) are killed by --timeout 1: exit 2, one line with the first run's error, the
    earlier results file byte for byte as it was, and no plots."""
    results = tmp / "methods.json"
    before = results.read_bytes()
    res = run("methods.py", "--seeds", "0", "--settings", "addition", "--methods", "grpo_seed,dpo", "--timeout", "1",
              "--results", str(results), "--out", str(tmp / "runs"), "--plots", str(tmp / "plots"))
    line = error_line(res, "methods.py")
    assert "all 2 runs failed" in line and "left as it was" in line and "timed out after 1 s" in line, line
    assert results.read_bytes() == before
    assert not (tmp / "plots").exists()
