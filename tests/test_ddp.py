"""Data-parallel runs (runs/parallel.py): ``accelerate launch --num_processes 2 -m minigrpo train`` on a CPU
(gloo) equals the 1-process run with the same global batch — the same sampled completions, the same
metrics and weights to float rounding — and a run resumes on the other number of processes.

The runs are subprocesses on the shipped tiny addition anchor, 4 steps of P = 2 prompts × G = 4, so
each of 2 processes holds one prompt: ``samples.jsonl`` (the first two prompts) then shows one
prompt sampled on each process. ``accelerate launch --multi_gpu`` is torchrun underneath; on a
machine without a GPU (and with ``--device cpu``) the run's processes talk through gloo.

Why the attention key bias is compared more loosely: its gradient is zero in exact arithmetic (adding
a constant to every key's score leaves the softmax unchanged), so what it receives is rounding noise,
which differs with how the batch was split, and Adam scales a gradient to a step of about lr whatever
its size. It can move by up to Σ lr_t; every other weight agrees within 1e-5.
"""
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minigrpo.runs.folder import RunFolder

STEPS, LR, WARMUP = 4, 2e-4, 10
FLAGS = ["--task", "addition", "--steps", str(STEPS), "--group-size", "4", "--prompts", "2", "--eval-every", "1000",
         "--eval-size", "8", "--eval-samples", "0", "--save-every", "2", "--sample-every", "1",
         "--keep-checkpoints", "5", "--device", "cpu", "--seed", "3", "--lr", str(LR), "--warmup-steps", str(WARMUP), "--json"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
TIMEOUT = 600            # a loaded 2-core machine can take a minute to start each process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(processes: int, *args: str) -> subprocess.CompletedProcess:
    """``minigrpo train`` on one process, or under ``accelerate launch`` on several."""
    if processes == 1:
        cmd = [sys.executable, "-m", "minigrpo", "train", *args]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), "-m", "minigrpo", "train", *args]
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def new_run(out: Path, processes: int, *extra: str) -> Path:
    train(processes, *FLAGS, "--out", str(out), *extra)
    (run,) = out.glob("train-*")                      # only the main process made a folder
    return run


def records(run: Path, name: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "step_seconds"} for r in RunFolder(run).read(name)]


def weights(run: Path, step: int) -> dict:
    from safetensors.torch import load_file

    ckpt = run / "checkpoints" / f"step-{step:06d}"
    name = "adapter_model.safetensors" if (ckpt / "adapter_model.safetensors").exists() else "model.safetensors"
    return load_file(ckpt / name)


def assert_same_run(run: Path, ref: Path) -> None:
    """The same completions, metrics to float rounding, weights within 1e-5 (the key bias within Σ lr_t)."""
    assert records(run, "samples.jsonl") == records(ref, "samples.jsonl")
    got, want = records(run, "metrics.jsonl"), records(ref, "metrics.jsonl")
    assert [sorted(r) for r in got] == [sorted(r) for r in want]
    for a, b in zip(got, want):
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5, nan_ok=True), (a["step"], key)
    key_bias_bound = sum(LR * min(1.0, t / (WARMUP + 1)) for t in range(1, STEPS + 1))
    for step in (2, STEPS):
        wa, wb = weights(run, step), weights(ref, step)
        assert wa.keys() == wb.keys()
        for name in wa:
            if name.endswith("attn.c_attn.bias"):          # (q, k, v) biases: the k third is the key bias
                d = wa[name].numel() // 3
                torch.testing.assert_close(wa[name][d:2 * d], wb[name][d:2 * d], atol=key_bias_bound, rtol=0)
                rest = torch.cat([torch.arange(d), torch.arange(2 * d, 3 * d)])          # q and v
                wa[name], wb[name] = wa[name][rest], wb[name][rest]
            torch.testing.assert_close(wa[name], wb[name], atol=1e-5, rtol=0, msg=f"step {step}: {name}")


def resumed_from_step_2(run: Path, to: Path, processes: int) -> Path:
    """A copy of ``run`` as if it had stopped after its step-2 checkpoint, resumed to the end on ``processes``."""
    shutil.copytree(run, to)
    (to / "checkpoints" / "latest").write_text("step-000002")
    train(processes, "--resume", str(to), "--json")
    return to


@pytest.fixture(scope="module")
def one(tmp_path_factory) -> Path:
    """The 1-process run every other run here must reproduce."""
    return new_run(tmp_path_factory.mktemp("one"), 1)


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> Path:
    return new_run(tmp_path_factory.mktemp("two"), 2)


@pytest.mark.slow
def test_two_processes_equal_one(two, one):
    assert_same_run(two, one)
    assert len(list(two.parent.iterdir())) == 1


@pytest.mark.slow
def test_a_two_process_run_resumes_on_one(two, one, tmp_path):
    assert_same_run(resumed_from_step_2(two, tmp_path / "run", 1), one)


@pytest.mark.slow
def test_a_one_process_run_resumes_on_two(one, tmp_path):
    assert_same_run(resumed_from_step_2(one, tmp_path / "run", 2), one)


@pytest.mark.slow
def test_lora_with_token_mean_and_batch_mean_on_two_processes_equals_one(tmp_path):
    """LoRA (only the adapter's gradients are summed) under the two normalisers that read the whole batch:
    the token mean (Σm over every prompt) and the batch-mean baseline."""
    extra = ("--lora-r", "2", "--recipe", "dapo_like", "--baseline", "batch_mean")
    assert_same_run(new_run(tmp_path / "two", 2, *extra), new_run(tmp_path / "one", 1, *extra))


# --- the pieces, in one process ------------------------------------------------------------------------

def test_a_prompt_gets_the_same_completions_in_any_batch():
    """Random numbers drawn per prompt from (seed, step, p): the 4-prompt batch sampled whole equals its
    halves sampled apart, as two processes would."""
    from minigrpo.core.sampling import sample_group
    from minigrpo.lm.models import load_causal_lm
    from minigrpo.lm.policy import CausalLMPolicy
    from minigrpo.lm.sft import anchor_dir
    from minigrpo.lm.tokens import encode_prompts
    from minigrpo.runs.parallel import prompt_noise

    model, tok = load_causal_lm(str(anchor_dir("addition")), device="cpu")
    policy = CausalLMPolicy(model, tok.pad_token_id)
    prompts = encode_prompts(tok, ["12+7=", "3+45=", "99+1=", "5+5="])                  # (4, L)
    kw = dict(max_new_tokens=4, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)
    whole = sample_group(policy, prompts, 8, noise=prompt_noise(0, 5, range(4), 8, 4), **kw)
    halves = [sample_group(policy, prompts[i:i + 2], 8, noise=prompt_noise(0, 5, range(i, i + 2), 8, 4), **kw)
              for i in (0, 2)]
    assert torch.equal(whole.completions, torch.cat([h.completions for h in halves]))
    torch.testing.assert_close(whole.logp, torch.cat([h.logp for h in halves]))
    other_step = sample_group(policy, prompts, 8, noise=prompt_noise(0, 6, range(4), 8, 4), **kw)
    assert not torch.equal(whole.completions, other_step.completions)


def test_sampling_refuses_noise_of_the_wrong_shape():
    from minigrpo.bandit.policies import TabularSoftmaxPolicy
    from minigrpo.core.sampling import sample_group

    with pytest.raises(ValueError, match="noise has shape"):
        sample_group(TabularSoftmaxPolicy(1, 3), torch.zeros(2, dtype=torch.long), 4, noise=torch.rand(2, 4, 2))


@pytest.mark.parametrize("settings,match", [
    ({"method": "dpo", "group_size": 4}, "--method dpo does not run on several processes yet"),
    ({"recipe": "ppo", "prompts_per_step": 4}, "--method ppo does not run on several processes yet"),
    ({"prompts_per_step": 3}, "--prompts-per-step 3 cannot be shared by 2 processes"),
    ({"minibatches": 2, "prompts_per_step": 4}, "--minibatches 2 does not run on several processes yet"),
])
def test_what_several_processes_cannot_run_yet_is_refused_in_one_line(settings, match):
    from minigrpo.runs.config import TrainConfig
    from minigrpo.runs.parallel import refuse_unshared

    cfg = TrainConfig(**settings)
    refuse_unshared(cfg, 1)                                   # one process runs everything
    with pytest.raises(ValueError, match=match):
        refuse_unshared(cfg, 2)
