"""Bad inputs and interruptions of `minigrpo train` (issue 17, deliverable 4): each ends in one line and a
known exit code, before any work where it can, and leaves no half-made run folder or temporary folder.

* config files (``--config F``): YAML syntax, a refused tag, bytes that are not UTF-8, truncated JSON, JSON
  with extra data, an unknown suffix, a top level that is not a mapping, a directory → one line naming the
  file (and line/column where the parser gives one), exit 2; YAML's ``lr: 1e-4`` (text under YAML 1.1) and
  ``steps: 1e3`` are read as numbers;
* ``--device``: only devices this torch can use here → one line naming --device and what is allowed, exit 2;
* SIGINT/SIGTERM: stop after the step running (a checkpoint is written) with one line naming the run to
  resume, exit 130/143; during setup: at once, no run folder left;
* a full disk (ENOSPC, or a library's error wrapping it) while writing a checkpoint or metrics: one line
  naming the file, exit 2, no ``.tmp-step-N`` folder; no run folder left when it had no checkpoint yet;
* a start that fails after config.json was written leaves no run folder.

Config and device cases run ``main([...])`` in-process (as tests/test_config_cli.py does), and two of them
also as a subprocess to see stderr whole; the signal cases run ``python -m minigrpo.cli`` in a subprocess.
"""
import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minigrpo.cli import main
from minigrpo.runs.folder import RunFolder

pytestmark = pytest.mark.usefixtures("one_thread")

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
       "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
TIMEOUT = 600                             # a loaded 2-core machine: generous
SMALL = ["--task", "addition", "--steps", "6", "--group-size", "4", "--prompts", "4", "--eval-every", "100",
         "--eval-size", "10", "--sample-every", "100", "--save-every", "2", "--device", "cpu", "--seed", "0", "--json"]


def one_error(capsys, code: int, *needles: str) -> str:
    """The one stderr line of a command that failed with ``code``; it must contain every needle."""
    assert code == 2
    err = capsys.readouterr().err
    lines = [l for l in err.replace("\r", "\n").splitlines() if l.startswith("minigrpo ")]
    assert len(lines) == 1 and lines[0].startswith("minigrpo train: error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def tree(root: Path) -> set:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# --- config files -----------------------------------------------------------------------------------------

BAD_FILES = {
    "yaml-syntax": ("c.yaml", b"lr: 1e-4\nsteps: [1\n", ["line 3", "not valid YAML"]),
    "yaml-python-tag": ("c.yaml", b"steps: !!python/object/apply:os.system ['echo hi']\n", ["line 1", "plain YAML"]),
    "yaml-not-utf8": ("c.yml", b"steps: 3\ntask: \"\xff\xfe\"\n", ["not UTF-8", "line 2"]),
    "json-not-utf8": ("c.json", b"\xff{}", ["not UTF-8"]),
    "json-truncated": ("c.json", b'{"steps": 3, "lr": 0.1', ["not valid JSON", "line 1", "truncated"]),
    "json-extra-data": ("c.json", b'{"steps": 3} {"lr": 1}', ["not valid JSON", "Extra data"]),
    "unknown-suffix": ("c.toml", b"steps = 3\n", [".toml", ".yaml", ".yml", ".json"]),
    "no-suffix": ("config", b"steps: 3\n", [".yaml", ".json"]),
    "yaml-list": ("c.yaml", b"- steps\n- 3\n", ["mapping", "list"]),
    "json-number": ("c.json", b"3", ["mapping", "int"]),
    "yaml-lr-not-a-number": ("c.yaml", b"lr: fast\n", ["TrainConfig.lr", "must be a number"]),
    "yaml-unknown-setting": ("c.yaml", b"learning_rate: 1e-4\n", ["learning_rate"]),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_config_file_is_one_line_naming_it(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name, content, needles = BAD_FILES[case]
    (tmp_path / name).write_bytes(content)
    before = tree(tmp_path)
    code = main(["train", "--config", name, "--out", "runs", "--device", "cpu"])
    one_error(capsys, code, f"config file {name!r}", *needles)
    assert tree(tmp_path) == before                      # nothing written: no runs/ folder


def test_a_folder_or_a_missing_file_as_config_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.yaml").mkdir()
    one_error(capsys, main(["train", "--config", "d.yaml"]), "'d.yaml'", "not a file")
    one_error(capsys, main(["train", "--config", "none.json"]), "'none.json'", "does not exist")
    assert tree(tmp_path) == {"d.yaml"}


def test_yaml_exponent_numbers_are_read_as_numbers(tmp_path):
    """YAML 1.1 reads 1e-4 as text; the README's own `lr: 1e-4` works, and `steps: 1e3` is the integer 1000."""
    from minigrpo.cli import train_config

    (tmp_path / "c.yaml").write_text("lr: 1e-4\nsteps: 1e3\nbeta: 2E-2\nreward_weights: {correct: 1e0}\n")
    cfg = train_config({}, str(tmp_path / "c.yaml"))
    assert (cfg.lr, cfg.steps, cfg.beta, cfg.reward_weights) == (1e-4, 1000, 0.02, {"correct": 1.0})
    assert type(cfg.steps) is int
    (tmp_path / "e.yaml").write_text("")                  # an empty file: no settings
    assert train_config({}, str(tmp_path / "e.yaml")).steps == 200
    (tmp_path / "f.yaml").write_text("steps: 2.5e1\nwarmup_steps: 1.5\n")
    with pytest.raises(ValueError, match="warmup_steps=1.5 is not allowed; must be an integer"):
        train_config({}, str(tmp_path / "f.yaml"))


def test_a_bad_yaml_file_as_a_subprocess_prints_no_traceback(tmp_path):
    (tmp_path / "c.yaml").write_text("x: !!python/object:os.system {}\n")
    res = subprocess.run([sys.executable, "-m", "minigrpo.cli", "train", "--config", "c.yaml"], cwd=tmp_path,
                         env=ENV, capture_output=True, text=True, timeout=TIMEOUT)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and "'c.yaml'" in res.stderr
    assert tree(tmp_path) == {"c.yaml"}


# --- devices ------------------------------------------------------------------------------------------------

def _unusable():
    out = ["meta", "junk", "cuda:x", f"cuda:{max(torch.cuda.device_count(), 7)}"]
    if not torch.cuda.is_available():
        out.append("cuda")
    if not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        out.append("xpu")
    return out


@pytest.mark.parametrize("device", _unusable())
def test_a_device_this_torch_cannot_use_is_refused_before_any_work(device, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("minigrpo.runs.lm_run.train_lm", lambda *a, **k: pytest.fail("training started"))
    code = main(["train", "--device", device, "--out", "runs"])
    one_error(capsys, code, f"--device {device}", "this torch can use auto, cpu")
    assert tree(tmp_path) == set()


def test_sft_refuses_the_meta_device_too(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["sft", "--device", "meta", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--device meta" in err and "Traceback" not in err
    assert tree(tmp_path) == set()


def test_usable_devices_are_what_this_torch_has():
    from minigrpo.runs.config import TrainConfig, usable_devices

    devices = usable_devices()
    assert devices[0] == "cpu" and ("cuda" in devices) == torch.cuda.is_available()
    assert TrainConfig(device="cpu").device == "cpu" and TrainConfig(device="auto").device == "auto"


# --- signals -------------------------------------------------------------------------------------------------

# Runs the CLI with a signal sent to itself at one moment:
#   step N    while step N runs (when its metrics line is written): the run stops after step N
#   setup     right after config.json is written, before the first step: the run stops at once
#   twice N   while step N runs, and again while the checkpoint it triggers is being written
SIGNALLER = """
import os, signal, sys
from minigrpo.runs import folder as runfolder
from minigrpo.cli import main

when, n, sig = sys.argv[1], int(sys.argv[2]), getattr(signal, sys.argv[3])
append, create, write_text = runfolder.RunFolder.append, runfolder.RunFolder.create, runfolder._atomic_write_text
state = {"sent": False}

def patched_append(self, name, record):
    append(self, name, record)
    if when in ("step", "twice") and name == "metrics.jsonl" and record.get("step") == n:
        os.kill(os.getpid(), sig)
        state["sent"] = True

def patched_create(self, config):
    out = create(self, config)
    if when == "setup":
        os.kill(os.getpid(), sig)
    return out

def patched_write_text(path, text):
    if when == "twice" and state["sent"] and path.name == "meta.json":
        os.kill(os.getpid(), sig)
    write_text(path, text)

runfolder.RunFolder.append, runfolder.RunFolder.create = patched_append, patched_create
runfolder._atomic_write_text = patched_write_text
sys.exit(main(sys.argv[4:]))
"""


def signalled(tmp_path: Path, when: str, n: int, sig: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SIGNALLER, when, str(n), sig, "train", *SMALL, "--out",
                           str(tmp_path / "runs"), *flags], env=ENV, capture_output=True, text=True, timeout=TIMEOUT)


def the_line(res: subprocess.CompletedProcess, code: int) -> str:
    assert res.returncode == code, res.stderr[-3000:]
    assert "Traceback" not in res.stderr and "KeyboardInterrupt" not in res.stderr, res.stderr[-3000:]
    lines = [l for l in res.stderr.replace("\r", "\n").splitlines() if l.startswith("minigrpo ")]
    assert len(lines) == 1 and res.stderr.rstrip().endswith(lines[0]), res.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("sig,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_during_a_step_saves_a_checkpoint_and_names_the_run_to_resume(sig, code, tmp_path):
    res = signalled(tmp_path, "step", 3, sig)
    (run,) = (tmp_path / "runs").glob("train-*")
    assert the_line(res, code) == f"minigrpo train: stopped by {sig} after step 3; resume with: minigrpo train " \
                                  f"--resume {run}"
    folder = RunFolder(run)
    assert folder.latest_checkpoint().name == "step-000003"        # written at the safe point (save_every is 2)
    assert [r["step"] for r in folder.read("metrics.jsonl")] == [0, 1, 2, 3]
    assert not list(folder.ckpt_root.glob(".tmp-*"))
    if sig == "SIGINT":                                              # and the run resumes from there
        res = subprocess.run([sys.executable, "-m", "minigrpo.cli", "train", "--resume", str(run), "--json"],
                             env=ENV, capture_output=True, text=True, timeout=TIMEOUT)
        assert res.returncode == 0, res.stderr[-3000:]
        assert json.loads(res.stdout)["steps"] == 6


def test_a_signal_during_setup_stops_at_once_and_leaves_no_run_folder(tmp_path):
    res = signalled(tmp_path, "setup", 0, "SIGTERM")
    assert "before the first checkpoint; nothing was saved" in the_line(res, 143)
    assert list((tmp_path / "runs").glob("train-*")) == []


def test_a_second_signal_while_checkpointing_stops_at_once_and_removes_the_temporary_folder(tmp_path):
    res = signalled(tmp_path, "twice", 3, "SIGINT")
    (run,) = (tmp_path / "runs").glob("train-*")
    line = the_line(res, 130)
    assert line == f"minigrpo train: stopped by SIGINT; resume with: minigrpo train --resume {run} (its last " \
                   "checkpoint: step-000002)"
    folder = RunFolder(run)
    assert folder.latest_checkpoint().name == "step-000002"
    assert not list(folder.ckpt_root.glob(".tmp-*")) and not (folder.ckpt_root / "step-000003").exists()


# --- a full disk ---------------------------------------------------------------------------------------------

def _full_at(monkeypatch, nth: int, error):
    """The ``nth`` call of torch.save in the run folder (one per checkpoint) raises ``error``."""
    import minigrpo.runs.folder as runfolder

    calls = {"n": 0}
    save = torch.save

    def patched(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == nth:
            Path(f).write_bytes(b"partial")
            raise error
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(runfolder.torch, "save", patched)


def _run_in(tmp_path) -> Path | None:
    runs = list((tmp_path / "runs").glob("train-*"))
    return runs[0] if runs else None


def test_disk_full_at_a_later_checkpoint_names_it_and_the_run_resumes_from_the_one_before(tmp_path, capsys,
                                                                                           monkeypatch):
    _full_at(monkeypatch, 2, OSError(errno.ENOSPC, "No space left on device"))
    code = main(["train", *SMALL, "--out", str(tmp_path / "runs")])
    run = _run_in(tmp_path)
    line = one_error(capsys, code, "no space left on device while writing", str(run / "checkpoints" / "step-000004"),
                     f"resume with: minigrpo train --resume {run} (from step-000002)")
    assert line.startswith("minigrpo train: error: no space left")
    folder = RunFolder(run)
    assert folder.latest_checkpoint().name == "step-000002" and not list(folder.ckpt_root.glob(".tmp-*"))


def test_disk_full_wrapped_by_a_library_before_the_first_checkpoint_leaves_no_run_folder(tmp_path, capsys,
                                                                                         monkeypatch):
    """safetensors wraps the OS error in its own; the run had no checkpoint, so its folder is removed."""
    _full_at(monkeypatch, 1, Exception('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                                       'message: "No space left on device" })'))
    code = main(["train", *SMALL, "--out", str(tmp_path / "runs")])
    one_error(capsys, code, "no space left on device while writing", "step-000002", "start the run again")
    assert _run_in(tmp_path) is None


def test_disk_full_while_writing_metrics_names_the_file(tmp_path, capsys, monkeypatch):
    import builtins

    import minigrpo.runs.folder as runfolder

    real_open = builtins.open

    def patched_open(file, mode="r", *args, **kwargs):
        if Path(file).name == "metrics.jsonl" and "a" in mode and len(RunFolder(Path(file).parent).read(
                "metrics.jsonl")) >= 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(runfolder, "open", patched_open, raising=False)
    code = main(["train", *SMALL, "--out", str(tmp_path / "runs")])
    run = _run_in(tmp_path)
    one_error(capsys, code, f"while writing {run / 'metrics.jsonl'}", "(from step-000002)")


# --- a failed start leaves no half-made run folder ---------------------------------------------------------

def test_a_start_that_fails_after_config_json_leaves_no_run_folder(tmp_path, capsys, monkeypatch):
    write_json = RunFolder.write_json

    def no_rewards_json(self, name, obj):
        if name == "rewards.json":
            raise PermissionError(errno.EACCES, "Permission denied", str(self.path / name))
        write_json(self, name, obj)

    monkeypatch.setattr(RunFolder, "write_json", no_rewards_json)
    one_error(capsys, main(["train", *SMALL, "--out", str(tmp_path / "runs")]), "rewards.json")
    assert _run_in(tmp_path) is None
    monkeypatch.undo()

    def no_reporters(*args, **kwargs):
        raise ValueError("report_to: tensorboard could not start")

    monkeypatch.setattr("minigrpo.runs.report.open_reporters", no_reporters)
    one_error(capsys, main(["train", *SMALL, "--out", str(tmp_path / "runs")]), "tensorboard could not start")
    assert _run_in(tmp_path) is None


def test_on_a_one_gpu_machine_cuda_0_is_allowed_and_cuda_1_is_not(monkeypatch):
    """Simulated here (no GPU needed): torch sees one CUDA device."""
    from minigrpo.runs.config import check_device, usable_devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert usable_devices()[:3] == ["cpu", "cuda", "cuda:0"]
    check_device("cuda")
    check_device("cuda:0")
    with pytest.raises(ValueError, match=r"--device cuda:1\) is not allowed: this torch can use auto, cpu, cuda, "
                                         r"cuda:0"):
        check_device("cuda:1")


@pytest.mark.parametrize("error", [RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't "
                                                "allocate memory: you tried to allocate 36864000000 bytes"),
                                   torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
                                   MemoryError()])
def test_out_of_memory_in_the_first_step_is_one_line_and_leaves_no_run_folder(error, tmp_path, capsys, monkeypatch):
    import minigrpo.runs.methods as methods

    def grpo_step(*args, **kwargs):
        raise error

    monkeypatch.setattr(methods, "grpo_step", grpo_step)
    code = main(["train", *SMALL, "--out", str(tmp_path / "runs")])
    one_error(capsys, code, "out of memory", "lower --prompts, --group-size")
    assert _run_in(tmp_path) is None


@pytest.mark.parametrize("flags,said", [
    (["--group-size", "1000000"], "group_size=1000000 is not allowed; must be an integer from 1 to 4,096"),
    (["--prompts", "100000000"], "prompts_per_step=100000000 is not allowed; must be an integer from 1 to 65,536"),
    (["--prompts", "1000", "--group-size", "100"], "1,000 × 100 is over 65,536 completions a step"),
    (["--eval-size", "100000000"], "eval_size=100000000 is not allowed"),
    (["--eval-samples", "100000"], "eval_samples=100000 is not allowed; must be an integer from 0 to 256"),
])
def test_sizes_far_past_any_real_run_are_refused_at_once(flags, said, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_error(capsys, main(["train", "--task", "addition", *flags]), said)
    assert not (tmp_path / "runs").exists()


SAVE_SIGNALLER = """
import os, signal, sys
import minigrpo.lm.saving as saving
import minigrpo.lm.sft as sft
from minigrpo.cli import main

sig, real = getattr(signal, sys.argv[1]), saving.save_folder

def save_folder(path, write, tensors):
    def written(folder):
        write(folder)
        os.kill(os.getpid(), sig)             # every file is in the temporary folder, none renamed yet
    return real(path, written, tensors)

saving.save_folder = sft.save_folder = save_folder
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("sig,code", [("SIGINT", 130), ("SIGTERM", 143)])
@pytest.mark.parametrize("command", [["sft", "--task", "addition", "--steps", "2", "--device", "cpu"],
                                     ["reward-model", "--synthetic", "closeness", "--prompts", "12", "--steps", "2"]])
def test_a_signal_while_sft_or_reward_model_saves_is_one_line_and_leaves_nothing(command, sig, code, tmp_path):
    earlier = tmp_path / "out"
    earlier.mkdir()
    (earlier / "config.json").write_text("{}")            # an earlier save there: kept as it was
    res = subprocess.run([sys.executable, "-c", SAVE_SIGNALLER, sig, *command, "--out", str(earlier)], env=ENV,
                         capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path)
    assert the_line(res, code) == f"minigrpo {command[0]}: stopped by {sig}"
    assert tree(tmp_path) == {"out", "out/config.json"} and (earlier / "config.json").read_text() == "{}"
