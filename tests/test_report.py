"""Reporters (runs/report.py): TensorBoard end to end, read back with TensorBoard's own event reader;
wandb and trackio through fake modules that record every call; the checks on ``report_to``; a failing
reporter that warns once while the others keep going."""
from __future__ import annotations

import importlib.util
import json
import math
import sys
import types
import warnings

import pytest

from minigrpo.runs import report
from minigrpo.runs.report import REPORTERS, Reporters, check_report_to, open_reporters

CONFIG = {"task": "addition", "lr": 2e-4, "steps": 3}
SAMPLES = [{"prompt": "12+7=", "completion": "19", "reward": 1.0, "answer": "19"},
           {"prompt": "3+4=", "completion": "8|x\ny", "reward": 0.0}]          # a pipe and a newline to escape
RECORDS = [
    {"step": 0, "test_accuracy": 0.25},
    {"step": 1, "reward": 0.5, "kl": 0.001, "reward/correct": 0.5, "lr": 2e-4, "clipped": True,
     "note": "not a number", "eval/greedy/reward": 0.75},
    {"step": 2, "reward": float("nan"), "kl": 0.002, "reward/correct": 0.25, "samples": SAMPLES},
    {"step": 3, "reward": 0.75, "kl": float("inf"), "test_accuracy": 0.5},
]


# --- check_report_to -----------------------------------------------------------------------------------

def test_check_report_to_accepts_known_installed_names_and_nothing():
    check_report_to(["tensorboard"])
    check_report_to(("tensorboard",))
    check_report_to([])


@pytest.mark.parametrize("names, message", [
    (["tensorbord"], "report_to=['tensorbord'] is not allowed; 'tensorbord' is unknown, choose from tensorboard, "
                     "trackio, wandb"),
    ("tensorboard", "report_to='tensorboard' is not allowed; give a list of names from tensorboard, trackio, wandb"),
    (["tensorboard", 3], "report_to=['tensorboard', 3] is not allowed; give a list of names from"),
    (None, "report_to=None is not allowed"),
    (["tensorboard", "tensorboard"], "report_to=['tensorboard', 'tensorboard'] is not allowed; 'tensorboard' is "
                                     "listed twice"),
])
def test_check_report_to_refuses_in_one_line(names, message):
    with pytest.raises(ValueError) as err:
        check_report_to(names)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("name", REPORTERS)
def test_check_report_to_refuses_a_library_that_is_not_installed(monkeypatch, name):
    real = importlib.util.find_spec
    monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda mod, *a: None if mod == name else real(mod, *a))
    with pytest.raises(ValueError, match=rf"^report_to=\['{name}'\] is not allowed here; '{name}' needs the {name} "
                                         rf"package: pip install {name}$"):
        check_report_to([name])


def test_open_reporters_checks_before_opening_anything(tmp_path):
    with pytest.raises(ValueError, match="not allowed"):
        open_reporters(["tensorboard", "mlflow"], tmp_path, CONFIG, "run")
    assert not (tmp_path / "tensorboard").exists()


# --- reading a record, and the markdown table -------------------------------------------------------------

def test_scalars_are_the_finite_non_bool_numbers_except_step():
    assert report.scalars_of(RECORDS[1]) == {"reward": 0.5, "kl": 0.001, "reward/correct": 0.5, "lr": 2e-4,
                                             "eval/greedy/reward": 0.75}
    assert report.scalars_of(RECORDS[2]) == {"kl": 0.002, "reward/correct": 0.25}
    assert report.scalars_of(RECORDS[3]) == {"reward": 0.75, "test_accuracy": 0.5}


def test_markdown_table_escapes_pipes_newlines_and_html():
    columns, rows = report.samples_of({"samples": SAMPLES})
    assert columns == ["prompt", "completion", "reward", "answer"]
    assert rows[1] == ["3+4=", "8|x\ny", 0.0, None]
    assert report.markdown_table(columns, rows).splitlines() == [
        "| prompt | completion | reward | answer |",
        "|---|---|---|---|",
        "| 12+7= | 19 | 1.0 | 19 |",
        r"| 3+4= | 8\|x<br>y | 0.0 |  |",
    ]
    assert report.markdown_table(["c"], [["<think>a_b*c</think>"]]).splitlines()[2] == \
        r"| &lt;think&gt;a\_b\*c&lt;/think&gt; |"
    assert report.samples_of({"samples": []}) is None and report.samples_of({"samples": "text"}) is None


# --- TensorBoard, end to end ---------------------------------------------------------------------------

def read_events(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def text_of(events, tag) -> dict[int, str]:
    return {e.step: e.tensor_proto.string_val[0].decode() for e in events.Tensors(f"{tag}/text_summary")}


def test_tensorboard_writes_scalars_samples_and_config_that_tensorboard_reads_back(tmp_path):
    with open_reporters(["tensorboard"], tmp_path, CONFIG, "run-1") as reporters:
        for record in RECORDS:
            reporters(record)
    events = read_events(tmp_path / "tensorboard")

    expected = {}                                  # tag → [(step, value)], built from the records by hand
    for r in RECORDS:
        for k, v in r.items():
            if k != "step" and isinstance(v, float) and math.isfinite(v):
                expected.setdefault(k, []).append((r["step"], v))
    assert sorted(events.Tags()["scalars"]) == sorted(expected) == sorted(
        ["test_accuracy", "reward", "kl", "reward/correct", "lr", "eval/greedy/reward"])
    for tag, points in expected.items():
        got = [(e.step, e.value) for e in events.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in points], tag
        assert [v for _, v in got] == pytest.approx([v for _, v in points], rel=1e-6), tag   # stored as float32

    samples = text_of(events, "samples")
    assert list(samples) == [2]
    assert samples[2] == report.markdown_table(*report.samples_of(RECORDS[2]))
    assert r"8\|x<br>y" in samples[2]
    config = text_of(events, "config")
    assert list(config) == [0] and json.loads(config[0].strip("`\n")) == CONFIG


# --- wandb and trackio, through fakes ---------------------------------------------------------------------

class Calls(list):
    def record(self, name):
        return lambda *args, **kwargs: self.append((name, args, kwargs))


class FakeTable:
    def __init__(self, columns=None, data=None):
        self.columns, self.data = columns, data


def fake_module(name: str, calls: Calls, *, table: bool = True, step_arg: bool = True):
    mod = types.ModuleType(name)
    mod.init, mod.finish = calls.record("init"), calls.record("finish")
    if step_arg:
        mod.log = lambda data, step=None: calls.append(("log", (data,), {"step": step}))
    else:
        mod.log = lambda data: calls.append(("log", (data,), {}))
    if table:
        mod.Table = FakeTable
    return mod


def test_wandb_gets_init_every_step_with_a_table_and_one_finish(tmp_path, monkeypatch):
    calls = Calls()
    monkeypatch.setitem(sys.modules, "wandb", fake_module("wandb", calls))
    reporters = open_reporters(["wandb"], tmp_path, CONFIG, "run-1")
    for record in RECORDS:
        reporters(record)
    reporters.close()
    reporters.close()

    assert calls[0] == ("init", (), {"project": "minigrpo", "name": "run-1", "config": CONFIG, "dir": str(tmp_path)})
    logs = [(c[1][0], c[2]["step"]) for c in calls if c[0] == "log"]
    assert [step for _, step in logs] == [0, 1, 2, 3]
    assert logs[1][0] == report.scalars_of(RECORDS[1])
    table = logs[2][0].pop("samples")
    assert logs[2][0] == {"kl": 0.002, "reward/correct": 0.25}
    assert isinstance(table, FakeTable) and table.columns == ["prompt", "completion", "reward", "answer"]
    assert table.data[0] == ["12+7=", "19", 1.0, "19"] and table.data[1][3] is None
    assert [c[0] for c in calls].count("finish") == 1 and calls[-1][0] == "finish"


@pytest.mark.parametrize("table, step_arg", [(True, True), (False, True), (True, False)])
def test_trackio_logs_each_step_its_table_where_it_has_one(tmp_path, monkeypatch, table, step_arg):
    calls = Calls()
    monkeypatch.setitem(sys.modules, "trackio", fake_module("trackio", calls, table=table, step_arg=step_arg))
    with open_reporters(["trackio"], tmp_path, CONFIG, "run-1") as reporters:
        for record in RECORDS:
            reporters(record)
    reporters.close()

    assert calls[0] == ("init", (), {"project": "minigrpo", "name": "run-1", "config": CONFIG})
    logs = [c for c in calls if c[0] == "log"]
    if step_arg:
        assert [c[2]["step"] for c in logs] == [0, 1, 2, 3]
        datas = [c[1][0] for c in logs]
    else:                                          # an old trackio: the step travels as a value
        assert [c[1][0].pop("step") for c in logs] == [0, 1, 2, 3]
        datas = [c[1][0] for c in logs]
    assert datas[1] == report.scalars_of(RECORDS[1])
    assert isinstance(datas[2].pop("samples", None), FakeTable) == table
    assert datas[2] == {"kl": 0.002, "reward/correct": 0.25}
    assert [c[0] for c in calls].count("finish") == 1 and calls[-1][0] == "finish"


# --- a failing reporter ---------------------------------------------------------------------------------

class Broken:
    name = "broken"

    def __init__(self):
        self.logged, self.closed = 0, 0

    def log(self, step, scalars, samples):
        self.logged += 1
        raise ConnectionError("dashboard is down")

    def close(self):
        self.closed += 1


class Recorder:
    name = "recorder"

    def __init__(self):
        self.steps, self.closed = [], 0

    def log(self, step, scalars, samples):
        self.steps.append(step)

    def close(self):
        self.closed += 1


def test_a_reporter_that_raises_warns_once_and_the_others_keep_going():
    broken, recorder = Broken(), Recorder()
    reporters = Reporters([broken, recorder])
    with pytest.warns(RuntimeWarning) as caught:
        for record in RECORDS:
            reporters(record)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "broken" in messages[0] and "ConnectionError: dashboard is down" in messages[0]
    assert broken.logged == 1 and recorder.steps == [0, 1, 2, 3] and reporters.names == ["recorder"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")             # closing twice: no error, no warning, one close each
        reporters.close()
        reporters.close()
    assert broken.closed == 1 and recorder.closed == 1
    reporters(RECORDS[1])                          # a record after close is dropped, not an error
    assert recorder.steps == [0, 1, 2, 3]


def test_a_reporter_that_fails_to_open_closes_those_already_opened(tmp_path, monkeypatch):
    calls = Calls()
    wandb = fake_module("wandb", calls)
    wandb.init = lambda **kwargs: (_ for _ in ()).throw(PermissionError("not logged in"))
    monkeypatch.setitem(sys.modules, "trackio", fake_module("trackio", calls))
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    with pytest.raises(PermissionError, match="not logged in"):
        open_reporters(["trackio", "wandb"], tmp_path, CONFIG, "run-1")
    assert [c[0] for c in calls] == ["init", "finish"]


def test_the_reporting_libraries_are_imported_only_inside_functions():
    """A static check (a fresh interpreter would spend seconds importing torch): no module-level import of
    a reporting library, so ``import minigrpo.runs.report`` stays cheap."""
    import ast

    tree = ast.parse(open(report.__file__).read())
    top = {a.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import) for a in node.names}
    top |= {node.module.split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom) and node.module}
    assert not top & {"torch", "tensorboard", "wandb", "trackio"}, top
