"""The labelling panel: label completions by hand in a notebook (notebook edge only).

    panel = LabellingPanel(items, "labels.jsonl")            # items: [(prompt, completion), …]
    panel                                                    # 👍 / 👎 / skip, one completion at a time
    LabellingPanel(items, "labels.jsonl", steps=True)        # ✓/✗ per step of a multi-step answer
    LabellingPanel(items, "rankings.jsonl", mode="rank")     # order each prompt's completions

Thumbs and step labels are written with ``labels.append_label`` (the JSONL that ``labels.load_labels``
reads); rankings as ``{"prompt", "ranking"}`` lines, which ``preferences.load_preferences`` reads.
Every click is written at once, so closing the notebook loses nothing. The buttons call the public
methods ``thumb``, ``skip``, ``save_steps`` and ``save_ranking``, which a test (or a script) calls too.
"""
from __future__ import annotations

import html
import json
import re
from collections import Counter
from pathlib import Path

import ipywidgets as widgets

from minigrpo.rewards.labels import Label, append_label


def _split_steps(text: str, separators: str) -> list[str]:
    """The steps of a completion's text, as ``compose.Completions.steps`` cuts them (like ``str.split``)."""
    return re.split(f"[{re.escape(separators)}]", text)


class LabellingPanel(widgets.VBox):
    """Shows completions one at a time (``mode="thumbs"``) or one prompt's group at a time (``"rank"``).

    Each distinct (prompt, completion) is asked about once, however often it was sampled: a label is
    keyed by the texts, so one label serves every copy (the view says how many there are). ``counts``
    holds those numbers, ``current`` the item on show."""

    def __init__(self, items: list[tuple[str, str]], path: str | Path, *, mode: str = "thumbs",
                 steps: bool = False, separators: str = ",", annotator: str | None = None):
        if mode not in ("thumbs", "rank"):
            raise ValueError(f"LabellingPanel: mode={mode!r} is not allowed; choose 'thumbs' or 'rank'")
        if not items or not all(isinstance(i, (tuple, list)) and len(i) == 2 for i in items):
            raise ValueError("LabellingPanel: items must be a non-empty list of (prompt, completion) pairs")
        self.counts = Counter(tuple(i) for i in items)                  # (prompt, completion) → times sampled
        self.items = list(self.counts)                                  # each distinct one once, in first order
        self.path, self.mode, self.steps, self.separators = Path(path), mode, steps, separators
        self.annotator = annotator
        self.groups = {}
        for p, c in self.items:
            self.groups.setdefault(p, [])
            if c not in self.groups[p]:
                self.groups[p].append(c)
        if mode == "rank":        # a ranking needs two different completions to say anything
            self.groups = {p: cs for p, cs in self.groups.items() if len(cs) >= 2}
            if not self.groups:
                raise ValueError("LabellingPanel: mode='rank' needs a prompt with at least two different completions")
        self.prompts = list(self.groups)
        self.index = 0
        self.written = 0
        self.view = widgets.HTML()
        self.progress = widgets.HTML()
        self.controls = widgets.VBox()
        super().__init__([self.progress, self.view, self.controls])
        self._render()

    # --- actions (the buttons call these) --------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.index >= (len(self.items) if self.mode == "thumbs" else len(self.prompts))

    def thumb(self, good: bool) -> None:
        """Label the shown completion good (👍) or bad (👎) and move on."""
        prompt, completion = self._current()
        append_label(self.path, Label(prompt, completion, good=bool(good), annotator=self.annotator))
        self._next()

    def save_steps(self, marks: list[bool | None] | None = None) -> None:
        """Label each step of the shown completion right (True) / wrong (False) / unsure (None)."""
        prompt, completion = self._current()
        if marks is None:
            marks = [{"✓": True, "✗": False}.get(t.value) for t in self.step_toggles]
        n = len(_split_steps(completion, self.separators))
        if len(marks) != n:
            raise ValueError(f"save_steps: {len(marks)} marks for {n} steps of {completion!r}")
        steps = tuple(None if m is None else float(m) for m in marks)
        append_label(self.path, Label(prompt, completion, steps=steps, annotator=self.annotator))
        self._next()

    def save_ranking(self, ranking: list[str] | None = None) -> None:
        """Write the shown prompt's completions in the order given (best first)."""
        prompt = self.prompts[self.index]
        if ranking is None:
            order = sorted(range(len(self.rank_boxes)), key=lambda i: self.rank_boxes[i].value)
            ranking = [self.groups[prompt][i] for i in order]
        if sorted(ranking) != sorted(self.groups[prompt]):
            raise ValueError(f"save_ranking: the ranking must hold each completion of {prompt!r} once")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"prompt": prompt, "ranking": ranking}, ensure_ascii=False) + "\n")
        self._next()

    def skip(self) -> None:
        self.index += 1
        self._render()

    # --- drawing ------------------------------------------------------------------------------------------
    @property
    def current(self) -> tuple[str, str]:
        """The (prompt, completion) on show (thumbs and steps modes)."""
        return self._current()

    def _current(self) -> tuple[str, str]:
        if self.done:
            raise ValueError("LabellingPanel: every item has been labelled")
        return self.items[self.index]

    def _next(self) -> None:
        self.written += 1
        self.index += 1
        self._render()

    def _button(self, text, fn, style=""):
        b = widgets.Button(description=text, button_style=style, layout=widgets.Layout(width="auto"))
        b.on_click(lambda _: fn())
        return b

    def _render(self) -> None:
        total = len(self.items) if self.mode == "thumbs" else len(self.prompts)
        self.progress.value = f"<b>{min(self.index + 1, total)} / {total}</b> · {self.written} written to " \
                              f"<code>{html.escape(str(self.path))}</code>"
        if self.done:
            self.view.value = "<p>All done — thank you. Load the file with <code>labels.load_labels</code>" \
                              " or <code>preferences.load_preferences</code>.</p>"
            self.controls.children = []
            return
        if self.mode == "rank":
            prompt = self.prompts[self.index]
            comps = self.groups[prompt]
            self.view.value = f"<p>Prompt: <code>{html.escape(prompt)}</code> — rank the completions (1 = best)</p>"
            self.rank_boxes = [widgets.Dropdown(options=list(range(1, len(comps) + 1)), value=i + 1,
                                                description=html.escape(c) or "(empty)",
                                                layout=widgets.Layout(width="260px")) for i, c in enumerate(comps)]
            self.controls.children = self.rank_boxes + [widgets.HBox([
                self._button("Save ranking", self.save_ranking, "primary"), self._button("Skip", self.skip)])]
            return
        prompt, completion = self.items[self.index]
        n = self.counts[(prompt, completion)]
        times = f" <i>(sampled {n} times: one label serves them all)</i>" if n > 1 else ""
        self.view.value = (f"<p>Prompt: <code>{html.escape(prompt)}</code></p>"
                           f"<p>Completion: <code>{html.escape(completion) or '(empty)'}</code>{times}</p>")
        if self.steps:
            parts = _split_steps(completion, self.separators)
            self.step_toggles = [widgets.ToggleButtons(options=["✓", "✗", "?"], value="?",
                                                       description=html.escape(s) or "(empty)") for s in parts]
            self.controls.children = self.step_toggles + [widgets.HBox([
                self._button("Save steps", self.save_steps, "primary"), self._button("Skip", self.skip)])]
        else:
            self.controls.children = [widgets.HBox([self._button("👍 good", lambda: self.thumb(True), "success"),
                                                    self._button("👎 bad", lambda: self.thumb(False), "danger"),
                                                    self._button("Skip", self.skip)])]
