"""Reporting a run to TensorBoard, trackio or Weights & Biases: listeners at the edge.

``metrics.jsonl`` in the run folder is the source of truth; a reporter only receives the same records,
through the ``on_step(record)`` listener of ``train_lm``::

    check_report_to(["tensorboard"])                 # before any work: unknown or missing → ValueError
    with open_reporters(["tensorboard"], run_dir, cfg.to_dict(), run_dir.name) as report:
        train_lm(cfg, run_dir=run_dir, on_step=report)

What a record becomes:

==================  ========================================================================
``"step"``          the global step, the x-axis of every other value in the record
a finite number     a scalar under its own name (``reward``, ``reward/correct``, ``eval/greedy/reward``);
                    a bool, NaN or ±inf is left out that step
``"samples"``       a list of dicts (prompt, completion, reward, …): a table (TensorBoard: markdown text)
anything else       ignored
==================  ========================================================================

A reporter that raises while logging warns once and is switched off: a dashboard going down must not
end a training run. The libraries are imported when a reporter is opened, so importing this module
costs nothing.
"""
from __future__ import annotations

import html
import importlib.util
import json
import re
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from minigrpo.core.validate import is_real

REPORTERS = ("tensorboard", "trackio", "wandb")
PACKAGE = {"tensorboard": "tensorboard", "trackio": "trackio", "wandb": "wandb"}   # reporter → what it imports
PROJECT = "minigrpo"                     # the trackio / wandb project every run is filed under


# --- checking the names, before any work -----------------------------------------------------------

def _installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (an entry in ``sys.modules`` counts)."""
    if sys.modules.get(module) is not None:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_report_to(names) -> None:
    """Refuse, with a one-line ``ValueError``, a ``report_to`` that could not be honoured: not a list or
    tuple of strings, a name outside ``REPORTERS``, a name given twice, or a library not installed."""
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"report_to={names!r} is not allowed; give a list of names from {', '.join(REPORTERS)}")
    for i, name in enumerate(names):
        if name not in REPORTERS:
            raise ValueError(f"report_to={list(names)!r} is not allowed; {name!r} is unknown, choose from "
                             f"{', '.join(REPORTERS)}")
        if name in names[:i]:
            raise ValueError(f"report_to={list(names)!r} is not allowed; {name!r} is listed twice, give each "
                             "reporter once")
    for name in names:
        if not _installed(PACKAGE[name]):
            raise ValueError(f"report_to={list(names)!r} is not allowed here; {name!r} needs the {PACKAGE[name]} "
                             f"package: pip install {PACKAGE[name]}")


# --- reading a record ----------------------------------------------------------------------------------

def scalars_of(record: Mapping) -> dict[str, float]:
    """Every finite, non-bool number of ``record`` except ``step``, as a float under its own key."""
    return {k: float(v) for k, v in record.items() if k != "step" and is_real(v)}


def samples_of(record: Mapping) -> tuple[list[str], list[list]] | None:
    """``record["samples"]`` as (columns, rows): the columns are every key of the sample dicts, in the
    order first seen; a sample lacking a column has None there. None when the record has no samples."""
    samples = record.get("samples")
    if not isinstance(samples, (list, tuple)) or not samples or not all(isinstance(s, Mapping) for s in samples):
        return None
    columns = list(dict.fromkeys(k for s in samples for k in s))
    return [str(c) for c in columns], [[s.get(c) for c in columns] for s in samples]


_MARKDOWN = re.compile(r"([\\`*_\[\]|~])")


def _cell(value) -> str:
    """One markdown table cell: HTML and markdown punctuation escaped (a ``|`` would end the cell), a line
    break written as ``<br>`` (a newline would end the row)."""
    text = "" if value is None else str(value)
    text = _MARKDOWN.sub(r"\\\1", html.escape(text, quote=False))
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "<br>")


def markdown_table(columns: list[str], rows: list[list]) -> str:
    """A markdown table, as TensorBoard's text tab renders it."""
    lines = ["| " + " | ".join(_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# --- the reporters -------------------------------------------------------------------------------------

class Reporter(Protocol):
    """What one dashboard must provide: log one record's scalars (and samples, if any) at a step; close."""

    name: str

    def log(self, step: int, scalars: dict[str, float], samples: tuple[list[str], list[list]] | None) -> None: ...

    def close(self) -> None: ...


class TensorBoardReporter:
    """Event files under ``<run_dir>/tensorboard`` (``tensorboard --logdir <run_dir>``); the config is
    written once as text, samples as a markdown table under the text tag ``samples``."""

    name = "tensorboard"

    def __init__(self, run_dir: Path, config: dict):
        from torch.utils.tensorboard import SummaryWriter

        # flushed every 10 s rather than the default 120 s, so a live dashboard trails the run by little
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"), flush_secs=10)
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2, default=str) + "\n```", 0)

    def log(self, step, scalars, samples):
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)
        if samples is not None:
            self.writer.add_text("samples", markdown_table(*samples), step)

    def close(self):
        self.writer.flush()
        self.writer.close()


class WandbReporter:
    """A Weights & Biases run in project ``minigrpo``; its local files go under ``<run_dir>/wandb``."""

    name = "wandb"

    def __init__(self, run_dir: Path, config: dict, run_name: str):
        import wandb

        self.wandb = wandb
        wandb.init(project=PROJECT, name=run_name, config=config, dir=str(run_dir))

    def log(self, step, scalars, samples):
        data = dict(scalars)
        if samples is not None:
            columns, rows = samples
            data["samples"] = self.wandb.Table(columns=columns, data=rows)
        if data:
            self.wandb.log(data, step=step)

    def close(self):
        self.wandb.finish()


class TrackioReporter:
    """A trackio run in project ``minigrpo`` (local by default; ``trackio show`` opens the dashboard).
    Samples are logged as a ``trackio.Table`` where the installed trackio has one, else left out."""

    name = "trackio"

    def __init__(self, config: dict, run_name: str):
        import inspect

        import trackio

        self.trackio = trackio
        # trackio's early releases counted steps themselves and took no ``step``; there the step is a value
        self.takes_step = "step" in inspect.signature(trackio.log).parameters
        trackio.init(project=PROJECT, name=run_name, config=config)

    def log(self, step, scalars, samples):
        data = dict(scalars)
        table = getattr(self.trackio, "Table", None)          # a library whose API varies by version
        if samples is not None and table is not None:
            columns, rows = samples
            data["samples"] = table(columns=columns, data=rows)
        if not data:
            return
        if self.takes_step:
            self.trackio.log(data, step=step)
        else:
            self.trackio.log({"step": step, **data})

    def close(self):
        self.trackio.finish()


def _open_one(name: str, run_dir: Path, config: dict, run_name: str) -> Reporter:
    if name == "tensorboard":
        return TensorBoardReporter(run_dir, config)
    if name == "wandb":
        return WandbReporter(run_dir, config, run_name)
    return TrackioReporter(config, run_name)


# --- the listener -------------------------------------------------------------------------------------

class Reporters:
    """The listener a run calls with every metrics record: ``reporters(record)`` hands the record's step,
    scalars and samples to each open reporter. One that raises warns once (``RuntimeWarning``, naming it
    and the error) and is left out from then on. ``close()`` finishes every reporter, is safe to call
    twice, and runs on leaving a ``with`` block."""

    def __init__(self, reporters: list[Reporter]):
        self.active = list(reporters)
        self._to_close = list(reporters)
        self._warned: set[str] = set()

    @property
    def names(self) -> list[str]:
        """The reporters still in use."""
        return [r.name for r in self.active]

    def _warn(self, reporter: Reporter, doing: str, error: Exception) -> None:
        if reporter.name in self._warned:
            return
        self._warned.add(reporter.name)
        warnings.warn(f"report_to: the {reporter.name} reporter failed while {doing} and is switched off for "
                      f"the rest of this run ({type(error).__name__}: {error}); metrics.jsonl is unaffected",
                      RuntimeWarning, stacklevel=3)

    def __call__(self, record: dict) -> None:
        if not self.active:
            return
        step = int(record["step"])
        scalars, samples = scalars_of(record), samples_of(record)
        for reporter in list(self.active):
            try:
                reporter.log(step, scalars, samples)
            except Exception as error:       # a dashboard's failure must never end the training run
                self.active.remove(reporter)
                self._warn(reporter, f"logging step {step}", error)

    def close(self) -> None:
        self.active = []
        while self._to_close:
            reporter = self._to_close.pop(0)
            try:
                reporter.close()
            except Exception as error:       # still close the others
                self._warn(reporter, "closing", error)

    def __enter__(self) -> Reporters:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_reporters(names, run_dir, config: dict, run_name: str) -> Reporters:
    """Open one reporter per name in ``names`` (checked first by ``check_report_to``) for the run in
    ``run_dir``: ``config`` is recorded with the run (TensorBoard text, wandb/trackio config) and
    ``run_name`` names it on the wandb/trackio dashboards. If one fails to open, those already opened
    are closed and the error is raised. An empty ``names`` gives a listener that does nothing."""
    check_report_to(names)
    opened: list[Reporter] = []
    try:
        for name in names:
            opened.append(_open_one(name, Path(run_dir), dict(config), run_name))
    except BaseException:
        Reporters(opened).close()
        raise
    return Reporters(opened)
