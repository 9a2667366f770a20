"""The speed work (issue 5): every optimisation gives the same numbers as the plain way, and the
benchmark harness and its CLI run. Timings themselves are not asserted here (they belong to
bench/trl_compare.py and bench/RESULTS.md): these machines are shared and noisy."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minigrpo.lm.policy import (SHORT_CONTEXT, CausalLMPolicy, KVCacheDecoder, fuse_activations,
                         store_matmul_weights_in)
from minigrpo.lm.models import TinyGPT2, build_tiny_gpt2
from minigrpo.core.optimizer import adamw
from minigrpo.core.sampling import sample_group
from minigrpo.runs.speed import (BenchConfig, build_model, matmul_params, model_flops, run_in_process, run_minigrpo,
                                 summarise, table, workload)
from minigrpo.lm.tokens import char_tokenizer, encode_prompts

ALPHABET = "0123456789+="
PROMPTS = ["1+2=", "12+345=", "7="]            # different lengths: left padding in the batch
HAS_TRL = importlib.util.find_spec("trl") is not None
BENCH = Path(__file__).resolve().parent.parent / "bench"      # the TRL peer lives outside the package
sys.path.insert(0, str(BENCH))


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer(ALPHABET)


def make_policy(tok, seed=1, **kwargs):
    model = build_tiny_gpt2(tok, TinyGPT2(n_layer=2, n_embd=32, n_head=2, n_positions=64), seed=seed)
    return CausalLMPolicy(model, tok.pad_token_id, **kwargs)


def grads_of(policy, f, prompts, completions, weight):
    policy.model.zero_grad()
    lp = f(prompts, completions)
    (lp * weight).sum().backward()
    return lp.detach(), [p.grad.clone() for p in policy.model.parameters()]


# --- the prompt once per prompt in the scoring pass ---------------------------------------------------------
@pytest.mark.parametrize("T", [1, 2, 9])
def test_shared_prompt_pass_equals_the_full_pass_values_and_gradients(tok, T):
    """log π and ∇θ of Σ w·log π from the shared-prompt pass = from P·G full rows (left padding, T = 1 too)."""
    policy = make_policy(tok)
    prompts = encode_prompts(tok, PROMPTS)
    completions = torch.randint(3, len(tok), (3, 4, T), generator=torch.Generator().manual_seed(0))
    weight = torch.randn(3, 4, T, generator=torch.Generator().manual_seed(1))
    a, ga = grads_of(policy, policy.full_log_probs, prompts, completions, weight)
    b, gb = grads_of(policy, policy.shared_prompt_log_probs, prompts, completions, weight)
    torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
    for x, y in zip(gb, ga):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-4)


def test_log_probs_uses_the_full_pass_under_gradient_checkpointing(tok, monkeypatch):
    policy = make_policy(tok, gradient_checkpointing=True)
    called = []
    monkeypatch.setattr(policy, "full_log_probs", lambda *a: called.append(1) or torch.zeros(1))
    policy.log_probs(encode_prompts(tok, PROMPTS), torch.full((3, 2, 4), 5))
    assert called


# --- the preallocated KV cache ------------------------------------------------------------------------------
def test_decoder_refuses_more_steps_than_it_was_built_for(tok):
    policy = make_policy(tok)
    dec = policy.decoder(encode_prompts(tok, PROMPTS), 2, 2)
    assert isinstance(dec, KVCacheDecoder)
    y = torch.full((3, 2), 5)
    dec.step(None), dec.step(y), dec.step(y)
    with pytest.raises(ValueError, match="max_new_tokens=2"):
        dec.step(y)


def test_sampling_and_greedy_evaluation_work_with_gradient_checkpointing(tok):
    """transformers turns the cache off in train mode under checkpointing: decoding runs in eval mode,
    and the policy is back in train mode afterwards (a LoRA anchor's decoder too)."""
    from minigrpo.lm.evaluate import greedy_completions
    from minigrpo.lm.models import add_lora

    policy = make_policy(tok, gradient_checkpointing=True)
    prompts = encode_prompts(tok, PROMPTS)
    ro = sample_group(policy, prompts, 2, max_new_tokens=5, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                      generator=torch.Generator().manual_seed(0))
    assert policy.model.training and ro.shape == (3, 2, 5)
    assert len(greedy_completions(policy, tok, PROMPTS, 4)) == 3 and policy.model.training
    lora = CausalLMPolicy(add_lora(build_tiny_gpt2(tok, TinyGPT2(n_layer=2, n_embd=32, n_head=2), seed=0), 4),
                          tok.pad_token_id, gradient_checkpointing=True)
    ro = sample_group(lora.anchor(), prompts, 2, max_new_tokens=4, generator=torch.Generator().manual_seed(0))
    assert ro.shape == (3, 2, 4) and lora.model.training


# --- fused activation ---------------------------------------------------------------------------------------
def test_fused_gelu_is_the_same_function(tok):
    from transformers.activations import GELUTanh, NewGELUActivation

    x = torch.randn(1000) * 4
    torch.testing.assert_close(GELUTanh()(x), NewGELUActivation()(x), atol=1e-6, rtol=1e-6)
    model = build_tiny_gpt2(tok, TinyGPT2(n_layer=2, n_embd=32, n_head=2), seed=0)
    ids = torch.randint(3, len(tok), (2, 7))
    before = model(ids).logits
    assert fuse_activations(model) == 2 and fuse_activations(model) == 0
    assert all(type(m) is not NewGELUActivation for m in model.modules())
    torch.testing.assert_close(model(ids).logits, before, atol=1e-5, rtol=0)


# --- attention choice ---------------------------------------------------------------------------------------
def test_auto_attention_is_plain_on_cpu_for_short_contexts_and_gives_the_same_numbers(tok):
    policy = make_policy(tok)
    assert policy.attention_for(SHORT_CONTEXT) == "eager"
    assert policy.attention_for(SHORT_CONTEXT + 1) == policy.model_attention == "sdpa"
    assert make_policy(tok, attention="model").attention_for(10) is None
    assert make_policy(tok, attention="sdpa").attention_for(10) == "sdpa"
    prompts = encode_prompts(tok, PROMPTS)
    completions = torch.randint(3, len(tok), (3, 2, 5), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        auto = policy.log_probs(prompts, completions)
        assert policy.model.config._attn_implementation == "eager"
        sdpa = make_policy(tok, attention="sdpa").log_probs(prompts, completions)
    assert policy.model.config._attn_implementation == "eager"
    torch.testing.assert_close(auto, sdpa, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="attention="):
        make_policy(tok, attention="")


# --- bf16: one cast per rollout, the anchor's weights stored in bf16 -------------------------------------
def test_bf16_anchor_with_stored_weights_is_bit_identical_to_autocast(tok):
    policy = make_policy(tok, autocast_dtype=torch.bfloat16)
    anchor = policy.anchor()
    attn = anchor.model.transformer.h[0].attn.c_attn
    assert attn.weight.dtype == torch.bfloat16
    assert anchor.model.lm_head.weight.dtype == torch.float32          # tied to the token embedding: kept
    assert policy.model.transformer.h[0].attn.c_attn.weight.dtype == torch.float32
    prompts = encode_prompts(tok, PROMPTS)
    completions = torch.randint(3, len(tok), (3, 2, 6), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(anchor.log_probs(prompts, completions), policy.log_probs(prompts, completions))
    assert store_matmul_weights_in(anchor.model, None) == 0


def test_bf16_sampling_holds_one_autocast_region(tok, monkeypatch):
    policy = make_policy(tok, autocast_dtype=torch.bfloat16)
    entered = []
    real = policy.sampling_context
    monkeypatch.setattr(policy, "sampling_context", lambda: entered.append(1) or real())
    ro = sample_group(policy, encode_prompts(tok, PROMPTS), 3, max_new_tokens=6, eos_id=None,
                      generator=torch.Generator().manual_seed(0))
    assert entered == [1] and ro.shape == (3, 3, 6)
    full = policy.log_probs(encode_prompts(tok, PROMPTS), ro.completions).detach()
    assert (full - ro.logp).abs().max() < 0.1                          # bf16 rounding only


# --- optimizer, tokenizer -----------------------------------------------------------------------------------
def test_fused_adamw_matches_the_foreach_update():
    torch.manual_seed(0)
    a = torch.nn.Linear(8, 4)
    b = torch.nn.Linear(8, 4)
    b.load_state_dict(a.state_dict())
    oa, ob = adamw(a.parameters(), lr=1e-2), torch.optim.AdamW(b.parameters(), lr=1e-2, weight_decay=0.0,
                                                               foreach=True)
    assert oa.defaults["fused"]
    for _ in range(5):
        x = torch.randn(16, 8)
        for m, o in ((a, oa), (b, ob)):
            o.zero_grad()
            m(x).pow(2).mean().backward()
            o.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


def test_char_tokenizer_pads_its_vocabulary(tok):
    big = char_tokenizer(ALPHABET, vocab_size=500)
    assert len(big) == 500 and big.encode("12+3=") == tok.encode("12+3=")
    assert big.decode([4, 499]) == "0<x499>"
    with pytest.raises(ValueError, match="vocab_size=3"):
        char_tokenizer(ALPHABET, vocab_size=3)


# --- the harness --------------------------------------------------------------------------------------------
def test_model_flops_follow_the_issue_arithmetic():
    """tiny ≈ 20 GFLOP and GPT-2 size ≈ 2 TFLOP a step at 8 × 8 × 32 with 6-character prompts."""
    assert matmul_params(12, 768, 50257) == 12 * 12 * 768 ** 2 + 50257 * 768
    tiny = model_flops(4, 128, 15, 8, 8, 6, 32)
    gpt2 = model_flops(12, 768, 15, 8, 8, 6, 32)
    assert 15e9 < tiny < 25e9 and 1.8e12 < gpt2 < 2.3e12
    assert model_flops(4, 128, 15, 8, 8, 6, 64) > tiny


@pytest.mark.parametrize("field,value,needle", [
    ("size", "huge", "size='huge'"), ("prompts", 0, "prompts=0"), ("group_size", 1, "group_size=1"),
    ("precision", "fp16", "precision='fp16'"), ("beta", 0.0, "beta=0.0"), ("vocab", 3, "vocab=3"),
    ("threads", 0, "threads=0"), ("warmup", -1, "warmup=-1"), ("new_tokens", True, "new_tokens=True"),
])
def test_bench_config_names_a_bad_setting(field, value, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
        BenchConfig(**{field: value})


def test_minigrpo_run_reports_steps_rewards_and_memory(tmp_path):
    """One in-process run of the workload (a smaller model): full-length completions, finite figures."""
    cfg = BenchConfig(prompts=2, group_size=3, new_tokens=5, steps=2, warmup=1, threads=1)
    build_model(cfg, tmp_path)
    out = run_in_process(run_minigrpo, cfg, workload(cfg, tmp_path))
    assert len(out["step_seconds"]) == 3 and all(s > 0 for s in out["step_seconds"])
    assert out["completion_lengths"] == [5.0, 5.0, 5.0] and out["peak_rss_mib"] > 50 and out["threads"] == 1
    s = summarise([out, out], cfg, flops=1e9)
    assert s["steps_measured"] == 4 and s["tokens_per_s"] == pytest.approx(2 * 3 * 5 / s["s_per_step"])


def test_bench_cli_prints_one_json_object(capsys):
    from minigrpo.cli import main

    rc = main(["bench", "--prompts", "2", "--group-size", "2", "--new-tokens", "4", "--steps", "1", "--warmup",
               "0", "--rounds", "1", "--threads", "1", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("s_per_step", "tokens_per_s", "peak_rss_mib", "matmul_gflops", "matmul_fraction", "device",
                "bf16_units", "train_pass_fraction"):
        assert key in out and out[key]
    assert out["config"]["size"] == "tiny" and out["peer"] is None
    assert "| tiny | fp32 | 2×2×4 | minigrpo |" in table([out])


def test_bench_cli_bad_flag_is_one_line(capsys):
    from minigrpo.cli import main

    assert main(["bench", "--precision", "fp8"]) == 2
    assert "precision='fp8'" in capsys.readouterr().err


@pytest.mark.skipif(HAS_TRL, reason="TRL is installed here")
def test_peer_without_trl_says_how_to_install_it():
    proc = subprocess.run([sys.executable, str(BENCH / "trl_compare.py"), "--only", "speed"], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 2 and "pip install -e '.[bench]'" in proc.stderr


def test_learning_parity_runs_minigrpo_alone():
    from trl_compare import learning_parity

    res = learning_parity(seeds=(0,), steps=2, peer=None, prompts=2, group_size=2, threads=1)
    assert len(res["curves"]["minigrpo"][0]) == 2 and 0 <= res["minigrpo"]["mean"] <= 1


@pytest.mark.skipif(not HAS_TRL, reason="TRL is a bench-only extra (pip install -e '.[bench]')")
def test_trl_peer_runs_the_same_workload(tmp_path):
    cfg = BenchConfig(prompts=2, group_size=2, new_tokens=4, steps=1, warmup=1, threads=1)
    build_model(cfg, tmp_path)
    from peer_trl import run_trl

    out = run_in_process(run_trl, cfg, workload(cfg, tmp_path))
    assert len(out["step_seconds"]) == 2 and out["completion_lengths"] == [4.0, 4.0]
