"""Guards around the runs that write model folders (issue 17): SFT and reward-model training stop on a
non-finite loss and save nothing, their folders are checked before training and written atomically, never
into the installed package's assets; and one process at a time writes a GRPO run folder (``RunLock``).

The issue's cases are command lines, so they run ``python -m minigrpo.cli`` in a subprocess and check the
exit code, the one error line and that no traceback was printed; the rest call the package directly.
"""
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import cli_subprocess
from cli_subprocess import ENV, TIMEOUT, cli
from minigrpo.assets import asset_path, in_assets
from minigrpo.cli import main
from minigrpo.lm.models import TinyGPT2
from minigrpo.lm.saving import check_out, save_folder
from minigrpo.lm.sft import SFTConfig, anchor_dir, build_anchor
from minigrpo.rewards.reward_model import RewardModel, RMTrainConfig, train_reward_model
from minigrpo.runs.folder import RunFolder, RunFolderInUse, RunLock

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = TinyGPT2(n_layer=1, n_embd=16, n_head=2, n_positions=16)
SMALL_SFT = dict(task="addition", task_args={"digits": 1}, steps=3, batch_size=4, shape=SHAPE)


def error_line(res, command: str) -> str:
    """The one error line of a failed command, which is also the last thing on stderr."""
    line = cli_subprocess.error_line(res, command)
    assert res.stderr.rstrip().endswith(line)
    return line


def tree_hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def shipped():
    """The hashes of every shipped asset, taken before this module's tests and checked again after them."""
    before = tree_hashes(asset_path())
    yield before
    assert tree_hashes(asset_path()) == before, "a test wrote into the package's assets"


def no_training(monkeypatch):
    """Make any SFT or reward-model step fail the test: the command must stop before training."""
    def fail(*args, **kwargs):
        raise AssertionError("training started")
    monkeypatch.setattr("minigrpo.lm.sft.sft_steps", fail)
    monkeypatch.setattr("minigrpo.rewards.reward_model.train_reward_model", fail)


# --- 1. a run that diverges saves nothing ------------------------------------------------------------------

def test_sft_with_a_huge_lr_exits_2_in_one_line_and_saves_nothing(tmp_path, shipped):
    """The issue's case: `minigrpo sft --lr 1e30 --steps 3` exited 0 with an all-NaN anchor. Now it stops at
    the step that went non-finite, names --lr, exits 2, and leaves no folder (with --out or without)."""
    res = cli("sft", "--lr", "1e30", "--steps", "3", "--batch-size", "4", "--device", "cpu", cwd=tmp_path)
    line = error_line(res, "sft")
    assert "diverged" in line and "at step 2 of 3" in line and "lr=1e+30 (--lr)" in line, line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    res = cli("sft", "--lr", "1e30", "--steps", "3", "--batch-size", "4", "--device", "cpu", "--out",
              str(tmp_path / "anchor"), cwd=tmp_path)
    assert "--lr" in error_line(res, "sft")
    assert not (tmp_path / "anchor").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".anchor.")]     # no temporary folder either
    assert tree_hashes(asset_path()) == shipped


def test_one_step_that_ruins_the_weights_is_caught_by_the_held_out_loss(tmp_path):
    """A single step at lr=1e30 leaves finite but enormous weights (no later step's loss to go NaN): the
    held-out loss after training is not finite, so nothing is saved."""
    with pytest.raises(FloatingPointError, match=r"held-out loss after the last step \(1\) is (nan|inf).*lr=1e\+30 \(--lr\)"):
        build_anchor(SFTConfig(**{**SMALL_SFT, "steps": 1, "lr": 1e30}), tmp_path / "anchor", device="cpu",
                     eval_size=5, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_reward_model_with_a_huge_lr_exits_2_in_one_line_and_saves_nothing(tmp_path, shipped):
    res = cli("reward-model", "--synthetic", "closeness", "--prompts", "20", "--steps", "3", "--batch-size", "8",
              "--lr", "1e30", "--out", str(tmp_path / "rm"), cwd=tmp_path)
    line = error_line(res, "reward-model")
    assert "diverged" in line and "at step 2 of 3" in line and "--lr" in line, line
    assert list(tmp_path.iterdir()) == []
    assert tree_hashes(asset_path()) == shipped


def test_a_nan_sft_loss_keeps_the_earlier_anchor_byte_for_byte(tmp_path, monkeypatch):
    """A NaN at the 3rd step (as if the forward pass overflowed): the error names the step and --lr, and the
    anchor already at ``out`` is untouched."""
    from minigrpo.lm.policy import CausalLMPolicy

    out = build_anchor(SFTConfig(**SMALL_SFT), tmp_path / "anchor", device="cpu", eval_size=5, progress=False)
    before = tree_hashes(out)
    calls, log_probs = {"n": 0}, CausalLMPolicy.log_probs

    def poisoned(self, prompts, completions):
        lp = log_probs(self, prompts, completions)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 3:
                return lp * float("nan")
        return lp

    monkeypatch.setattr(CausalLMPolicy, "log_probs", poisoned)
    with pytest.raises(FloatingPointError, match=r"SFT loss is nan at step 3 of 3.*lr=.*\(--lr\).*nothing was saved"):
        build_anchor(SFTConfig(**SMALL_SFT), out, device="cpu", eval_size=5, progress=False)
    assert tree_hashes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anchor"]


class _NanGrad(torch.autograd.Function):
    """Identity forward, NaN backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("nan")


def test_a_nan_gradient_stops_reward_model_training_before_the_step(monkeypatch):
    """A NaN gradient with a finite loss: clipping would leave it NaN and AdamW would write it into every
    weight. The run stops at that step, the weights as they were."""
    from minigrpo.lm.tasks import AdditionTask
    from minigrpo.rewards.preferences import closeness, synthetic_preferences

    task = AdditionTask()
    pairs = synthetic_preferences(task, closeness(task), 10, "train", 4, torch.Generator().manual_seed(0))
    rm = RewardModel.from_causal_lm(anchor_dir("addition"))
    before = {k: v.clone() for k, v in rm.model.state_dict().items()}
    raw = rm.raw
    monkeypatch.setattr(rm, "raw", lambda prompts, completions: _NanGrad.apply(raw(prompts, completions)))
    with pytest.raises(FloatingPointError, match=r"gradient norm is nan at step 1 of 3.*lr=0.001 \(--lr\)"):
        train_reward_model(rm, pairs, None, RMTrainConfig(steps=3, batch_size=8))
    assert all(torch.equal(before[k], v) for k, v in rm.model.state_dict().items())


def test_non_finite_weights_or_standardisation_are_never_saved(tmp_path):
    rm = RewardModel.from_causal_lm(anchor_dir("addition"))
    rm.scale = float("inf")
    with pytest.raises(FloatingPointError, match="scale holds NaN or inf"):
        rm.save(tmp_path / "rm")
    rm.scale = 1.0
    with torch.no_grad():
        rm.model.score.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"score\.weight holds NaN or inf"):
        rm.save(tmp_path / "rm")
    assert list(tmp_path.iterdir()) == []


# --- 2. saves are atomic -----------------------------------------------------------------------------------

def fail_after_one_file(monkeypatch, cls):
    """``cls.save_pretrained`` writes its config.json, then fails as a full disk would."""
    def save_pretrained(self, folder, *args, **kwargs):
        self.config.save_pretrained(folder)
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(cls, "save_pretrained", save_pretrained)


def test_a_failed_anchor_save_leaves_the_earlier_anchor_intact_and_no_temporary_folder(tmp_path, monkeypatch):
    from transformers import GPT2LMHeadModel

    out = build_anchor(SFTConfig(**SMALL_SFT), tmp_path / "anchor", device="cpu", eval_size=5, progress=False)
    before = tree_hashes(out)
    fail_after_one_file(monkeypatch, GPT2LMHeadModel)
    with pytest.raises(OSError, match="No space left"):
        build_anchor(SFTConfig(**{**SMALL_SFT, "seed": 1}), out, device="cpu", eval_size=5, progress=False)
    assert tree_hashes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anchor"]
    monkeypatch.undo()
    build_anchor(SFTConfig(**{**SMALL_SFT, "seed": 1}), out, device="cpu", eval_size=5, progress=False)
    assert tree_hashes(out) != before and json.loads((out / "sft.json").read_text())["config"]["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anchor"]      # the earlier one replaced, not mixed in


def test_a_failed_reward_model_save_leaves_the_earlier_one_intact(tmp_path, monkeypatch):
    from transformers import GPT2ForSequenceClassification

    rm = RewardModel.from_causal_lm(anchor_dir("addition"))
    rm.save(tmp_path / "rm", note="first")
    before = tree_hashes(tmp_path / "rm")
    fail_after_one_file(monkeypatch, GPT2ForSequenceClassification)
    rm.offset = 3.0
    with pytest.raises(OSError, match="No space left"):
        rm.save(tmp_path / "rm", note="second")
    assert tree_hashes(tmp_path / "rm") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rm"]


def test_a_failed_swap_puts_the_earlier_folder_back(tmp_path, monkeypatch):
    """The last moment a save can fail: the earlier folder renamed away, the new one not yet renamed in."""
    from minigrpo.lm import saving

    out = tmp_path / "model"
    save_folder(out, lambda d: (d / "config.json").write_text("old"))
    replace, calls = os.replace, {"n": 0}

    def flaky_replace(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("rename failed")
        return replace(src, dst)

    monkeypatch.setattr(saving.os, "replace", flaky_replace)
    with pytest.raises(OSError, match="rename failed"):
        save_folder(out, lambda d: (d / "config.json").write_text("new"))
    assert (out / "config.json").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# --- 3. --out is checked before training starts -------------------------------------------------------------

def test_the_package_assets_are_never_an_out_folder(tmp_path, monkeypatch, shipped):
    shipped_anchor = anchor_dir("addition")
    assert in_assets(shipped_anchor) and in_assets(asset_path()) and not in_assets(tmp_path)
    for path in (shipped_anchor, asset_path("anchors", "new-task"), asset_path("reward_models", "x")):
        with pytest.raises(PermissionError, match="shipped assets.*MINIGRPO_WRITE_ASSETS=1"):
            check_out(path)
    monkeypatch.setenv("MINIGRPO_WRITE_ASSETS", "1")        # the developer's override, for rebuilding one
    assert check_out(shipped_anchor) == shipped_anchor
    monkeypatch.delenv("MINIGRPO_WRITE_ASSETS")
    rm = RewardModel.from_causal_lm(shipped_anchor)
    with pytest.raises(PermissionError, match="shipped assets"):
        rm.save(asset_path("reward_models", "addition-column-checker"))
    assert tree_hashes(asset_path()) == shipped


def test_sft_into_the_shipped_anchor_is_refused_before_training(monkeypatch, capsys, shipped):
    no_training(monkeypatch)
    assert main(["sft", "--steps", "3", "--device", "cpu", "--out", str(anchor_dir("addition"))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("minigrpo sft: error: ") and "\n" not in err and "MINIGRPO_WRITE_ASSETS=1" in err, err
    assert tree_hashes(asset_path()) == shipped


@pytest.mark.parametrize("command", ["sft", "reward-model"])
@pytest.mark.parametrize("case", ["under-a-file", "a-file", "a-folder-of-other-files"])
def test_a_bad_out_is_refused_before_training(tmp_path, monkeypatch, capsys, command, case):
    """We run as root, so a folder's mode does not stop a write; a path under a regular file does."""
    no_training(monkeypatch)
    (tmp_path / "notes.txt").write_text("a file")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep me")
    out, needle = {"under-a-file": (tmp_path / "notes.txt" / "anchor", "is a file"),
                   "a-file": (tmp_path / "notes.txt", "is a file, not a folder"),
                   "a-folder-of-other-files": (tmp_path / "mine", "folder of other files")}[case]
    args = ["--steps", "3", "--device", "cpu"] if command == "sft" else ["--synthetic", "closeness", "--steps", "3"]
    assert main([command, *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"minigrpo {command}: error: --out ") and "\n" not in err, err
    assert str(out) in err and needle in err, err
    assert (tmp_path / "notes.txt").read_text() == "a file" and (tmp_path / "mine" / "thesis.tex").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "notes.txt"]


def test_a_new_or_earlier_out_folder_is_accepted(tmp_path):
    assert check_out(tmp_path / "a" / "b") == tmp_path / "a" / "b" and not (tmp_path / "a").exists()   # creates nothing
    (tmp_path / "empty").mkdir()
    check_out(tmp_path / "empty")
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / "config.json").write_text("{}")
    check_out(tmp_path / "earlier")


# --- 4. one process per run folder -------------------------------------------------------------------------

def small_run(tmp_path, steps=4):
    from minigrpo.runs.config import TrainConfig
    from minigrpo.runs.lm_run import train_lm

    cfg = TrainConfig(steps=steps, group_size=4, prompts_per_step=4, eval_every=1000, eval_size=10, sample_every=1000,
                      save_every=2, out=str(tmp_path), device="cpu", seed=0)
    return train_lm(cfg, run_dir=tmp_path / "run", progress=False).run_dir


HOLDER = """
import sys, time
from minigrpo.runs.folder import RunLock
locks = [RunLock().acquire(run) for run in sys.argv[1:]]
print("locked", flush=True)
time.sleep(600)
"""


def hold_locks(*runs: Path) -> subprocess.Popen:
    """Another process that holds the locks of ``runs`` until it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, *map(str, runs)], env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=TIMEOUT)


def test_a_second_writer_is_refused_naming_the_holder_and_a_killed_holder_blocks_nothing(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = hold_locks(run)
    try:
        with pytest.raises(RunFolderInUse, match=rf"run folder '{re.escape(str(run))}' is in use by process "
                                                 rf"{holder.pid} \(started [0-9-]+ [0-9:]+\); wait for it or stop it"):
            RunLock().acquire(run)
    finally:
        kill(holder)
    assert json.loads((run / ".lock").read_text())["pid"] == holder.pid        # the dead holder's record is left
    with RunLock().acquire(run):                                              # … and blocks nothing
        assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()
        with pytest.raises(RunFolderInUse, match=f"process {os.getpid()}"):  # a second writer in this process too
            RunLock().acquire(run)
    RunLock().acquire(run).release()                                          # released at the end of the with


def test_train_lm_refuses_a_folder_in_use_before_touching_it(tmp_path):
    """Through the API: resuming a run folder in use, or starting a new run in a folder in use, fails at
    once and writes nothing there."""
    from minigrpo.runs.config import TrainConfig
    from minigrpo.runs.lm_run import train_lm

    run = small_run(tmp_path)
    before = tree_hashes(run)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    holder = hold_locks(run, fresh)
    try:
        with pytest.raises(RunFolderInUse, match=f"process {holder.pid}"):
            train_lm(None, resume=run, progress=False)
        cfg = TrainConfig(steps=2, group_size=4, prompts_per_step=4, eval_size=10, out=str(tmp_path), device="cpu")
        with pytest.raises(RunFolderInUse, match=f"process {holder.pid}"):
            train_lm(cfg, run_dir=fresh, progress=False)
    finally:
        kill(holder)
    without_lock = lambda hashes: {k: v for k, v in hashes.items() if k != ".lock"}
    assert without_lock(tree_hashes(run)) == without_lock(before)
    assert [p.name for p in fresh.iterdir()] == [".lock"]
    assert not list(tmp_path.glob("train-*"))


def test_two_resumes_at_once_the_second_exits_2_naming_the_first_and_no_step_is_written_twice(tmp_path):
    """The issue's case: two `train --resume RUN` at once interleaved their metrics. The second is refused in
    one line naming the first's PID; the first, SIGKILLed afterwards, leaves a lock that does not block the
    next resume; and metrics.jsonl holds each step once."""
    run = small_run(tmp_path)
    first_err = tmp_path / "first.stderr"
    first = subprocess.Popen([sys.executable, "-m", "minigrpo.cli", "train", "--resume", str(run), "--steps", "100000",
                              "--json"], env=ENV, stdout=subprocess.DEVNULL, stderr=open(first_err, "w"))
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:                          # until the first holds the lock and has written a step
            holder = json.loads((run / ".lock").read_text() or "{}") if (run / ".lock").exists() else {}
            steps = [r["step"] for r in RunFolder(run).read("metrics.jsonl")]
            if holder.get("pid") == first.pid and max(steps) > 4:
                break
            assert first.poll() is None, first_err.read_text()[-3000:]
            assert time.monotonic() < deadline, "the first resume made no progress"
            time.sleep(0.05)
        second = cli("train", "--resume", str(run), "--steps", "100000", "--json")
        line = error_line(second, "train")
        assert f"run folder '{run}' is in use by process {first.pid}" in line and "wait for it or stop it" in line
        assert second.stdout == ""
        assert first.poll() is None                            # the first was not disturbed
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=TIMEOUT)
    steps = [r["step"] for r in RunFolder(run).read("metrics.jsonl")]
    assert steps == list(range(len(steps))), steps             # one writer: each step once, in order
    ckpt = RunFolder.step_of(RunFolder(run).latest_checkpoint())
    third = cli("train", "--resume", str(run), "--steps", str(ckpt + 2), "--json")   # the stale lock blocks nothing
    assert third.returncode == 0, third.stderr[-3000:]
    assert json.loads(third.stdout)["steps"] == ckpt + 2
    assert [r["step"] for r in RunFolder(run).read("metrics.jsonl")] == list(range(ckpt + 3))
