"""GPU checks (issue 16): what a CPU run cannot show. Skipped where torch sees no CUDA GPU.

* bf16 against fp32 on the same weights: log-probs, greedy decoding and seeded sampling;
* the LoRA anchor (the same weights, adapter off) on the GPU equals the base model;
* gradient checkpointing on the GPU: the same log-probs and gradients, less memory;
* a short addition run on the GPU reaches the accuracy of the same run on the CPU;
* sampling makes no host↔device copy per decoded token (counted with torch.profiler).

``pytest -m gpu tests/test_gpu.py`` runs them (``bench/gpu_check.sh`` does, on a GPU machine). Each
takes seconds on an H100. ``MINIGRPO_TEST_DEVICE=cpu`` runs them on the CPU instead, to debug a
test without a GPU (the memory check then skips: it reads CUDA's allocator).
"""
from __future__ import annotations

import copy
import os

import pytest
import torch

DEVICE = os.environ.get("MINIGRPO_TEST_DEVICE", "cuda")
ON_CUDA = DEVICE.startswith("cuda")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(ON_CUDA and not torch.cuda.is_available(),
                                 reason="needs a CUDA GPU (torch.cuda.is_available() is False); "
                                        "MINIGRPO_TEST_DEVICE=cpu runs these on the CPU for debugging")]


@pytest.fixture(scope="module")
def anchor_src():
    from minigrpo.lm.sft import anchor_dir

    src = anchor_dir("addition")
    if not (src / "config.json").exists():
        pytest.fail(f"the shipped addition anchor {src} is missing")
    return str(src)


@pytest.fixture(scope="module")
def problems():
    from minigrpo.lm.tasks import AdditionTask

    return AdditionTask(2).sample(64, "test", torch.Generator().manual_seed(0))     # mixed lengths: left padding


def policy_on(src, dtype=None, **kwargs):
    from minigrpo.lm.models import load_causal_lm
    from minigrpo.lm.policy import CausalLMPolicy

    model, tok = load_causal_lm(src, device=DEVICE)
    return CausalLMPolicy(model, tok.pad_token_id, autocast_dtype=dtype, **kwargs), tok


def rollout(policy, ids, G, T, seed=0, **kwargs):
    """G completions of T tokens per prompt, drawn with a device generator seeded ``seed``."""
    from minigrpo.core.sampling import sample_group

    return sample_group(policy, ids, G, max_new_tokens=T,
                        generator=torch.Generator(device=DEVICE).manual_seed(seed), **kwargs)


def prompt_ids(tok, problems):
    from minigrpo.lm.tokens import encode_prompts

    return encode_prompts(tok, [p.prompt for p in problems]).to(DEVICE)                      # (P, L)


# --- bf16 against fp32 on the same weights --------------------------------------------------------------------
def test_bf16_log_probs_match_fp32_on_the_same_weights(anchor_src, problems):
    """log π(y_t | …) under bf16 autocast against fp32, on tokens the fp32 policy sampled.

    Tolerance: bf16 keeps 8 significant bits, so every matmul input is rounded by up to 2⁻⁹ ≈ 0.2 %
    relative, and log π moves by a few hundredths of a nat on most tokens. The log-sum-exp runs in
    fp32 (``token_logp``), so nothing more is lost there. The tail is wider: after the answer's EOS
    the anchor is off its training distribution, logits sit close together, and a rounding can move
    log π by tenths. Measured with AMX bf16 on a CPU (the same rounding of inputs, fp32 sums): mean
    0.007, 90th percentile 0.018, max 0.36–0.53 nats over 4,096 tokens. Asserted: mean < 0.02, 90th
    percentile < 0.05, max < 1. A real fault (positions, mask, cache) moves log π by several nats
    (up to 15 for a position shift, bench/positions_under_padding.py)."""
    fp32, tok = policy_on(anchor_src)
    bf16, _ = policy_on(anchor_src, torch.bfloat16)
    ids = prompt_ids(tok, problems)
    ro = rollout(fp32, ids, 8, 8)                                                   # (64, 8, 8) tokens
    with torch.no_grad():
        a = fp32.log_probs(ids, ro.completions)
        b = bf16.log_probs(ids, ro.completions)
    assert b.dtype == torch.float32
    d = (a - b).abs().flatten()
    q90 = torch.quantile(d.cpu(), 0.9).item()
    assert d.mean() < 0.02 and q90 < 0.05 and d.max() < 1.0, (d.mean().item(), q90, d.max().item())
    torch.testing.assert_close(a, ro.logp, atol=1e-4, rtol=0)          # fp32: sampling's log-probs = the pass's


def test_bf16_decoding_picks_the_same_tokens_as_fp32(anchor_src, problems):
    """Greedy decoding: the argmax changes only where two tokens are within bf16 rounding of each
    other. Seeded sampling draws with the same uniforms (the CDF inverted at u): a token changes only
    where u falls within the rounding of a CDF boundary, and every token after a change is drawn
    from another prefix, so whole completions are compared. Measured with AMX bf16 on a CPU: greedy
    100 %, sampled 99.4–99.6 % of 512 completions identical; asserted: 95 % each."""
    from minigrpo.lm.evaluate import greedy_completions

    fp32, tok = policy_on(anchor_src)
    bf16, _ = policy_on(anchor_src, torch.bfloat16)
    prompts = [p.prompt for p in problems]
    a, b = greedy_completions(fp32, tok, prompts, 4), greedy_completions(bf16, tok, prompts, 4)
    assert sum(x == y for x, y in zip(a, b)) >= 0.95 * len(a), list(zip(a, b))
    ids = prompt_ids(tok, problems)
    ra, rb = rollout(fp32, ids, 8, 4, seed=3), rollout(bf16, ids, 8, 4, seed=3)
    same = (ra.completions == rb.completions).all(-1).float().mean().item()      # whole completions
    assert same >= 0.95, same


# --- the LoRA anchor ---------------------------------------------------------------------------------------------
def test_lora_adapter_off_anchor_is_the_base_model_on_the_device(anchor_src, problems):
    """With a non-zero adapter the policy moves; its anchor (adapter off) scores and samples exactly as
    the base model does. fp32, same kernels on the same weights: equal to 1e-5 (not bit for bit,
    because peft adds the adapter's zero contribution in another order only when it is on)."""
    from minigrpo.lm.models import add_lora
    from minigrpo.lm.policy import AdapterOffAnchor, CausalLMPolicy

    base, tok = policy_on(anchor_src)
    lora_model = add_lora(copy.deepcopy(base.model), 4)
    with torch.no_grad():
        for name, p in lora_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator(device=DEVICE).manual_seed(0))
    policy = CausalLMPolicy(lora_model, tok.pad_token_id)
    anchor = policy.anchor()
    assert isinstance(anchor, AdapterOffAnchor) and anchor.device.type == torch.device(DEVICE).type
    ids = prompt_ids(tok, problems)
    ro = rollout(base, ids, 4, 6)
    with torch.no_grad():
        ref = base.log_probs(ids, ro.completions)
        torch.testing.assert_close(anchor.log_probs(ids, ro.completions), ref, atol=1e-5, rtol=0)
        assert (policy.log_probs(ids, ro.completions) - ref).abs().max() > 1e-2          # the adapter is on
    assert torch.equal(rollout(anchor, ids, 4, 6).completions, ro.completions)


# --- gradient checkpointing ------------------------------------------------------------------------------------
def test_gradient_checkpointing_gives_the_same_gradients_with_less_memory(problems):
    """The same log-probs and gradients with and without checkpointing (fp32: to rounding, 1e-5), on a
    model deep enough for activations to dominate its memory; with checkpointing the peak memory of
    forward + backward is at most 80 % of without (the saving is most of (layers − 1)/layers of the
    activations; 80 % leaves room for the weights, gradients and the logits, which it does not save)."""
    from minigrpo.lm.models import TinyGPT2, build_tiny_gpt2
    from minigrpo.lm.policy import CausalLMPolicy
    from minigrpo.lm.tokens import char_tokenizer, encode_prompts

    tok = char_tokenizer("0123456789+=")
    model = build_tiny_gpt2(tok, TinyGPT2(n_layer=8, n_embd=256, n_head=4, n_positions=128), seed=0).to(DEVICE)
    ids = encode_prompts(tok, [p.prompt for p in problems[:16]]).to(DEVICE)              # (16, L)
    y = torch.randint(3, len(tok), (16, 8, 64), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(2)).to(DEVICE)

    def pass_with(checkpointing):
        policy = CausalLMPolicy(copy.deepcopy(model), tok.pad_token_id, gradient_checkpointing=checkpointing)
        if ON_CUDA:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        lp = policy.full_log_probs(ids, y)                  # the pass checkpointing uses, both ways
        (lp * w).sum().backward()
        peak = torch.cuda.max_memory_allocated() - before if ON_CUDA else None
        return lp.detach(), [p.grad for p in policy.parameters()], peak

    a, ga, peak_plain = pass_with(False)
    b, gb, peak_ckpt = pass_with(True)
    torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
    for x, z in zip(gb, ga):
        torch.testing.assert_close(x, z, atol=1e-5, rtol=1e-4)
    if ON_CUDA:
        assert peak_ckpt < 0.8 * peak_plain, (peak_ckpt / 2 ** 20, peak_plain / 2 ** 20)


# --- a short run learns as on the CPU ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    """The CPU run of tests/test_trainer.py::test_grpo_lifts_held_out_accuracy_above_the_shipped_anchor."""
    from minigrpo.runs.config import TrainConfig
    from minigrpo.runs.lm_run import train_lm

    out = tmp_path_factory.mktemp("cpu-run")
    cfg = TrainConfig(steps=40, eval_every=40, eval_size=200, save_every=0, out=str(out), device="cpu", seed=1)
    return train_lm(cfg, run_dir=out / "run", progress=False)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_short_addition_run_on_the_device_reaches_the_cpu_runs_accuracy(cpu_run, precision, tmp_path):
    """The same 40 steps on the device. Its random numbers differ from the CPU's (another generator),
    so the two runs are independent draws: held-out accuracy on 200 prompts has a standard error of
    at most 0.035 each, 0.05 for the difference, and the device run must come within 0.1 (two
    standard errors) of the CPU's, and clear the anchor as the CPU run does."""
    from minigrpo.runs.config import TrainConfig
    from minigrpo.runs.lm_run import train_lm

    cfg = TrainConfig(steps=40, eval_every=40, eval_size=200, save_every=0, out=str(tmp_path), device=DEVICE,
                      seed=1, precision=precision)
    res = train_lm(cfg, run_dir=tmp_path / "run", progress=False)
    assert res.anchor_accuracy == pytest.approx(cpu_run.anchor_accuracy, abs=0.05)   # greedy: same anchor
    assert res.final_accuracy >= cpu_run.final_accuracy - 0.1, (res.final_accuracy, cpu_run.final_accuracy)
    assert res.final_accuracy > res.anchor_accuracy + 0.1, (res.anchor_accuracy, res.final_accuracy)


# --- no host↔device copy per decoded token ----------------------------------------------------------------------
def copies_while_sampling(policy, ids, T, **kwargs) -> tuple[int, int]:
    """(host↔device copies, host reads of a device value) during one rollout of T tokens, counted by
    torch.profiler: CUDA memcpy activity (HtoD, DtoH; none on a CPU) and ``aten::_local_scalar_dense``
    (what ``.item()``, ``bool(t)`` and the like run, on any device)."""
    from torch.profiler import ProfilerActivity, profile

    rollout(policy, ids, 4, T, **kwargs)                                                  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ON_CUDA else [])
    with profile(activities=activities) as prof:
        rollout(policy, ids, 4, T, **kwargs)
        if ON_CUDA:
            torch.cuda.synchronize()
    names = [e.name.lower() for e in prof.events()]
    copies = sum("memcpy" in n and ("htod" in n or "dtoh" in n) for n in names)
    return copies, names.count("aten::_local_scalar_dense")


def test_sampling_makes_no_host_device_copy_per_token(anchor_src, problems):
    """Without EOS (the benchmark's full-length completions) the decode loop keeps everything on the
    device: the counts are the same for 8 and 32 tokens (the prompt pass may copy a fixed number of
    times). The next token's cache column is a view of a tensor made once on the device
    (``KVCacheDecoder.cols``), not a ``torch.tensor`` copied over at every step."""
    policy, tok = policy_on(anchor_src)
    ids = prompt_ids(tok, problems[:8])
    n8, n32 = copies_while_sampling(policy, ids, 8), copies_while_sampling(policy, ids, 32)
    assert n32 == n8, (n8, n32)


def test_with_eos_the_one_read_per_token_is_the_all_ended_check(anchor_src, problems):
    """With an EOS, ``sampling._decode`` reads one boolean a token (``ended.all()``, to stop once every
    completion has ended), and on a GPU that read is one device→host copy: one of each per token,
    nothing else. An EOS id that never comes keeps all T steps running."""
    policy, tok = policy_on(anchor_src)
    ids = prompt_ids(tok, problems[:8])
    never = len(tok) + 1
    (c8, r8), (c32, r32) = (copies_while_sampling(policy, ids, T, eos_id=never, pad_id=tok.pad_token_id) for T in (8, 32))
    assert r32 - r8 == 24 and c32 - c8 <= 24, ((c8, r8), (c32, r32))
