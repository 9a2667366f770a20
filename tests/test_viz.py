"""Smoke tests for the plots: each function draws a short real run and the report writes real PNGs.

(The numbers plotted are tested elsewhere against exact references; here we check the plotting edge.)
"""
from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")

from matplotlib.figure import Figure  # noqa: E402

import minigrpo as mg  # noqa: E402
from minigrpo.lab import plots as viz  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run3():
    cfg = mg.BanditConfig(means=[0.2, 0.5, 0.8], anchor=[0.7, 0.2, 0.1], beta=0.1, steps=200, group_size=16)
    return mg.run_bandit(cfg)


@pytest.fixture(scope="module")
def sweep3():
    cfg = mg.BanditConfig(means=[0.2, 0.5, 0.8], anchor=[0.7, 0.2, 0.1], steps=200, group_size=16)
    return mg.sweep_beta(cfg, [0.03, 0.1, 0.3, 1.0])


@pytest.fixture(scope="module")
def run5():
    return mg.run_bandit(mg.BanditConfig(steps=200, group_size=16))     # the default 5-armed bandit


def _is_png(path) -> bool:
    data = path.read_bytes()
    return len(data) > 1000 and data.startswith(PNG_MAGIC)


@pytest.mark.smoke
@pytest.mark.parametrize("plot", [viz.plot_arms, viz.plot_training, viz.plot_simplex])
def test_plots_return_figures(plot, run3, tmp_path):
    fig = plot(run3)
    assert isinstance(fig, Figure) and fig.axes
    fig.savefig(tmp_path / "fig.png")
    assert _is_png(tmp_path / "fig.png")


@pytest.mark.smoke
def test_plot_frontier(sweep3, tmp_path):
    fig = viz.plot_frontier(sweep3)
    assert isinstance(fig, Figure)
    fig.savefig(tmp_path / "frontier.png")
    assert _is_png(tmp_path / "frontier.png")


@pytest.mark.smoke
def test_plots_pick_a_run_of_a_sweep(sweep3):
    for run in range(len(sweep3.betas)):
        viz.plot_arms(sweep3, run)
    with pytest.raises(ValueError, match="out of range"):
        viz.plot_training(sweep3, run=4)


def test_plot_simplex_needs_three_arms(run5):
    with pytest.raises(ValueError, match="3-armed"):
        viz.plot_simplex(run5)


def test_to_triangle_puts_corners_and_centre_right():
    import torch
    xy = viz.to_triangle(torch.eye(3))
    assert torch.allclose(xy, viz._CORNERS)
    centre = viz.to_triangle(torch.full((3,), 1 / 3))
    assert torch.allclose(centre, viz._CORNERS.mean(0))


def test_frontier_is_monotone(run3):
    """Along π*(β), lowering β buys reward with KL: both coordinates fall as β grows."""
    import torch
    kl, reward = viz.frontier(run3.anchor, run3.means, torch.logspace(-2, 1, 50))
    assert (kl.diff() <= 1e-12).all() and (reward.diff() <= 1e-12).all()


@pytest.mark.smoke
def test_save_bandit_report(run3, sweep3, run5, tmp_path):
    paths = viz.save_bandit_report(run3, tmp_path / "r3", sweep=sweep3)
    assert [p.name for p in paths] == ["arms.png", "training.png", "simplex.png", "frontier.png"]
    assert all(_is_png(p) for p in paths)

    paths = viz.save_bandit_report(run5, tmp_path / "r5")                 # K = 5: no simplex, no sweep
    assert [p.name for p in paths] == ["arms.png", "training.png"]
    assert all(_is_png(p) for p in paths)


@pytest.mark.smoke
def test_plot_simplex_extra_marks(run3):
    fig = viz.plot_simplex(run3, marks={"uniform": [1 / 3, 1 / 3, 1 / 3]})
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "uniform" in labels
