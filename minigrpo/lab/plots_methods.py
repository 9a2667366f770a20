"""Plots for notebook 13, GRPO beside PPO, DPO and offline GRPO, and the small tables behind them.

Pure functions from data to a ``matplotlib.figure.Figure`` (no pyplot: safe headless), at the edge
like ``lab/plots.py``. Two kinds of data come in:

* bandit runs, ``{method: BanditResult}`` or ``{method: dict}`` with the keys of ``BanditResult.summary()``
  (``policy``, ``optimum``, optionally ``fixed_point``; KLs are computed when absent);
* the measured language-model comparison written by ``bench/methods.py`` (``bench/methods.json``):
  ``{"settings": {...}, "runs": [{"setting", "method", "seed", "curve": [{"step", "reward_calls",
  "train_seconds", "test_accuracy", "eval/kl", ...}], "anchor_accuracy", "final_accuracy",
  "train_seconds", "peak_rss_mb", ...}]}`` (a run that failed has ``"error"`` instead of a curve).

=====================  =============================================================================
``plot_landing``        each method's final policy against π* and its own fixed point, per arm
``plot_kl_paths``       KL(π ‖ π*) over the steps of each bandit run
``plot_gap_vs_data``    log-log gap to π* against the number of pairs / logged pulls
``plot_method_curves``  held-out accuracy against reward calls or seconds: mean over seeds, min–max band
``summarise_methods``   per method of one setting: the seeds' numbers and their mean / min / max
``verdict``             "A beats B" on per-seed numbers: holds / does not hold / not distinguishable
=====================  =============================================================================
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure

from minigrpo.bandit.runner import BanditResult

NAMES = {"grpo": "GRPO", "grpo_seed": "seed GRPO", "grpo_deepseek": "DeepSeek GRPO", "rloo": "RLOO", "ppo": "PPO",
         "ppo_grpo_lr": "PPO at GRPO's lr", "dpo": "DPO", "ipo": "IPO", "offline_grpo": "offline GRPO"}
OFFLINE = ("dpo", "ipo", "offline_grpo")          # all their reward calls are spent before step 1
COLORS = {"grpo": "tab:blue", "grpo_seed": "tab:blue", "grpo_deepseek": "tab:cyan", "rloo": "tab:purple",
          "ppo": "tab:red", "ppo_grpo_lr": "tab:orange", "dpo": "tab:green", "ipo": "tab:pink", "offline_grpo": "tab:olive"}
X_KEYS = {"reward_calls": ("reward_calls", "reward calls"),
          "seconds": ("train_seconds", "training seconds (evaluation excluded)"),
          "train_seconds": ("train_seconds", "training seconds (evaluation excluded)")}


def _kl(p: Sequence[float], q: Sequence[float]) -> float:
    """KL(p ‖ q) of two probability lists (inf where q = 0 < p)."""
    total = 0.0
    for a, b in zip(p, q):
        if a > 0:
            total += math.inf if b <= 0 else a * math.log(a / b)
    return total


def _probs(name: str, key: str, value, K: int | None = None) -> list[float]:
    try:
        p = [float(x) for x in value]
    except TypeError:
        raise ValueError(f"{name}: {key} must be a list of probabilities, got {value!r}") from None
    if not p or (K is not None and len(p) != K):
        raise ValueError(f"{name}: {key} has {len(p)} entries, expected {K if K is not None else 'at least 1'}")
    if any(not math.isfinite(x) or x < 0 for x in p) or abs(sum(p) - 1) > 1e-4:
        raise ValueError(f"{name}: {key} must be probabilities ≥ 0 summing to 1, got {p}")
    return p


def _landing(name: str, res) -> dict:
    """One method's landing as plain lists: policy, optimum, fixed point (or None) and the KLs."""
    if isinstance(res, BanditResult):
        res = res.summary()
    if not isinstance(res, Mapping) or "policy" not in res or "optimum" not in res:
        raise ValueError(f"plot_landing: {name!r} must be a BanditResult or a dict with 'policy' and 'optimum' "
                         f"(BanditResult.summary()), got {type(res).__name__}")
    policy = _probs(name, "policy", res["policy"])
    optimum = _probs(name, "optimum", res["optimum"], len(policy))
    fixed = res.get("fixed_point")
    fixed = None if fixed is None else _probs(name, "fixed_point", fixed, len(policy))
    return {"policy": policy, "optimum": optimum, "fixed_point": fixed,
            "kl_to_optimum": float(res.get("kl_to_optimum", _kl(policy, optimum))),
            "kl_to_fixed_point": None if fixed is None else float(res.get("kl_to_fixed_point", _kl(policy, fixed)))}


def plot_landing(results: Mapping[str, BanditResult | dict], ncols: int = 3) -> Figure:
    """One panel per method: the final policy π, the optimum π* and, where the method has its own
    (IPO, offline GRPO), its fixed point, as grouped bars per arm; the KLs in each panel's title."""
    if not isinstance(results, Mapping) or not results:
        raise ValueError("plot_landing: give a non-empty dict {method: BanditResult or summary dict}")
    rows = {name: _landing(name, res) for name, res in results.items()}
    Ks = {len(r["policy"]) for r in rows.values()}
    if len(Ks) != 1:
        raise ValueError(f"plot_landing: every method must have the same arms; got K = {sorted(Ks)}")
    (K,) = Ks
    n = len(rows)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows + 0.5), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    for ax in axes[n:]:
        fig.delaxes(ax)
    for ax, (name, r) in zip(axes, rows.items()):
        bars = [("final π", r["policy"], "C0", None), ("π*", r["optimum"], "C3", None)]
        if r["fixed_point"] is not None:
            bars.append(("its own fixed point", r["fixed_point"], "C2", "//"))
        width = 0.8 / len(bars)
        for i, (label, p, color, hatch) in enumerate(bars):
            ax.bar([k + (i - (len(bars) - 1) / 2) * width for k in range(K)], p, width, color=color, hatch=hatch,
                   label=label, edgecolor="white" if hatch else None)
        title = f"{NAMES.get(name, name)}\nKL(π ‖ π*) = {r['kl_to_optimum']:.2g}"
        if r["kl_to_fixed_point"] is not None:
            title += f", KL(π ‖ own) = {r['kl_to_fixed_point']:.2g}"
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(K), [f"arm {k}" for k in range(K)], fontsize=8)
        ax.set_ylim(0, 1.05)
    axes[0].set_ylabel("probability")
    handles = {h.get_label(): h for ax in axes[:n] for h in ax.get_legend_handles_labels()[0]}
    fig.legend(list(handles.values()), list(handles), loc="outside upper center", ncols=3, frameon=False, fontsize=9)
    return fig


def plot_kl_paths(results: Mapping[str, BanditResult], floor: float = 1e-6) -> Figure:
    """KL(π ‖ π*) over the recorded steps of each run (log scale, clamped at ``floor``)."""
    if not isinstance(results, Mapping) or not results:
        raise ValueError("plot_kl_paths: give a non-empty dict {method: BanditResult}")
    fig = Figure(figsize=(7, 3.6), layout="constrained")
    ax = fig.add_subplot()
    for i, (name, res) in enumerate(results.items()):
        if not isinstance(res, BanditResult):
            raise ValueError(f"plot_kl_paths: {name!r} must be a BanditResult (it needs the history), "
                             f"got {type(res).__name__}")
        kl = res.kl_to_optimum()[:, 0].clamp_min(floor)
        ax.plot(res.record_steps.tolist(), kl.tolist(), color=COLORS.get(name, f"C{i}"), label=NAMES.get(name, name),
                ls="--" if name in OFFLINE else "-")
    ax.set(xscale="log", yscale="log", xlabel="step", ylabel="KL(π ‖ π*)", title="distance to π* along each run")
    ax.legend(fontsize=8, frameon=False)
    return fig


def plot_gap_vs_data(counts: Sequence[int], gaps: Sequence[float], label: str, *,
                     more: Mapping[str, Sequence[float]] | None = None, xlabel: str = "pairs / logged pulls",
                     guide: bool = True, title: str = "") -> Figure:
    """Log-log: the gap (e.g. KL(π ‖ π*)) against the amount of data; ``more`` adds series over the same
    counts (e.g. the gap to the method's own fixed point); ``guide`` a dashed ∝ 1/n line for the eye."""
    series = {label: gaps, **(more or {})}
    counts = list(counts)
    if not counts:
        raise ValueError("plot_gap_vs_data: counts is empty")
    if any(not (isinstance(c, (int, float)) and c > 0) for c in counts):
        raise ValueError(f"plot_gap_vs_data: counts must be positive numbers (a log axis), got {counts}")
    for name, ys in series.items():
        ys = list(ys)
        if len(ys) != len(counts):
            raise ValueError(f"plot_gap_vs_data: {len(counts)} counts but {len(ys)} values for {name!r}")
        if any(not (math.isfinite(y) and y > 0) for y in ys):
            raise ValueError(f"plot_gap_vs_data: the values of {name!r} must be finite and > 0 (a log axis), got {ys}")
    fig = Figure(figsize=(5.6, 3.8), layout="constrained")
    ax = fig.add_subplot()
    for i, (name, ys) in enumerate(series.items()):
        ax.plot(counts, list(ys), "o-", color=f"C{i}", label=name)
    if guide:
        c = math.exp(statistics.mean(math.log(g * n) for g, n in zip(gaps, counts)))
        ax.plot(counts, [c / n for n in counts], ":", color="0.5", label="∝ 1/n (a guide)")
    ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel="KL", title=title or f"{label} against the data")
    ax.legend(fontsize=8, frameon=False)
    return fig


# --- the measured comparison (bench/methods.json) ------------------------------------------------

def _runs(bench: Mapping, setting: str, where: str) -> list[dict]:
    if not isinstance(bench, Mapping) or not isinstance(bench.get("runs"), list):
        raise ValueError(f"{where}: bench must be the dict of bench/methods.json, with a 'runs' list")
    runs = [r for r in bench["runs"] if r.get("setting") == setting]
    if not runs:
        have = sorted({r.get("setting") for r in bench["runs"]})
        raise ValueError(f"{where}: no run for setting {setting!r}; the bench has {have}")
    return runs


def _by_method(runs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in sorted(runs, key=lambda r: r.get("seed", 0)):
        out.setdefault(r["method"], []).append(r)
    return out


def method_band(runs: Sequence[dict], x: str, y: str = "test_accuracy"):
    """Mean over the runs (seeds) and the min–max band, at the evaluation steps they share:
    (xs, mean, lo, hi), each a list (empty when they share none)."""
    steps = sorted(set.intersection(*(set(p["step"] for p in r["curve"] if y in p) for r in runs)))
    xs, mean, lo, hi = [], [], [], []
    for t in steps:
        pts = [next(p for p in r["curve"] if p["step"] == t) for r in runs]
        vals = [p[y] for p in pts]
        xs.append(statistics.mean(p[x] for p in pts))
        mean.append(statistics.mean(vals))
        lo.append(min(vals))
        hi.append(max(vals))
    return xs, mean, lo, hi


def plot_method_curves(bench: Mapping, setting: str, x: str = "reward_calls", y: str = "test_accuracy") -> Figure:
    """Held-out accuracy (or any curve key ``y``) against reward calls or training seconds, one line per
    method: the mean over its seeds, the band their min–max; offline methods dashed (their reward calls
    are all spent before step 1, so on the reward-call axis they jump at once); the anchor dotted."""
    if x not in X_KEYS:
        raise ValueError(f"plot_method_curves: x={x!r} must be one of {sorted(X_KEYS)}")
    key, xlabel = X_KEYS[x]
    methods = {m: [r for r in rs if "error" not in r and r.get("curve")]
               for m, rs in _by_method(_runs(bench, setting, "plot_method_curves")).items()}
    order = list(NAMES)
    methods = dict(sorted(((m, rs) for m, rs in methods.items() if rs),
                          key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
    if not methods:
        raise ValueError(f"plot_method_curves: every run of setting {setting!r} failed; nothing to draw")
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    anchors = []
    for i, (m, rs) in enumerate(methods.items()):
        xs, mean, lo, hi = method_band(rs, key, y)
        if not xs:
            continue
        anchors += [r["curve"][0][y] for r in rs if r["curve"][0]["step"] == 0 and y in r["curve"][0]]
        if m in OFFLINE and key == "reward_calls" and len(xs) > 1 and xs[0] == 0:
            # the data is bought before step 1: at its reward calls the policy is still the anchor
            xs, mean, lo, hi = xs[:1] + xs[1:2] + xs[1:], mean[:1] * 2 + mean[1:], lo[:1] * 2 + lo[1:], hi[:1] * 2 + hi[1:]
        color = COLORS.get(m, f"C{i}")
        ax.plot(xs, mean, "--" if m in OFFLINE else "-", marker="o", ms=3, color=color,
                label=f"{NAMES.get(m, m)} (n={len(rs)})")
        ax.fill_between(xs, lo, hi, color=color, alpha=0.15, lw=0)
    if anchors:
        ax.axhline(statistics.mean(anchors), color="0.5", ls=":", lw=1, label="anchor (step 0)")
    description = bench.get("settings", {}).get(setting, "")
    ax.set(xlabel=xlabel, ylabel=y, title=f"{setting}: {description}" if description else setting)
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return fig


def _final(run: dict, key: str) -> float:
    vals = [p[key] for p in run["curve"] if key in p]
    return vals[-1] if vals else math.nan


def _first(run: dict, key: str) -> float:
    vals = [p[key] for p in run["curve"] if key in p]
    return vals[0] if vals else math.nan


def _dip(run: dict) -> float:
    """The largest fall of held-out accuracy below its best so far (0: it never fell)."""
    best, dip = -math.inf, 0.0
    for p in run["curve"]:
        if "test_accuracy" in p:
            best = max(best, p["test_accuracy"])
            dip = max(dip, best - p["test_accuracy"])
    return dip


def _reach(run: dict, target: float, key: str):
    """``key`` (reward_calls or train_seconds) at the first evaluation after step 0 with accuracy ≥ target;
    None when never reached."""
    return next((p[key] for p in run["curve"] if p["step"] > 0 and p.get("test_accuracy", -1) >= target), None)


def summarise_methods(bench: Mapping, setting: str) -> dict:
    """Per method of ``setting``: per-seed lists (``final``, ``anchor``, ``seconds``, ``calls``, ``kl``,
    ``rss``, ``dip``, ``calls_to_target``, ``seconds_to_target``, ``proxy``/``true`` as (first, last)
    held-out greedy rewards) and ``errors``. The target is bench/methods.py's: the anchor's accuracy plus
    3/4 of the way to the best method's mean final accuracy (None when no method beat the anchor)."""
    methods = _by_method(_runs(bench, setting, "summarise_methods"))
    good = {m: [r for r in rs if "error" not in r and r.get("curve")] for m, rs in methods.items()}
    anchor = statistics.mean(r["anchor_accuracy"] for rs in good.values() for r in rs) if any(good.values()) else math.nan
    best = max((statistics.mean(r["final_accuracy"] for r in rs) for rs in good.values() if rs), default=math.nan)
    target = anchor + 0.75 * (best - anchor) if best > anchor else None
    out = {}
    for m, rs in methods.items():
        ok = good[m]
        row = {"seeds": [r["seed"] for r in ok], "errors": [r["error"] for r in rs if "error" in r]}
        row.update(final=[r["final_accuracy"] for r in ok], anchor=[r["anchor_accuracy"] for r in ok],
                   calls=[r["reward_calls"] for r in ok], seconds=[r["train_seconds"] for r in ok],
                   kl=[_final(r, "eval/kl") for r in ok], rss=[r["peak_rss_mb"] for r in ok],
                   dip=[_dip(r) for r in ok],
                   proxy=[(_first(r, "eval/greedy/reward_model"), _final(r, "eval/greedy/reward_model")) for r in ok],
                   true=[(_first(r, "eval/greedy/correct"), _final(r, "eval/greedy/correct")) for r in ok],
                   calls_to_target=[None if target is None else _reach(r, target, "reward_calls") for r in ok],
                   seconds_to_target=[None if target is None else _reach(r, target, "train_seconds") for r in ok])
        out[m] = row
    return {"target": target, "methods": out}


def verdict(a: Sequence[float | None], b: Sequence[float | None], higher_is_better: bool = True,
            tol: float = 0.0) -> str:
    """Does A beat B, on one number per seed? "holds" when every seed of A beats every seed of B by more than
    ``tol`` (the ranges do not overlap), "does not hold" when every seed of B beats every seed of A by more than
    ``tol``, else "not distinguishable" (the ranges overlap: with a few seeds, the noise is as large as the
    difference). None (e.g. a target never reached) counts as the worst value; "not measured" when either
    side has no number."""
    def score(v):
        return -math.inf if v is None else (v if higher_is_better else -v)

    a = [score(v) for v in a if v is None or not math.isnan(v)]
    b = [score(v) for v in b if v is None or not math.isnan(v)]
    if not a or not b:
        return "not measured"
    if min(a) > max(b) + tol:
        return "holds"
    if max(a) + tol < min(b):
        return "does not hold"
    return "not distinguishable"
