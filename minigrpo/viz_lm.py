"""Plots for language-model runs: pure functions from the run's metric records to a ``Figure``.

At the edge like ``viz.py``: nothing in the core imports it; no pyplot, so it works headless.
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
