"""Plots for bandit runs: pure functions from a ``BanditResult`` to a matplotlib ``Figure``.

This module sits at the edge: core modules never import it, and it imports nothing from them
but exact formulas (``optimum.py``) and the result type. Every function builds its own
``matplotlib.figure.Figure`` (no pyplot, no global figure registry), so it is safe under any
backend, headless included, and a notebook shows the figure by returning or ``display``-ing it.

================  ===================================================================
``plot_arms``      anchor vs final policy vs π* per arm (grouped bars)
``plot_training``  E_π[μ], KL(π ‖ π_anchor) and KL(π ‖ π*) over the recorded steps
``plot_simplex``   the policy's path on the probability triangle (3 arms only)
``plot_frontier``  a β sweep on the reward–KL plane against the exact π* frontier
``save_bandit_report``  all of the above as PNGs in a run directory
================  ===================================================================
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from matplotlib.collections import LineCollection
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from torch import Tensor

from minigrpo.bandit.runner import BanditResult
from minigrpo.core.optimum import expected_reward, kl_divergence, optimal_policy

# One colour per role, the same in every plot.
ANCHOR_COLOR = "0.55"
POLICY_COLOR = "C0"
OPTIMUM_COLOR = "C3"


def _check_run(result: BanditResult, run: int) -> int:
    R = result.probs.shape[1]
    if not (-R <= run < R):
        raise ValueError(f"run={run!r} is out of range: this result holds {R} run(s) (0..{R - 1})")
    return run % R


def _title(result: BanditResult, run: int) -> str:
    cfg = result.config
    return (f"β = {result.betas[run].item():.3g}, kl = {cfg.kl}, baseline = {cfg.baseline}, "
            f"G = {cfg.group_size}, {cfg.steps} steps")


def _arm_labels(result: BanditResult) -> list[str]:
    return [f"arm {k}\nμ = {m:.3g}" for k, m in enumerate(result.means.tolist())]


def plot_arms(result: BanditResult, run: int = 0) -> Figure:
    """Grouped bars per arm: π_anchor, the final policy π and the closed-form optimum π*."""
    run = _check_run(result, run)
    K = result.means.shape[0]
    bars = [("anchor π_anchor", result.anchor, ANCHOR_COLOR),
            ("final policy π", result.policy[run], POLICY_COLOR),
            ("optimum π*", result.optimum[run], OPTIMUM_COLOR)]
    fig = Figure(figsize=(max(5.0, 1.3 * K + 2), 3.6), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(bars)
    for i, (label, p, color) in enumerate(bars):
        x = [k + (i - 1) * width for k in range(K)]
        ax.bar(x, p.tolist(), width, label=label, color=color)
    ax.set_xticks(range(K), _arm_labels(result))
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1.05)
    ax.legend(frameon=False, ncols=3, loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=9)
    fig.suptitle(_title(result, run), fontsize=9)
    return fig


def plot_training(result: BanditResult, run: int = 0) -> Figure:
    """Three panels over the recorded steps: expected reward E_π[μ] (with the noisy sampled mean
    reward behind it), KL(π ‖ π_anchor), and KL(π ‖ π*) on a log scale. Dashed lines mark π*."""
    run = _check_run(result, run)
    steps = result.record_steps.tolist()
    log_opt = result.optimum[run].log()
    fig = Figure(figsize=(12, 3.4), layout="constrained")
    ax_r, ax_a, ax_o = fig.subplots(1, 3)

    sampled = result.reward[:, run]                                     # (steps,)
    ax_r.plot(range(1, len(sampled) + 1), sampled.tolist(), color=POLICY_COLOR, alpha=0.2, lw=0.6,
              label="sampled mean reward r̄")
    ax_r.plot(steps, result.expected_reward()[:, run].tolist(), color=POLICY_COLOR, label="E_π[μ]")
    ax_r.axhline(expected_reward(log_opt, result.means).item(), color=OPTIMUM_COLOR, ls="--", label="E_π*[μ]")
    ax_r.set_title("expected reward")
    ax_r.legend(frameon=False, fontsize=8)

    ax_a.plot(steps, result.kl_to_anchor()[:, run].tolist(), color=POLICY_COLOR, label="KL(π ‖ π_anchor)")
    ax_a.axhline(kl_divergence(log_opt, result.anchor.log()).item(), color=OPTIMUM_COLOR, ls="--",
                 label="KL(π* ‖ π_anchor)")
    ax_a.set_title("KL to the anchor")
    ax_a.legend(frameon=False, fontsize=8)

    kl_opt = result.kl_to_optimum()[:, run].clamp_min(1e-12)           # log scale: keep it positive
    ax_o.plot(steps, kl_opt.tolist(), color=POLICY_COLOR)
    ax_o.set_yscale("log")
    ax_o.set_title("KL(π ‖ π*)  (0 at the optimum)")

    for ax in (ax_r, ax_a, ax_o):
        ax.set_xlabel("step")
    fig.suptitle(_title(result, run), fontsize=9)
    return fig


# --- the 2-simplex -------------------------------------------------------------------------------

_CORNERS = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])   # arm 0, arm 1, arm 2


def to_triangle(p: Tensor) -> Tensor:
    """Barycentric → Cartesian: a distribution over 3 arms (..., 3) ↦ its point in the triangle (..., 2)."""
    return p.to(_CORNERS.dtype) @ _CORNERS


def plot_simplex(result: BanditResult, run: int = 0, marks: dict[str, Tensor] | None = None) -> Figure:
    """The policy's path on the probability triangle of a 3-armed bandit, coloured by step.

    Each corner is a deterministic policy on one arm. The anchor (start), the final policy and π*
    are marked; the dotted curve is π*(β) for every β, from the anchor (β → ∞) to the best arm (β → 0).
    ``marks`` adds labelled points, e.g. ``{"reverse-KL fixed point": probs}`` with probs of shape (3,).
    """
    run = _check_run(result, run)
    K = result.means.shape[0]
    if K != 3:
        raise ValueError(f"plot_simplex draws the probability triangle of a 3-armed bandit; this result has K={K} "
                         f"arms (use plot_arms instead)")
    fig = Figure(figsize=(6.2, 4.6), layout="constrained")
    ax = fig.add_subplot()
    corners = _CORNERS.tolist()
    ax.fill(*zip(*corners), color="0.96", ec="0.3", lw=1)
    for frac in (0.25, 0.5, 0.75):                     # faint lines of constant π(arm k)
        for k in range(3):
            a, b = [c for j, c in enumerate(_CORNERS) if j != k]
            p, q = frac * _CORNERS[k] + (1 - frac) * a, frac * _CORNERS[k] + (1 - frac) * b
            ax.plot([p[0], q[0]], [p[1], q[1]], color="0.85", lw=0.6, zorder=0)
    for k, (label, (x, y)) in enumerate(zip(_arm_labels(result), corners)):
        ax.annotate(label.replace("\n", ", "), (x, y), ha=["right", "left", "center"][k],
                    va="bottom" if k == 2 else "top", xytext=[(-4, -4), (4, -4), (0, 6)][k],
                    textcoords="offset points", fontsize=9)

    betas = torch.logspace(-3, 3, 300, dtype=torch.float64)[:, None]     # π*(β) curve, β on a log grid
    curve = to_triangle(optimal_policy(result.anchor.double().log(), result.means.double(), betas).exp())
    ax.plot(curve[:, 0].numpy(), curve[:, 1].numpy(), ":", color=OPTIMUM_COLOR, lw=1, label="π*(β), all β")

    xy = to_triangle(result.probs[:, run])                                # (n_records, 2)
    segments = torch.stack([xy[:-1], xy[1:]], 1).numpy()                  # (n_records − 1, 2, 2)
    steps = result.record_steps[1:].clamp_min(1).double().numpy()
    line = LineCollection(segments, cmap="viridis", lw=2, norm=LogNorm(1, max(steps.max(), 2)))
    line.set_array(steps)                                                 # log colour: most motion is early
    ax.add_collection(line)
    fig.colorbar(line, ax=ax, shrink=0.6, pad=0.01, label="step (log scale)")

    for p, marker, color, label in [(result.anchor, "s", ANCHOR_COLOR, "anchor (start)"),
                                    (result.policy[run], "o", POLICY_COLOR, "final π"),
                                    (result.optimum[run], "*", OPTIMUM_COLOR, "π* at this β")]:
        x, y = to_triangle(p).tolist()
        ax.plot(x, y, marker, color=color, ms=14 if marker == "*" else 9, mec="k", mew=0.6, label=label,
                ls="none")
    for i, (label, p) in enumerate((marks or {}).items()):
        x, y = to_triangle(torch.as_tensor(p).reshape(3)).tolist()
        ax.plot(x, y, "D", color=f"C{(i + 2) % 10}", ms=8, mec="k", mew=0.6, label=label, ls="none")
    ax.set_aspect("equal")
    ax.set_xlim(-0.12, 1.12)
    ax.set_ylim(-0.3, 0.96)
    ax.axis("off")
    ax.legend(frameon=False, loc="lower center", ncols=2, fontsize=8)
    fig.suptitle(_title(result, run), fontsize=9)
    return fig


# --- the β sweep ---------------------------------------------------------------------------------

def frontier(anchor: Tensor, means: Tensor, betas: Tensor) -> tuple[Tensor, Tensor]:
    """The exact reward–KL frontier traced by π*(β): (KL(π* ‖ π_anchor), E_π*[μ]) for each β."""
    log_anchor = anchor.double().log()
    log_opt = optimal_policy(log_anchor, means.double(), betas.double()[:, None])   # (B, K)
    return kl_divergence(log_opt, log_anchor), expected_reward(log_opt, means.double())


def plot_frontier(sweep_result: BanditResult) -> Figure:
    """Each run of a β sweep on the (KL(π ‖ π_anchor), E_π[μ]) plane, against the exact frontier of π*.

    Every π* is the best reward for its KL budget, so a run can only sit on or below the curve;
    a thin line joins each run to its own π*. Colour is β.
    """
    res = sweep_result
    betas = res.betas
    positive = betas[betas > 0]
    lo = positive.min().item() if len(positive) else 1e-2
    hi = positive.max().item() if len(positive) else 1.0
    grid = torch.logspace(math.log10(lo) - 1.5, math.log10(hi) + 1.5, 400)
    kl_curve, reward_curve = frontier(res.anchor, res.means, grid)

    kl_runs = res.kl_to_anchor()[-1]                                        # (R,)
    reward_runs = res.expected_reward()[-1]
    log_opt, log_anchor = res.optimum.log(), res.anchor.log()
    kl_opt, reward_opt = kl_divergence(log_opt, log_anchor), expected_reward(log_opt, res.means)

    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(kl_curve.numpy(), reward_curve.numpy(), color=OPTIMUM_COLOR, lw=1.5, label="exact frontier π*(β)")
    ax.axhline(res.means.max().item(), color="0.7", ls=":", lw=1, label="best arm")
    for x0, y0, x1, y1 in zip(kl_runs.tolist(), reward_runs.tolist(), kl_opt.tolist(), reward_opt.tolist()):
        ax.plot([x0, x1], [y0, y1], color="0.6", lw=0.7, zorder=1)
    ax.scatter(kl_opt.numpy(), reward_opt.numpy(), s=30, facecolors="none", edgecolors=OPTIMUM_COLOR, zorder=2, label="π* at each β")
    norm = LogNorm(vmin=max(lo, 1e-12), vmax=max(hi, lo * 1.0001))
    dots = ax.scatter(kl_runs.numpy(), reward_runs.numpy(), c=betas.clamp_min(norm.vmin).numpy(), cmap="viridis", norm=norm, s=36,
                      edgecolors="k", linewidths=0.5, zorder=3, label="trained π")
    fig.colorbar(dots, ax=ax, label="β")
    ax.plot(0, expected_reward(log_anchor, res.means).item(), "s", color=ANCHOR_COLOR, mec="k", mew=0.6, ms=8,
            ls="none", label="anchor")
    ax.set_xlabel("KL(π ‖ π_anchor)")
    ax.set_ylabel("E_π[μ]")
    cfg = res.config
    ax.set_title(f"β sweep: {len(betas)} runs, kl = {cfg.kl}, baseline = {cfg.baseline}, {cfg.steps} steps",
                 fontsize=9)
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    return fig


# --- files ---------------------------------------------------------------------------------------

def save_bandit_report(result: BanditResult, run_dir, sweep: BanditResult | None = None, *, run: int = 0,
                       dpi: int = 120) -> list[Path]:
    """Write arms.png, training.png, simplex.png (3 arms only) and frontier.png (with a sweep) into
    ``run_dir`` (created if needed) and return their paths."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    figures = {"arms": plot_arms(result, run), "training": plot_training(result, run)}
    if result.means.shape[0] == 3:
        figures["simplex"] = plot_simplex(result, run)
    if sweep is not None:
        figures["frontier"] = plot_frontier(sweep)
    paths = []
    for name, fig in figures.items():
        path = run_dir / f"{name}.png"
        fig.savefig(path, dpi=dpi)
        paths.append(path)
    return paths
