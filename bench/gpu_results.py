"""Write the GPU check's section of bench/RESULTS.md (``bench/gpu_check.sh`` calls this last).

    python bench/gpu_results.py --compare runs/gpu-check/trl-compare.json --tests runs/gpu-check/gpu-tests.txt \
        --results bench/RESULTS.md --seconds 412 --command "bash bench/gpu_check.sh"

The section lies between two marker comments (``BEGIN``/``END`` below). Writing replaces an earlier
section in place and otherwise appends one, so running the check again leaves one section, the newest.
The file is replaced whole; a report without speed results, or a file whose markers do not pair up, is
refused in one line and the file left as it was.
It holds the date, the device, the versions (torch, CUDA, transformers, TRL), the GPU tests' summary
line and the speed table of ``trl_compare.py``'s JSON, with the fraction of the device's matmul rate
the whole step reached and, for minigrpo, the training passes alone (anchor forward, policy forward
and backward: 8 of the step's 10·N·tokens FLOPs, timed as the step less its sampling).
"""
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

from args import Parser, existing_file, non_negative_float, not_a_folder, output_file, write_text_atomic

BEGIN = "<!-- gpu-check: begin (written by bench/gpu_check.sh; replaced on each run) -->"
END = "<!-- gpu-check: end -->"


def versions() -> dict:
    """torch (and its CUDA), transformers and TRL, as installed where this runs."""
    import torch
    import transformers

    out = {"torch": torch.__version__, "cuda": torch.version.cuda or "none", "transformers": transformers.__version__}
    try:
        import trl

        out["trl"] = trl.__version__
    except ImportError:
        out["trl"] = "not installed"
    return out


def speed_table(report: dict) -> str:
    """One row per implementation per workload of ``trl_compare.py``'s JSON report."""
    head = ("| P×G×T, V | checkpointing | impl | s/step | tokens/s | peak GPU MiB | FLOP/s (% of matmul) "
            "| training passes: % of matmul | TRL ÷ minigrpo (time) |\n|---|---|---|---|---|---|---|---|---|")
    rows = []
    for r in report["speed"]:
        c = r["config"]
        shape = f"{c['prompts']}×{c['group_size']}×{c['new_tokens']}, V {c['vocab'] or 15}"
        for impl, fig in (("minigrpo", r), (r["peer"], r.get(r["peer"]))):
            if fig is None:
                continue
            mib = fig.get("peak_device_mib")
            passes = fig.get("train_pass_fraction")
            ratio = f"{r['speedup']:.2f}×" if impl == "minigrpo" and "speedup" in r else ""
            rows.append(f"| {shape} | {'on' if c['gradient_checkpointing'] else 'off'} | {impl} | "
                        f"{fig['s_per_step']:.3f} | {fig['tokens_per_s']:.0f} | "
                        f"{f'{mib:.0f}' if mib is not None else '—'} | {rate(fig['effective_gflops'])} "
                        f"({100 * fig['matmul_fraction']:.0f} %) | "
                        f"{f'{100 * passes:.0f} %' if passes is not None else '—'} | {ratio} |")
    return "\n".join([head] + rows)


def pytest_summary(text: str) -> str:
    """pytest's last summary line ("8 passed in 61.2s"), or what is known when there is none."""
    lines = [ln.strip("= ").strip() for ln in text.splitlines()
             if re.search(r"\b(passed|failed|skipped|error|errors|no tests ran)\b", ln)]
    return lines[-1] if lines else "no pytest summary found"


def rate(gflops: float) -> str:
    return f"{gflops / 1e3:.1f} TFLOP/s" if gflops >= 1e3 else f"{gflops:.1f} GFLOP/s"


def section(report: dict, tests: str, seconds: float, command: str, when: str | None = None) -> str:
    """The Markdown section, markers included."""
    from minigrpo.runs.speed import SIZES

    v = {**versions(), **{k: report[k] for k in ("torch", "trl") if k in report}}
    first = report["speed"][0] if report["speed"] else {"config": {}}
    c = first["config"]
    shape = SIZES.get(c.get("size"), {})
    matmul = first.get("matmul_gflops")
    lines = [BEGIN, "## minigrpo vs TRL on a GPU: the GPU check (issue 16)", "",
             f"- **Machine:** {report['device']}; torch {v['torch']} (CUDA {v['cuda']}), transformers "
             f"{v['transformers']}, TRL {v['trl']}. Measured {when or time.strftime('%Y-%m-%d')}; the whole "
             f"check took {seconds / 60:.1f} min (`{command}`).",
             f"- **bf16 units found:** {first.get('bf16_units', 'not reported')}.",
             f"- **GPU tests** (`pytest -m gpu tests/test_gpu.py`): {tests}.",
             f"- **Workload:** a seeded random GPT-2 of {shape.get('n_layer', '?')} layers, width "
             f"{shape.get('n_embd', '?')}, vocabulary {c.get('vocab') or 15}; {c.get('prompts')} prompts × "
             f"{c.get('group_size')} completions × {c.get('new_tokens')} tokens, all generated; "
             f"{c.get('precision')}; gradient checkpointing off and on, the same in both; DeepSeekMath's k3 "
             "KL in both (TRL with `use_bias_correction_kl=False`). s/step is the median over "
             f"{c.get('steps')} measured steps (after {c.get('warmup')} warm-up) of {c.get('rounds')} runs per "
             "implementation, alternating.",
             f"- **% of matmul:** against a 2048² {c.get('precision')} product on the device, measured in the "
             f"same run: {rate(matmul) if matmul else 'not measured'}. \"Training passes\" is minigrpo's "
             "anchor forward plus policy forward and backward (8 of the step's 10·N·tokens FLOPs) over the "
             "step's time less its sampling; TRL's step is not split.", "",
             speed_table(report), "", END]
    return "\n".join(lines)


def merge_section(old: str, text: str, name: str) -> str:
    """``old`` with its marked section replaced by ``text``, or with ``text`` appended where it has none.
    ``ValueError`` naming the file ``name`` when its markers are not one pair in order."""
    begins, ends = old.count(BEGIN), old.count(END)
    if (begins, ends) == (1, 1) and old.index(BEGIN) < old.index(END):
        start, stop = old.index(BEGIN), old.index(END) + len(END)
        return old[:start] + text + old[stop:]
    if (begins, ends) == (0, 0):
        return old.rstrip("\n") + ("\n\n" if old else "") + text + "\n"
    raise ValueError(f"{name!r} has {begins} gpu-check begin and {ends} end marker(s), not one pair in order; "
                     "mend it by hand (it was left as it is)")


def write_section(results: Path, text: str) -> None:
    """Replace the marked section of ``results`` with ``text``, or append it (idempotent); the file is
    replaced whole, never left half-written."""
    old = results.read_text() if results.exists() else ""
    write_text_atomic(results, merge_section(old, text, str(results)))


def read_report(ap: Parser, path: str) -> dict:
    """``trl_compare.py``'s JSON report at ``path``, refused in one line unless it holds speed results."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        ap.error(f"--compare {path!r} is not a readable JSON file ({e})")
    if not isinstance(report, dict) or not isinstance(report.get("speed"), list) or "device" not in report:
        ap.error(f"--compare {path!r} is not trl_compare.py's report (no 'device' and 'speed' list)")
    if not report["speed"]:
        ap.error(f"--compare {path!r} holds no speed results (trl_compare.py --only learning?); nothing to write")
    return report


def main() -> int:
    ap = Parser(description=__doc__.split("\n")[0])
    ap.add_argument("--compare", required=True, type=existing_file, help="trl_compare.py's JSON report")
    ap.add_argument("--tests", required=True, type=not_a_folder,
                    help="the GPU tests' pytest output (missing: the section says 'not run')")
    ap.add_argument("--results", type=output_file, default="bench/RESULTS.md")
    ap.add_argument("--seconds", type=non_negative_float, default=0.0, help="the whole check's wall time")
    ap.add_argument("--command", default="bash bench/gpu_check.sh")
    args = ap.parse_args()
    report = read_report(ap, args.compare)
    results = Path(args.results)
    old = results.read_text() if results.exists() else ""
    try:
        merge_section(old, "", args.results)
    except ValueError as e:
        ap.error(f"--results: {e}")
    tests = pytest_summary(Path(args.tests).read_text(errors="replace")) if Path(args.tests).exists() else "not run"
    try:
        text = section(report, tests, args.seconds, args.command)
    except (KeyError, TypeError, IndexError, AttributeError) as e:
        ap.error(f"--compare {args.compare!r} is not trl_compare.py's speed report ({type(e).__name__}: {e})")
    write_text_atomic(results, merge_section(old, text, args.results))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
