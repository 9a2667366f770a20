"""CellProgress (minigrpo/lab/progress.py): the line a training cell redraws in place."""
from __future__ import annotations

import pytest

from minigrpo.lab.progress import CellProgress


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_training_records_are_shown_with_time_left_and_values():
    clock, shown = Clock(), []
    bar = CellProgress(10, "GRPO addition", show=shown.append, clock=clock, every=0.5)
    for step in range(1, 11):
        clock.t += 2.0
        bar({"step": step, "reward": 0.1 * step, "kl": 0.01, "lr": 1e-4})
    assert len(shown) == 10                                  # 2 s apart: every step redraws
    assert shown[3] == "GRPO addition · step 4/10 · 8 s, about 12 s left · reward 0.4 · kl 0.01"
    assert shown[-1].startswith("GRPO addition · step 10/10 · done in 20 s")
    assert "lr" not in shown[-1]                             # only the keys asked for


def test_redraws_are_throttled_but_the_last_step_is_always_shown():
    clock, shown = Clock(), []
    bar = CellProgress(100, "SFT", show=shown.append, clock=clock, every=1.0)
    for t in range(100):                                     # sft's on_step(t, loss), t from 0
        clock.t += 0.1
        bar(t, 2.0 / (t + 1))
    assert 9 <= len(shown) <= 11                             # 10 s of steps, one redraw a second
    assert shown[-1].startswith("SFT · step 100/100 · done in 10 s · loss 0.02")


def test_a_resumed_run_estimates_from_its_own_steps():
    clock, shown = Clock(), []
    bar = CellProgress(20, "run", show=shown.append, clock=clock, every=0.0)
    clock.t = 5.0
    bar({"step": 11})                                        # resumed after step 10: 1 step in 5 s, 9 to go
    assert "about 45 s left" in shown[-1]


def test_a_step_zero_evaluation_is_not_counted_as_a_step():
    clock, shown = Clock(), []
    bar = CellProgress(5, "run", show=shown.append, clock=clock, every=0.0)
    bar({"step": 0, "test_accuracy": 0.5})                   # train_lm reports the anchor's evaluation as step 0
    assert shown[-1] == "run · step 0/5 · starting · acc 0.5"


def test_bad_total_is_refused():
    with pytest.raises(ValueError, match="total=0"):
        CellProgress(0, "x", show=print)


def test_one_line_per_run_of_an_experiment(monkeypatch):
    import minigrpo.lab.progress as progress
    made = []

    class Recorder(CellProgress):
        def __init__(self, total, label, **kw):
            super().__init__(total, label, show=lambda text: None, **kw)
            made.append(self)
    monkeypatch.setattr(progress, "CellProgress", Recorder)
    on_step = progress.progress_per_run(3, "hacking: ")
    for label in ("β = 0.01", "β = 1"):
        for step in range(4):
            on_step(label, {"step": step, "reward": 0.5})
    assert [m.label for m in made] == ["hacking: β = 0.01", "hacking: β = 1"]
    assert all(m.step == 3 and m.text.startswith(f"{m.label} · step 3/3 · done") for m in made)
