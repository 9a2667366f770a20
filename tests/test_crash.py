"""Crash safety of LM runs: a run killed with SIGKILL resumes exactly; damaged checkpoints fail by name;
a run that goes non-finite never overwrites its last good checkpoint.

The kill tests run ``python -m minigrpo.cli train`` in a subprocess (one torch thread) on the shipped
tiny addition anchor, and compare the resumed run with an uninterrupted one of the same config:
the same metrics (timing aside), samples, weights and optimizer state, bit for bit.
"""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from minigrpo.runs.folder import RunFolder
from minigrpo.lm.sft import anchor_dir

STEPS, SAVE_EVERY = 40, 5
FLAGS = ["--task", "addition", "--steps", str(STEPS), "--group-size", "4", "--prompts", "4", "--eval-every", "1000",
         "--eval-size", "10", "--save-every", str(SAVE_EVERY), "--device", "cpu", "--seed", "3", "--json"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

# Runs the CLI with RunFolder's writes patched to SIGKILL the process at one chosen moment:
#   meta    while checkpoint step-N is half written (weights in the temporary folder, no meta.json yet)
#   latest  after step-N is renamed into place, before ``latest`` points at it
#   line    half-way through writing step N's line of metrics.jsonl
KILLER = """
import os, signal, sys
from minigrpo.runs import folder as runfolder
from minigrpo.cli import main

when, n = sys.argv[1], int(sys.argv[2])
write_text, append = runfolder._atomic_write_text, runfolder.RunFolder.append

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def patched_write_text(path, text):
    if when == "meta" and path.name == "meta.json" and path.parent.name == f".tmp-step-{n:06d}":
        die()
    if when == "latest" and path.name == "latest" and text == f"step-{n:06d}":
        die()
    write_text(path, text)

def patched_append(self, name, record):
    if when == "line" and name == "metrics.jsonl" and record.get("step") == n:
        with open(self.path / name, "a") as f:
            f.write(runfolder.json.dumps(record)[:25])
        die()
    append(self, name, record)

runfolder._atomic_write_text, runfolder.RunFolder.append = patched_write_text, patched_append
sys.exit(main(sys.argv[3:]))
"""


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "minigrpo.cli", *args], env=ENV, capture_output=True, text=True,
                          timeout=300)


def run_dir_in(out: Path) -> Path:
    (run,) = out.glob("train-*")
    return run


def records(path: Path, name: str) -> list[dict]:
    """A .jsonl file's records with the wall-clock timing removed (the one thing a resume may change)."""
    return [{k: v for k, v in r.items() if k != "step_seconds"} for r in RunFolder(path).read(name)]


def assert_same_run(run: Path, ref: Path) -> None:
    """Same metrics, samples, final weights and optimizer state, bit for bit."""
    from safetensors.torch import load_file

    assert records(run, "metrics.jsonl") == records(ref, "metrics.jsonl")
    assert records(run, "samples.jsonl") == records(ref, "samples.jsonl")
    a, b = RunFolder(run).latest_checkpoint(), RunFolder(ref).latest_checkpoint()
    assert a.name == b.name == f"step-{STEPS:06d}"
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    sa, sb = RunFolder.load_state(a), RunFolder.load_state(b)
    for (ka, ta), (kb, tb) in zip(tensors(sa), tensors(sb)):
        assert ka == kb and torch.equal(ta, tb), ka


def tensors(obj, prefix=""):
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            yield from tensors(obj[k], f"{prefix}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from tensors(v, f"{prefix}[{i}]")


def last_step(metrics: Path) -> int:
    if not metrics.exists():
        return -1
    steps = [json.loads(l)["step"] for l in metrics.read_text().splitlines()[:-1]]   # complete lines only
    return max(steps, default=-1)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run every killed-and-resumed run must reproduce."""
    if not (anchor_dir("addition") / "config.json").exists():
        pytest.fail("the shipped anchor assets/anchors/addition is missing")
    out = tmp_path_factory.mktemp("reference")
    res = cli("train", *FLAGS, "--out", str(out))
    assert res.returncode == 0, res.stderr
    return run_dir_in(out)


def test_sigkill_mid_training_then_resume_equals_an_uninterrupted_run(reference, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "minigrpo.cli", "train", *FLAGS, "--out", str(tmp_path)],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while True:                          # wait until a step past the second checkpoint is on disk
            runs = list(tmp_path.glob("train-*"))
            if runs and last_step(runs[0] / "metrics.jsonl") >= 2 * SAVE_EVERY + 2:
                break
            assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    run = run_dir_in(tmp_path)
    folder = RunFolder(run)
    ckpt_step = RunFolder.step_of(folder.latest_checkpoint())
    assert SAVE_EVERY * 2 <= ckpt_step < STEPS
    assert last_step(run / "metrics.jsonl") > ckpt_step        # steps after the checkpoint are lost, then redone
    res = cli("train", "--resume", str(run), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["steps"] == STEPS
    assert_same_run(run, reference)


@pytest.mark.parametrize("when", ["meta", "latest", "line"])
def test_killed_while_writing_then_resume_equals_an_uninterrupted_run(reference, tmp_path, when):
    """Killed half-way through a checkpoint (before its meta.json; after its rename, before ``latest``) or
    half-way through a metrics line: the resumed run still reproduces the uninterrupted one."""
    n = 2 * SAVE_EVERY if when != "line" else 2 * SAVE_EVERY + 2
    res = subprocess.run([sys.executable, "-c", KILLER, when, str(n), "train", *FLAGS, "--out", str(tmp_path)],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == -signal.SIGKILL, res.stderr
    run = run_dir_in(tmp_path)
    folder = RunFolder(run)
    expected = SAVE_EVERY if when in ("meta", "latest") else 2 * SAVE_EVERY
    assert folder.latest_checkpoint().name == f"step-{expected:06d}"
    if when == "meta":
        assert (folder.ckpt_root / f".tmp-step-{n:06d}").is_dir()          # the half-written one is left behind
    if when == "line":
        assert not (run / "metrics.jsonl").read_text().endswith("\n")     # a torn last line
    res = cli("train", "--resume", str(run), "--json")
    assert res.returncode == 0, res.stderr
    assert_same_run(run, reference)
    assert not list(folder.ckpt_root.glob(".tmp-*"))


# --- damaged checkpoints -------------------------------------------------------------------------------

@pytest.fixture
def damaged_run(reference, tmp_path) -> Path:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    return run


def _truncate(f: Path) -> None:
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _flip_a_byte(f: Path) -> None:
    data = bytearray(f.read_bytes())
    data[len(data) - 7] ^= 0xFF                   # inside the tensor data: the file still parses
    f.write_bytes(bytes(data))


@pytest.mark.parametrize("file,damage", [("model.safetensors", _truncate), ("model.safetensors", _flip_a_byte),
                                         ("trainer_state.pt", _truncate), ("trainer_state.pt", _flip_a_byte),
                                         ("config.json", Path.unlink)],
                         ids=["weights-truncated", "weights-byte-flipped", "state-truncated", "state-byte-flipped",
                              "config-missing"])
def test_damaged_checkpoint_is_a_clear_error_naming_the_file(damaged_run, file, damage, capsys):
    from minigrpo.cli import main

    ckpt = RunFolder(damaged_run).latest_checkpoint()
    damage(ckpt / file)
    with pytest.raises(ValueError, match=f"{ckpt.name}/{file}"):
        RunFolder(damaged_run).latest_checkpoint()
    assert main(["train", "--resume", str(damaged_run), "--steps", str(STEPS + 1), "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{ckpt.name}/{file}" in err and len(err.splitlines()) == 1


def test_checkpoint_without_checksums_still_catches_truncated_weights(damaged_run):
    """Checkpoints written before meta.json held SHA-256 sums: their safetensors headers are checked."""
    ckpt = RunFolder(damaged_run).latest_checkpoint()
    (ckpt / "meta.json").write_text(json.dumps({"step": STEPS}))
    RunFolder.verify_checkpoint(ckpt)                                      # intact: passes
    _truncate(ckpt / "model.safetensors")
    with pytest.raises(ValueError, match="model.safetensors.*truncated"):
        RunFolder(damaged_run).latest_checkpoint()


def test_trainer_state_is_loaded_with_weights_only(tmp_path):
    """A pickle that would run code (here: builds a Path object) is refused, and the error names the file."""
    torch.save({"step": 1, "evil": Path("/")}, tmp_path / "trainer_state.pt")
    with pytest.raises(ValueError, match="trainer_state.pt"):
        RunFolder.load_state(tmp_path)


def test_a_torn_line_anywhere_but_the_end_is_a_named_error(tmp_path):
    folder = RunFolder(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2\n{"step": 3}\n')
    with pytest.raises(ValueError, match="metrics.jsonl.*line 2"):
        folder.read("metrics.jsonl")
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, "rew')
    assert folder.read("metrics.jsonl") == [{"step": 1}]


# --- a run that goes non-finite ----------------------------------------------------------------------------

def file_hashes(ckpt: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(ckpt.iterdir())}


def tiny_cfg(tmp_path, **kw):
    from minigrpo.runs.config import TrainConfig

    base = dict(steps=6, group_size=4, prompts_per_step=4, eval_every=100, eval_size=10, sample_every=100,
                save_every=3, out=str(tmp_path), device="cpu", seed=0)
    return TrainConfig(**{**base, **kw})


def poison_log_probs(monkeypatch, at_call: int):
    """From the ``at_call``-th graph-building call on, the policy's log-probs are NaN (as if its forward
    pass overflowed)."""
    from minigrpo.lm.policy import CausalLMPolicy

    calls = {"n": 0}
    orig = CausalLMPolicy.log_probs

    def log_probs(self, prompts, completions):
        out = orig(self, prompts, completions)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] >= at_call:
                return out * float("nan")
        return out

    monkeypatch.setattr(CausalLMPolicy, "log_probs", log_probs)


def run_until_it_fails(cfg, run: Path) -> tuple[dict, Exception]:
    """Train until the run raises; return the hashes of checkpoint 3 taken right after it was written."""
    from minigrpo.runs.lm_run import train_lm

    seen = {}

    def on_step(record):
        if record["step"] == 4:                       # checkpoint 3 was written at the end of step 3
            seen.update(file_hashes(RunFolder(run).latest_checkpoint()))

    with pytest.raises(FloatingPointError) as err:
        train_lm(cfg, run_dir=run, on_step=on_step, progress=False)
    return seen, err.value


def assert_checkpoint_3_is_intact(run: Path, hashes: dict) -> None:
    from safetensors.torch import load_file

    ckpt = RunFolder(run).latest_checkpoint()                       # verified against its SHA-256 sums
    assert ckpt.name == "step-000003"
    assert file_hashes(ckpt) == hashes
    assert [p.name for p in RunFolder(run).ckpt_root.glob("step-*")] == ["step-000003"]
    assert all(torch.isfinite(t).all() for t in load_file(ckpt / "model.safetensors").values())
    assert RunFolder.load_state(ckpt)["step"] == 3


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    """With gradient clipping on (the default), a NaN loss at step 5 stops the run before the optimizer
    step; checkpoint 3 is left byte for byte as it was written."""
    poison_log_probs(monkeypatch, at_call=5)
    hashes, err = run_until_it_fails(tiny_cfg(tmp_path), tmp_path / "run")
    assert "non-finite" in str(err) or "gradient norm is nan" in str(err)
    assert [r["step"] for r in RunFolder(tmp_path / "run").read("metrics.jsonl")] == [0, 1, 2, 3, 4]
    assert_checkpoint_3_is_intact(tmp_path / "run", hashes)


def test_non_finite_weights_are_never_checkpointed(tmp_path, monkeypatch):
    """Should NaN reach the weights anyway (here the optimizer's 6th update writes one), the checkpoint
    of step 6 is refused, naming the parameter, and checkpoint 3 is kept byte for byte."""
    calls = {"n": 0}
    step = torch.optim.AdamW.step

    def poisoned_step(self, *args, **kwargs):
        out = step(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 6:
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = float("nan")
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", poisoned_step)
    hashes, err = run_until_it_fails(tiny_cfg(tmp_path), tmp_path / "run")
    assert "step-000006 not written" in str(err) and "holds NaN or inf" in str(err) and "step-000003" in str(err)
    assert_checkpoint_3_is_intact(tmp_path / "run", hashes)


def test_non_finite_loss_without_clipping_stops_at_the_step_it_happens(tmp_path, monkeypatch):
    poison_log_probs(monkeypatch, at_call=5)
    hashes, err = run_until_it_fails(tiny_cfg(tmp_path, max_grad_norm=None), tmp_path / "run")
    assert "non-finite" in str(err)
    assert [r["step"] for r in RunFolder(tmp_path / "run").read("metrics.jsonl")] == [0, 1, 2, 3, 4]
    assert_checkpoint_3_is_intact(tmp_path / "run", hashes)


def test_save_checkpoint_refuses_non_finite_tensors_by_name(tmp_path):
    from minigrpo.lm.models import TinyGPT2, build_tiny_gpt2
    from minigrpo.lm.tokens import char_tokenizer

    tok = char_tokenizer("0123456789+=")
    model = build_tiny_gpt2(tok, TinyGPT2(n_layer=1, n_embd=16, n_head=2, n_positions=16))
    folder = RunFolder(tmp_path).create({})
    folder.save_checkpoint(1, model, tok, {"step": 1, "optimizer": {"state": {0: {"exp_avg": torch.zeros(3)}}}})
    before = file_hashes(folder.latest_checkpoint())
    with pytest.raises(FloatingPointError, match=r"optimizer\.state\.0\.exp_avg holds NaN"):
        folder.save_checkpoint(2, model, tok, {"step": 2, "optimizer": {"state": {0: {"exp_avg": torch.tensor([1.0, float("inf")])}}}})
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"transformer\.h\.0\.mlp\.c_fc\.weight holds NaN.*step-000001"):
        folder.save_checkpoint(2, model, tok, {"step": 2})
    assert folder.latest_checkpoint().name == "step-000001" and file_hashes(folder.latest_checkpoint()) == before
    assert not (folder.ckpt_root / "step-000002").exists() and not (folder.ckpt_root / ".tmp-step-000002").exists()
