"""bench/gpu_check.sh and the RESULTS section it writes (bench/gpu_results.py), checked without a GPU."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_check.sh"
sys.path.insert(0, str(ROOT / "bench"))

from gpu_results import BEGIN, END, section, speed_table, pytest_summary, write_section  # noqa: E402


def fake_report(checkpointing=(False, True)):
    cfg = dict(size="gpt2", prompts=8, group_size=16, new_tokens=128, vocab=50257, precision="bf16", steps=3,
               warmup=1, rounds=2)
    fig = lambda s: {"s_per_step": s, "tokens_per_s": 16384 / s, "effective_gflops": 21300 / s,
                     "matmul_fraction": 21300 / s / 700e3, "peak_device_mib": 9000.0}
    rows = [{"config": {**cfg, "gradient_checkpointing": ck}, "matmul_gflops": 700e3, "peer": "trl",
             "bf16_units": "CUDA bf16: NVIDIA H100 80GB HBM3 (sm_90, bf16 tensor cores)", "speedup": 1.5,
             **fig(1.0), "train_pass_fraction": 0.4, "trl": fig(1.5)} for ck in checkpointing]
    return {"device": "NVIDIA H100 80GB HBM3", "torch": "2.13.0", "trl": "1.16.0", "speed": rows}


def test_the_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


def test_the_table_has_a_row_per_implementation_and_workload():
    table = speed_table(fake_report())
    assert table.count("| 8×16×128, V 50257 |") == 4
    assert "| off | minigrpo | 1.000 | 16384 | 9000 | 21.3 TFLOP/s (3 %) | 40 % | 1.50× |" in table
    assert "| on | trl | 1.500 |" in table


def test_the_section_is_replaced_not_repeated(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\nearlier text\n")
    write_section(results, section(fake_report(), "8 passed in 40.1s", 300, "bash bench/gpu_check.sh", "2026-12-01"))
    write_section(results, section(fake_report((False,)), "7 passed, 1 failed", 320, "bash bench/gpu_check.sh"))
    text = results.read_text()
    assert text.startswith("# Results\n\nearlier text\n\n" + BEGIN)
    assert text.count(BEGIN) == 1 and text.count(END) == 1 and text.rstrip().endswith(END)
    assert "7 passed, 1 failed" in text and "8 passed" not in text and text.count("| 8×16×128") == 2
    for needle in ("NVIDIA H100 80GB HBM3", "TRL 1.16.0", "transformers", "CUDA bf16", "use_bias_correction_kl=False"):
        assert needle in text
    results.write_text(text + "\nlater text\n")
    write_section(results, section(fake_report(), "8 passed", 300, "x"))
    assert results.read_text().endswith(END + "\n\nlater text\n")


def test_the_pytest_summary_line_is_found():
    assert pytest_summary("....\n========= 7 passed, 1 skipped in 61.20s =========\n") == "7 passed, 1 skipped in 61.20s"
    assert pytest_summary("") == "no pytest summary found"


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason="the dry run compares with TRL (pip install -e '.[bench]')")
def test_dry_mode_runs_the_whole_pipeline_on_the_cpu(tmp_path):
    """GPU_CHECK_DRY=1: the GPU tests (skipped here), the TRL comparison at a tiny shape, the section into a
    temporary RESULTS file. About 1.5 minutes on a 2-core CPU."""
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    env = dict(os.environ, GPU_CHECK_DRY="1", GPU_CHECK_OUT=str(tmp_path), PY=sys.executable)
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (tmp_path / "RESULTS.md").read_text()
    assert BEGIN in text and "| 2×2×4, V 64 | on | trl |" in text
    assert json.loads((tmp_path / "trl-compare.json").read_text())["speed"][0]["bf16_units"]
