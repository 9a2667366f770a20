"""The plots and tables of notebook 13 (``lab/plots_methods.py``) on small synthetic data: each returns a
figure with the expected axes, lines and bars, and refuses bad input with a ValueError that says what is wrong."""
from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")

from matplotlib.figure import Figure  # noqa: E402

import minigrpo as mg  # noqa: E402
from minigrpo.lab.plots_methods import (method_band, plot_gap_vs_data, plot_kl_paths, plot_landing,  # noqa: E402
                                        plot_method_curves, summarise_methods, verdict)

K = 3
STAR = [0.1, 0.2, 0.7]


def landing(policy, fixed=None):
    out = {"policy": policy, "optimum": STAR}
    if fixed is not None:
        out["fixed_point"] = fixed
    return out


def bars(ax) -> int:
    return len(ax.patches)


# --- plot_landing ---------------------------------------------------------------------------------

def test_plot_landing_one_panel_per_method_with_its_bars():
    fig = plot_landing({"grpo": landing([0.1, 0.2, 0.7]), "ipo": landing([0.3, 0.3, 0.4], fixed=[0.3, 0.3, 0.4]),
                        "dpo": landing([0.2, 0.2, 0.6])})
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    assert [bars(ax) for ax in fig.axes] == [2 * K, 3 * K, 2 * K]          # π and π*; IPO adds its fixed point
    assert "KL(π ‖ π*) = 0" in fig.axes[0].get_title()                    # on π*: KL 0
    assert "KL(π ‖ own) = 0" in fig.axes[1].get_title()


def test_plot_landing_takes_bandit_results_and_wraps_rows():
    res = {m: mg.run_bandit(mg.BanditConfig(method=m, steps=20, group_size=8, pairs=200, logged=200))
           for m in ("grpo", "dpo", "ipo", "offline_grpo")}
    fig = plot_landing(res, ncols=3)
    assert len(fig.axes) == 4                                             # the empty fifth panel is removed
    assert [bars(ax) for ax in fig.axes] == [10, 10, 15, 15]
    fig = plot_kl_paths(res)
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 4


@pytest.mark.parametrize("bad,needle", [
    ({}, "non-empty"),
    ([landing(STAR)], "non-empty dict"),
    ({"a": landing(STAR), "b": {"policy": [0.5, 0.5], "optimum": [0.5, 0.5]}}, "same arms"),
    ({"a": {"policy": [0.5, 0.5]}}, "'policy' and 'optimum'"),
    ({"a": {"policy": [0.5, 0.6, -0.1], "optimum": STAR}}, "probabilities"),
    ({"a": {"policy": STAR, "optimum": [0.5, 0.5]}}, "optimum has 2 entries, expected 3"),
    ({"a": landing(STAR, fixed=[1.0])}, "fixed_point has 1 entries"),
])
def test_plot_landing_refuses_bad_input(bad, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        plot_landing(bad)


def test_plot_kl_paths_needs_histories():
    with pytest.raises(ValueError, match="non-empty"):
        plot_kl_paths({})
    with pytest.raises(ValueError, match="BanditResult"):
        plot_kl_paths({"grpo": landing(STAR)})


# --- plot_gap_vs_data --------------------------------------------------------------------------------

def test_plot_gap_vs_data_log_log_with_guide_and_more_series():
    fig = plot_gap_vs_data([10, 100, 1000], [0.5, 0.04, 0.006], "DPO")
    (ax,) = fig.axes
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert len(ax.lines) == 2                                             # the data and the 1/n guide
    fig = plot_gap_vs_data([10, 100], [0.5, 0.04], "offline GRPO", more={"to its own fixed point": [0.01, 0.01]},
                           guide=False)
    assert len(fig.axes[0].lines) == 2


@pytest.mark.parametrize("counts,gaps,more,needle", [
    ([], [], None, "counts is empty"),
    ([10, 100], [0.1], None, "2 counts but 1 values"),
    ([10, 100], [0.1, 0.01], {"own": [0.1]}, "2 counts but 1 values for 'own'"),
    ([0, 100], [0.1, 0.01], None, "positive"),
    ([10, 100], [0.1, 0.0], None, "finite and > 0"),
])
def test_plot_gap_vs_data_refuses_bad_input(counts, gaps, more, needle):
    with pytest.raises(ValueError, match=needle):
        plot_gap_vs_data(counts, gaps, "DPO", more=more)


# --- the bench: plot_method_curves, summarise_methods, verdict -----------------------------------------

def run(method, seed, accs, setting="addition", calls_per_step=100, offline=False, **extra):
    """A run record in bench/methods.json's format: evaluations at steps 0, 5, 10, …"""
    curve = []
    for i, a in enumerate(accs):
        step = 5 * i
        calls = (calls_per_step * 5 * (len(accs) - 1) if step else 0) if offline else calls_per_step * step
        curve.append({"step": step, "reward_calls": calls, "train_seconds": 0.5 * step, "test_accuracy": a,
                      "eval/kl": 0.01 * step, "eval/greedy/correct": a})
    return {"setting": setting, "method": method, "seed": seed, "curve": curve, "anchor_accuracy": accs[0],
            "final_accuracy": accs[-1], "reward_calls": curve[-1]["reward_calls"], "train_seconds": 0.5 * curve[-1]["step"],
            "peak_rss_mb": 400.0 + (50 if method == "ppo" else 0), **extra}


@pytest.fixture()
def bench():
    return {"settings": {"addition": "addition, reward {correct: 1}"},
            "runs": [run("grpo_seed", 0, [0.6, 0.82, 0.9]), run("grpo_seed", 1, [0.6, 0.7, 0.88]),
                     run("ppo", 0, [0.6, 0.65, 0.7]), run("ppo", 1, [0.6, 0.62, 0.75]),
                     run("dpo", 0, [0.6, 0.7, 0.8], offline=True),
                     {"setting": "addition", "method": "dpo", "seed": 1, "error": "no pairs: ValueError: …"}]}


@pytest.mark.parametrize("x", ["reward_calls", "seconds"])
def test_plot_method_curves_one_line_and_band_per_method_and_the_anchor(bench, x):
    fig = plot_method_curves(bench, "addition", x=x)
    (ax,) = fig.axes
    assert len(ax.lines) == 4                                             # 3 methods + the anchor
    assert len(ax.collections) == 3                                       # a min–max band each
    labels = [line.get_label() for line in ax.lines]
    assert labels[:3] == ["seed GRPO (n=2)", "PPO (n=2)", "DPO (n=1)"]    # the failed DPO seed is left out
    dpo = ax.lines[2].get_xdata().tolist()
    assert dpo == ([0, 1000, 1000, 1000] if x == "reward_calls" else [0, 2.5, 5.0])   # offline: calls before step 1


def test_method_band_is_the_mean_and_range_over_seeds(bench):
    xs, mean, lo, hi = method_band(bench["runs"][:2], "reward_calls")
    assert xs == [0, 500, 1000]
    assert mean == pytest.approx([0.6, 0.76, 0.89]) and lo == [0.6, 0.7, 0.88] and hi == [0.6, 0.82, 0.9]


@pytest.mark.parametrize("call,needle", [
    (lambda b: plot_method_curves(b, "addition", x="steps"), "x='steps'"),
    (lambda b: plot_method_curves(b, "chain"), "no run for setting 'chain'"),
    (lambda b: plot_method_curves({}, "addition"), "'runs' list"),
    (lambda b: plot_method_curves({"runs": [b["runs"][-1]]}, "addition"), "every run"),
    (lambda b: summarise_methods({"runs": []}, "addition"), "no run for setting"),
])
def test_bench_functions_refuse_bad_input(bench, call, needle):
    with pytest.raises(ValueError, match=needle):
        call(bench)


def test_summarise_methods_per_seed_numbers_and_the_target(bench):
    s = summarise_methods(bench, "addition")
    assert s["target"] == pytest.approx(0.6 + 0.75 * (0.89 - 0.6))    # the best mean final is seed GRPO's 0.89
    g, p, d = s["methods"]["grpo_seed"], s["methods"]["ppo"], s["methods"]["dpo"]
    assert g["final"] == [0.9, 0.88] and g["seeds"] == [0, 1] and g["errors"] == []
    assert g["calls_to_target"] == [500, 1000] and p["calls_to_target"] == [None, None]
    assert p["rss"] == [450.0, 450.0] and g["kl"] == [0.1, 0.1] and g["dip"] == [0.0, 0.0]
    assert d["final"] == [0.8] and d["errors"] == ["no pairs: ValueError: …"]
    assert g["true"] == [(0.6, 0.9), (0.6, 0.88)]


def test_summarise_methods_dip_and_no_target_when_nothing_improves():
    b = {"runs": [run("grpo_seed", 0, [0.7, 0.8, 0.6]), run("ppo", 0, [0.7, 0.6, 0.65])]}
    s = summarise_methods(b, "addition")
    assert s["target"] is None and s["methods"]["grpo_seed"]["calls_to_target"] == [None]
    assert s["methods"]["grpo_seed"]["dip"] == [pytest.approx(0.2)]
    assert s["methods"]["ppo"]["dip"] == [pytest.approx(0.1)]


@pytest.mark.parametrize("a,b,higher,expected", [
    ([0.9, 0.88], [0.7, 0.75], True, "holds"),
    ([0.7, 0.75], [0.9, 0.88], True, "does not hold"),
    ([0.7, 0.9], [0.8, 0.85], True, "not distinguishable"),
    ([500, 1000], [None, None], False, "holds"),              # B never reached the target
    ([None], [2000], False, "does not hold"),
    ([None], [None], False, "not distinguishable"),
    ([10.0], [20.0], False, "holds"),
    ([], [1.0], True, "not measured"),
    ([float("nan")], [1.0], True, "not measured"),
])
def test_verdict(a, b, higher, expected):
    assert verdict(a, b, higher_is_better=higher) == expected


def test_verdict_tolerance():
    """A difference within ``tol`` (e.g. the run-to-run noise of peak memory) is not a verdict either way."""
    assert verdict([416.4], [415.9], higher_is_better=False) == "does not hold"
    assert verdict([416.4], [415.9], higher_is_better=False, tol=5) == "not distinguishable"
    assert verdict([400.0], [420.0], higher_is_better=False, tol=5) == "holds"
