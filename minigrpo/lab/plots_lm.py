"""Plots for language-model runs: pure functions from the run's metric records to a ``Figure``.

At the edge like ``lab/plots.py``: nothing in the core imports it; no pyplot, so it works headless.
The records are the lines of a run folder's ``metrics.jsonl`` (``TrainResult.metrics``).
"""
from __future__ import annotations

from matplotlib.figure import Figure


def _smooth(xs: list[float], k: int) -> list[float]:
    """Trailing moving average over k points (shorter at the start)."""
    out, acc = [], 0.0
    for i, x in enumerate(xs):
        acc += x
        if i >= k:
            acc -= xs[i - k]
        out.append(acc / min(i + 1, k))
    return out


def plot_lm_run(records: list[dict], title: str = "") -> Figure:
    """Three panels over steps: reward (raw and smoothed, with each component), sampled
    KL(π ‖ π_anchor) per completion, and held-out greedy accuracy against the anchor's (step 0)."""
    steps = [r for r in records if "reward" in r]
    evals = [r for r in records if "test_accuracy" in r]
    fig = Figure(figsize=(12, 3.4), layout="constrained")
    ax_r, ax_kl, ax_acc = fig.subplots(1, 3)
    x = [r["step"] for r in steps]
    k = max(1, len(steps) // 20)
    if steps:
        ax_r.plot(x, [r["reward"] for r in steps], color="C0", alpha=0.25, lw=1)
        ax_r.plot(x, _smooth([r["reward"] for r in steps], k), color="C0", label="reward r")
        for i, name in enumerate(sorted(n for n in steps[0] if n.startswith("reward/"))):
            ax_r.plot(x, _smooth([r[name] for r in steps], k), color=f"C{i + 2}", lw=1, ls="--", label=name)
        ax_kl.plot(x, [r["kl"] for r in steps], color="C1", alpha=0.25, lw=1)
        ax_kl.plot(x, _smooth([r["kl"] for r in steps], k), color="C1")
    ax_r.set(xlabel="step", ylabel="mean reward of the sampled group", title="reward")
    ax_r.legend(fontsize=8)
    ax_kl.set(xlabel="step", ylabel="nats per completion", title="KL(π ‖ π_anchor), sampled")
    if evals:
        ax_acc.plot([r["step"] for r in evals], [r["test_accuracy"] for r in evals], "o-", color="C0", label="policy")
        ax_acc.axhline(evals[0]["test_accuracy"], color="0.55", ls=":", label="anchor (step 0)")
        ax_acc.legend(fontsize=8)
    ax_acc.set(xlabel="step", ylabel="exact-answer accuracy (greedy)", title="held-out accuracy", ylim=(0, 1))
    if title:
        fig.suptitle(title)
    return fig


def plot_hacking(results: dict, title: str = "Reward hacking: the proxy against the truth") -> Figure:
    """Three panels, one line per setting of ``experiments.reward_hacking``: the proxy reward the
    policy optimises, the true reward (exact answer) it is not told about, and the sampled KL."""
    fig = Figure(figsize=(12, 3.4), layout="constrained")
    axes = fig.subplots(1, 3)
    panels = [("reward/proxy", "proxy reward (what GRPO maximises)"),
              ("reward/correct", "true reward: exact answer"), ("kl", "KL(π ‖ π_anchor) per completion")]
    for i, (label, res) in enumerate(results.items()):
        recs = res["records"]
        x = [r["step"] for r in recs]
        k = max(1, len(recs) // 15)
        for ax, (key, _) in zip(axes, panels):
            ax.plot(x, _smooth([r[key] for r in recs], k), color=f"C{i}", label=label)
    for ax, (_, name) in zip(axes, panels):
        ax.set(xlabel="step", title=name)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    return fig


def plot_accuracy_curves(curves: dict[str, list[tuple[int, float]]], target: float | None = None,
                         title: str = "held-out accuracy") -> Figure:
    """Held-out accuracy over steps for several runs {label: [(step, accuracy), …]}, with the target."""
    fig = Figure(figsize=(6, 3.6), layout="constrained")
    ax = fig.subplots()
    for i, (label, curve) in enumerate(curves.items()):
        ax.plot([s for s, _ in curve], [a for _, a in curve], "o-", ms=3, color=f"C{i}", label=label)
    if target is not None:
        ax.axhline(target, color="0.55", ls=":", label=f"target {target:.2f}")
    ax.set(xlabel="GRPO step", ylabel="exact-answer accuracy (greedy)", title=title, ylim=(0, 1))
    ax.legend(fontsize=8)
    return fig
