"""Plots of the KL variants: the KL per reasoning step, and the embedding drift beside the sampled KL.

Pure functions from numbers (a run's ``metrics.jsonl`` records, or ``runs.experiments.step_kl``'s
profiles) to a ``matplotlib.figure.Figure``: no pyplot, headless-safe, testable on hand-made data.
"""
from __future__ import annotations

from matplotlib.figure import Figure


def plot_step_kl_profile(profiles: dict[str, list[float]], title: str = "KL per reasoning step") -> Figure:
    """Grouped bars: for each step s (x), each run's mean sampled KL of that step {label: [KL_0, KL_1, …]}."""
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.subplots()
    n = max(1, len(profiles))
    width = 0.8 / n
    for i, (label, kl) in enumerate(profiles.items()):
        xs = [s - 0.4 + width * (i + 0.5) for s in range(len(kl))]
        ax.bar(xs, kl, width, color=f"C{i}", label=label)
    S = max((len(kl) for kl in profiles.values()), default=0)
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set(xticks=range(S), xticklabels=[f"step {s + 1}" for s in range(S)], ylabel="nats per completion (Σ k1)",
           title=title)
    if profiles:
        ax.legend(fontsize=8)
    return fig


def plot_step_kl_curves(records: list[dict], title: str = "KL of each step over training", smooth: int = 5,
                        max_steps: int | None = None) -> Figure:
    """One line per step s: ``kl/step/<s>`` over training steps (a trailing mean over ``smooth`` steps), with
    the whole completion's sampled ``kl`` dashed — the steps' lines add up to it where every step is present.
    ``max_steps``: draw only the first ones (a task's own steps, not the rare extra ones some completions write)."""
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.subplots()
    recs = [r for r in records if "kl/step_mean" in r]
    keys = sorted({k for r in recs for k in r if k.startswith("kl/step/")}, key=lambda k: int(k.rsplit("/", 1)[1]))
    keys = keys if max_steps is None else [k for k in keys if int(k.rsplit("/", 1)[1]) < max_steps]
    for i, key in enumerate(keys):
        pts = [(r["step"], r[key]) for r in recs if key in r]
        ax.plot([s for s, _ in pts], _trailing_mean([v for _, v in pts], smooth), color=f"C{i}",
                label=f"step {int(key.rsplit('/', 1)[1]) + 1}")
    if recs:
        ax.plot([r["step"] for r in recs], _trailing_mean([r["kl"] for r in recs], smooth), "--", color="0.3",
                label="whole completion")
        ax.legend(fontsize=8)
    ax.set(xlabel="GRPO step", ylabel="nats (Σ k1 over the step's tokens)", title=title)
    return fig


def plot_drift_against_kl(runs: dict[str, list[dict]], title: str = "embedding drift against the sampled KL") -> Figure:
    """Two panels from each run's evaluation records {label: records}: ``eval/kl`` (solid, left axis) and
    ``eval/embedding_drift`` (dotted, right axis) over steps; and one against the other, one point per
    evaluation. They measure different things (lm/embedding.py): whether they rise together is the question."""
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    ax_t, ax_xy = fig.subplots(1, 2)
    ax_d = ax_t.twinx()
    for i, (label, records) in enumerate(runs.items()):
        ev = [r for r in records if "eval/kl" in r and "eval/embedding_drift" in r]
        steps = [r["step"] for r in ev]
        kl, drift = [r["eval/kl"] for r in ev], [r["eval/embedding_drift"] for r in ev]
        ax_t.plot(steps, kl, "o-", ms=3, color=f"C{i}", label=f"{label}: KL")
        ax_d.plot(steps, drift, "s:", ms=3, color=f"C{i}", label=f"{label}: drift")
        ax_xy.plot(kl, drift, "o-", ms=4, color=f"C{i}", label=label)
    ax_t.set(xlabel="GRPO step", ylabel="eval/kl: nats per completion (solid)", title="over training")
    ax_d.set_ylabel("eval/embedding_drift: 1 − cos (dotted)")
    ax_xy.set(xlabel="eval/kl (nats per completion)", ylabel="eval/embedding_drift (1 − cos)",
              title="one point per evaluation")
    if runs:
        ax_xy.legend(fontsize=8)
    fig.suptitle(title)
    return fig


def _trailing_mean(xs: list[float], k: int) -> list[float]:
    k = max(1, k)
    return [sum(xs[max(0, i - k + 1):i + 1]) / len(xs[max(0, i - k + 1):i + 1]) for i in range(len(xs))]
