"""The command line: `minigrpo bandit` (text and --json), errors for bad input, and the demo."""
import json
import subprocess
import sys

import pytest

from minigrpo.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "minigrpo.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("means,anchor,beta", [
    ("0.2,0.5,0.9", "0.6,0.3,0.1", 0.3),
    ("0.9,0.1,0.4,0.6", "0.1,0.5,0.2,0.2", 0.1),
    ("0.3,0.35,0.8,0.1,0.6,0.5", "0.3,0.3,0.1,0.1,0.1,0.1", 1.0),
])
def test_bandit_json_meets_the_optimum_tolerance(means, anchor, beta):
    """Anchors and means other than the fixed-point tests': KL(π ‖ π*) < 1e-3 with the defaults."""
    out = run_cli("bandit", "--means", means, "--anchor", anchor, "--beta", str(beta), "--json")
    assert out.returncode == 0, out.stderr
    lines = [l for l in out.stdout.splitlines() if l.strip()]
    assert len(lines) == 1, out.stdout                       # exactly one JSON object
    res = json.loads(lines[0])
    for key in ("policy", "anchor", "optimum", "kl_to_optimum", "expected_reward"):
        assert key in res
    assert res["kl_to_optimum"] < 1e-3, res
    assert abs(sum(res["policy"]) - 1) < 1e-5 and len(res["policy"]) == len(means.split(","))


def strict_json(text: str):
    """Parse JSON as the standard defines it: NaN and ±Infinity are not numbers there."""
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")
    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("beta,finite", [(0.001, True), (0.0, False)])
def test_bandit_json_is_strict_and_kl_finite_at_the_smallest_beta(beta, finite, capsys):
    """At β = 0.001 the worst arm's π* is about e^-800 (0 in float32); KL(π ‖ π*) is large but finite,
    computed in log space. At β = 0 it is infinite, printed as null (strict JSON has no Infinity)."""
    assert main(["bandit", "--beta", str(beta), "--steps", "200", "--json"]) == 0
    res = strict_json(capsys.readouterr().out)
    if finite:
        assert 0 < res["kl_to_optimum"] < 1e4 and 0 < res["tv_to_optimum"] <= 1, res
    else:
        assert res["kl_to_optimum"] is None, res


def test_bandit_text_output(capsys):
    assert main(["bandit", "--arms", "3", "--steps", "200", "--group-size", "16"]) == 0
    out = capsys.readouterr().out
    for word in ("policy", "anchor", "optimum", "KL(pi || pi*)", "expected reward"):
        assert word in out


@pytest.mark.parametrize("args,needle", [
    (["--beta", "-0.1"], "beta=-0.1"),
    (["--means", "0.5"], "arms=1"),
    (["--arms", "1"], "arms=1"),
    (["--arms", "3", "--means", "0.1,0.2"], "arms=3"),
    (["--means", "0.1,0.5,0.9", "--anchor", "0.5,0.5,0.5"], "sum to 1"),
    (["--means", "0.1,0.5,0.9", "--anchor", "0.5,0.5"], "anchor="),
    (["--means", "0.1,nan,0.9"], "means="),
    (["--group-size", "1", "--baseline", "group_mean"], "group_size=1"),
    (["--group-size", "1", "--baseline", "leave_one_out"], "group_size=1"),
    (["--kl", "middle:k9"], "kl='middle:k9'"),
    (["--lr", "0"], "lr=0"),
    (["--steps", "0"], "steps=0"),
    (["--means", "0.1,1.5", "--noise", "bernoulli"], "[0, 1]"),
])
def test_bad_input_is_a_clear_error(args, needle, capsys):
    """Bad settings exit with code 2 and one line naming the setting, its value and what is allowed."""
    assert main(["bandit", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err, err
    assert "Traceback" not in err


def test_group_size_one_is_fine_without_a_group_baseline(capsys):
    assert main(["bandit", "--arms", "3", "--group-size", "1", "--baseline", "value", "--steps", "50"]) == 0


@pytest.mark.smoke
def test_demo_small_writes_a_run_folder(tmp_path):
    """Smoke: `minigrpo demo --small` finishes and writes its files; summary.json carries the story."""
    out = run_cli("demo", "--small", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    (run_dir,) = list(tmp_path.iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    for name in summary["files"]:
        assert (run_dir / name).stat().st_size > 0, name
    assert set(summary) >= {"anchor_accuracy", "final_accuracy", "steps", "wall_seconds"}
    assert 0 <= summary["anchor_accuracy"] <= 1 and 0 <= summary["final_accuracy"] <= 1
    lm_lines = (run_dir / "lm" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lm_lines[-1])["step"] == summary["steps"]
    bandit = summary["bandit"]
    assert bandit["main"]["kl_to_optimum"] < bandit["recipes"][0]["kl_to_anchor"]
    assert {r["recipe"] for r in bandit["recipes"]} >= {"seed", "deepseek", "dr_grpo", "rloo"}
    lines = (run_dir / "bandit" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == bandit["steps"] + 1 and "kl_to_optimum" in json.loads(lines[-1])
