"""The bandit lab: sliders over ``run_bandit`` that redraw the plots of ``viz`` (notebook edge only).

Nothing here computes anything new: a change of a control builds a ``BanditConfig``, trains it with
``run_bandit`` and draws ``plot_arms``, ``plot_training`` and (for 3 arms) ``plot_simplex``.

    lab = bandit_lab(BanditConfig(means=[0.2, 0.5, 0.8]))
    lab           # show it; moving a control retrains and redraws
    lab.update()  # or redraw explicitly (a headless notebook run calls this once)
"""
from __future__ import annotations

import io
from dataclasses import replace

import ipywidgets as widgets
from IPython.display import Image, display

from minigrpo.bandit.config import BASELINE_CHOICES, BanditConfig

from minigrpo.bandit.runner import BanditResult, run_bandit
from minigrpo.lab.plots import plot_arms, plot_simplex, plot_training

KL_CHOICES = ("reward:k1", "reward:k3", "loss:k3", "loss:k1", "none")
"""The KL placements offered by the lab (any other valid one given in the config is added)."""


def _png(fig) -> Image:
    """A figure as a PNG image, so it shows the same under any matplotlib backend (headless included)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return Image(data=buf.getvalue(), format="png")


class BanditLab(widgets.VBox):
    """The lab's widget box: controls on top, the plots of the last run below.

    ==============  ==========================================================
    ``controls``     dict of the control widgets: beta, baseline, kl, steps
    ``output``       the ``Output`` widget the plots are drawn into
    ``config``       the ``BanditConfig`` of the last run (None before the first)
    ``result``       the ``BanditResult`` of the last run (None before the first)
    ``update()``     retrain with the current controls and redraw
    ==============  ==========================================================
    """

    def __init__(self, cfg: BanditConfig):
        self.base_config = cfg
        self.config: BanditConfig | None = None
        self.result: BanditResult | None = None
        kl_options = KL_CHOICES if cfg.kl in KL_CHOICES else KL_CHOICES + (cfg.kl,)
        style = {"description_width": "60px"}
        self.controls = {
            "beta": widgets.FloatLogSlider(value=max(cfg.beta, 1e-3), base=10, min=-3, max=1, step=0.05,
                                           description="β", readout_format=".3g", continuous_update=False,
                                           style=style),
            "baseline": widgets.Dropdown(options=list(BASELINE_CHOICES), value=cfg.baseline, description="baseline",
                                         style=style),
            "kl": widgets.Dropdown(options=list(kl_options), value=cfg.kl, description="KL", style=style),
            "steps": widgets.IntSlider(value=cfg.steps, min=100, max=max(5000, cfg.steps), step=100,
                                       description="steps", continuous_update=False, style=style),
        }
        self.summary = widgets.HTML()
        self.output = widgets.Output()
        for control in self.controls.values():
            control.observe(lambda change: self.update(), names="value")
        c = self.controls
        rows = [widgets.HBox([c["beta"], c["steps"]]), widgets.HBox([c["baseline"], c["kl"]]), self.summary,
                self.output]
        super().__init__(rows)

    def current_config(self) -> BanditConfig:
        """The base config with the controls' values swapped in (validated by ``BanditConfig``)."""
        c = self.controls
        return replace(self.base_config, beta=float(c["beta"].value), baseline=c["baseline"].value,
                       kl=c["kl"].value, steps=int(c["steps"].value))

    def update(self) -> BanditResult | None:
        """Retrain with the current controls and redraw. Returns the result (None if the config is invalid)."""
        with self.output:
            self.output.clear_output(wait=True)
            try:
                cfg = self.current_config()
            except ValueError as err:                 # e.g. a group baseline with G = 1: say so, don't crash
                self.summary.value = f"<b>invalid setting:</b> {err}"
                return None
            result = run_bandit(cfg)
            self.config, self.result = cfg, result
            s = result.summary()
            self.summary.value = (
                f"KL(π ‖ π*) = <b>{s['kl_to_optimum']:.3g}</b> &nbsp; "
                f"E_π[μ] = {s['expected_reward']:.3f} (π*: {s['optimum_expected_reward']:.3f}) &nbsp; "
                f"KL(π ‖ π_anchor) = {s['kl_to_anchor']:.3g} &nbsp; trained in {s['wall_seconds']:.2f} s")
            figures = [plot_arms(result), plot_training(result)]
            if cfg.K == 3:
                figures.append(plot_simplex(result))
            display(*[_png(f) for f in figures])
        return result


def bandit_lab(cfg: BanditConfig | None = None) -> BanditLab:
    """An interactive bandit: β (log slider), baseline, KL placement and steps; every change retrains
    ``cfg`` with those fields replaced and redraws. Call ``.update()`` to draw the first time."""
    return BanditLab(cfg if cfg is not None else BanditConfig())
