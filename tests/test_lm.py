"""The language-model policy: KV-cache sampling, masks, padding, log-probs against a plain forward
pass and Hugging Face's own logits, the anchor (frozen copy and LoRA adapter-off), and bad input."""
import pytest
import torch

from minigrpo.lm.policy import CausalLMPolicy, prompt_mask, token_logp
from minigrpo.lm.models import TinyGPT2, add_lora, build_tiny_gpt2, load_causal_lm
from minigrpo.core.sampling import sample_group, top_k_filter, top_p_filter
from minigrpo.lm.tokens import char_tokenizer, check_tokenizer, decode_completions, encode_prompts, left_pad

ALPHABET = "0123456789+="


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer(ALPHABET)


@pytest.fixture()
def policy(tok):
    return CausalLMPolicy(build_tiny_gpt2(tok, TinyGPT2(n_layer=2, n_embd=32, n_head=2, n_positions=32), seed=1),
                          tok.pad_token_id)


PROMPTS = ["1+2=", "12+345=", "7="]


def test_tokenizer_round_trip_and_save_load(tok, tmp_path):
    ids = tok.encode("12+3=", add_special_tokens=False)
    assert len(ids) == 5 and tok.decode(ids) == "12+3="
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    tok2 = AutoTokenizer.from_pretrained(tmp_path)
    assert tok2.encode("12+3=", add_special_tokens=False) == ids
    assert (tok2.pad_token_id, tok2.eos_token_id) == (0, 1)


def test_prompts_are_left_padded_and_masked(tok):
    ids = encode_prompts(tok, PROMPTS)                                     # (3, 7)
    assert ids.shape == (3, 7)
    assert (ids[2, :5] == tok.pad_token_id).all() and ids[1, 0] != tok.pad_token_id
    assert prompt_mask(ids, tok.pad_token_id).sum(-1).tolist() == [4, 7, 2]


def test_left_pad_converts_a_right_padded_batch(tok):
    enc = tok(PROMPTS, padding=True, padding_side="right", return_tensors="pt", add_special_tokens=False)
    assert torch.equal(left_pad(enc["input_ids"], enc["attention_mask"], tok.pad_token_id), encode_prompts(tok, PROMPTS))


def test_sampling_log_probs_equal_one_full_forward_pass(tok, policy):
    """The KV-cache sampler's per-token log-probs = those of one plain forward pass over prompt +
    completion, on real tokens (EOS included), with prompts of different lengths."""
    prompts = encode_prompts(tok, PROMPTS)
    ro = sample_group(policy, prompts, 5, max_new_tokens=12, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                      generator=torch.Generator().manual_seed(0))
    assert ro.shape == (3, 5, 12) and ro.logp_is_policy
    full = policy.log_probs(prompts, ro.completions).detach()
    torch.testing.assert_close(full.masked_fill(~ro.mask, 0.0), ro.logp, atol=1e-5, rtol=0)


def test_log_probs_match_hugging_face_logits_of_the_unpadded_sequence(tok, policy):
    """Oracle: GPT2LMHeadModel's own logits on the unpadded prompt + completion, log-softmaxed."""
    prompts = encode_prompts(tok, PROMPTS)
    completions = torch.randint(3, len(tok), (3, 2, 6), generator=torch.Generator().manual_seed(1))
    ours = policy.log_probs(prompts, completions).detach()
    for p, text in enumerate(PROMPTS):
        x = torch.tensor(tok.encode(text, add_special_tokens=False))
        for g in range(2):
            seq = torch.cat([x, completions[p, g]])[None]
            logits = policy.model(seq).logits[0, len(x) - 1:-1]
            ref = torch.log_softmax(logits, -1).gather(-1, completions[p, g, :, None])[:, 0]
            torch.testing.assert_close(ours[p, g], ref.detach(), atol=1e-5, rtol=0)


def test_eos_ends_a_completion_the_eos_is_trained_the_padding_is_not(tok, policy):
    prompts = encode_prompts(tok, PROMPTS)
    ro = sample_group(policy, prompts, 16, max_new_tokens=20, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                      generator=torch.Generator().manual_seed(2))
    is_eos = ro.completions == tok.eos_token_id
    assert is_eos.any(), "the test needs some completions that end"
    for row, m, lp in zip(ro.completions.view(-1, 20), ro.mask.view(-1, 20), ro.logp.view(-1, 20)):
        ends = (row == tok.eos_token_id).nonzero()
        n = int(ends[0]) + 1 if len(ends) else 20
        assert m[:n].all() and not m[n:].any()                        # EOS inside the mask, nothing after
        assert (row[n:] == tok.pad_token_id).all() and (lp[n:] == 0).all()
        assert (lp[:n] < 0).all()
    texts = decode_completions(tok, ro.completions, ro.mask)
    assert not any("<eos>" in t for row in texts for t in row)          # texts stop before the EOS


def test_a_prompt_alone_and_inside_a_padded_batch_get_the_same_log_probs(tok, policy):
    prompts = encode_prompts(tok, PROMPTS)
    completions = torch.randint(3, len(tok), (3, 2, 5), generator=torch.Generator().manual_seed(3))
    batch = policy.log_probs(prompts, completions).detach()
    alone = policy.log_probs(encode_prompts(tok, PROMPTS[2:]), completions[2:]).detach()
    torch.testing.assert_close(batch[2:], alone, atol=1e-5, rtol=0)


def test_temperature_and_top_k_record_the_sampled_distribution(tok, policy):
    prompts = encode_prompts(tok, PROMPTS)
    ro = sample_group(policy, prompts, 4, max_new_tokens=5, temperature=0.7, top_k=3,
                      generator=torch.Generator().manual_seed(0))
    assert not ro.logp_is_policy
    greedy = sample_group(policy, prompts, 2, max_new_tokens=5, top_k=1, generator=torch.Generator().manual_seed(0))
    assert (greedy.logp == 0).all() and torch.equal(greedy.completions[:, 0], greedy.completions[:, 1])


def test_top_k_and_top_p_filters():
    logp = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    torch.testing.assert_close(top_k_filter(logp, 2).exp(), torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    torch.testing.assert_close(top_p_filter(logp, 0.75).exp(), torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    torch.testing.assert_close(top_p_filter(logp, 0.1).exp(), torch.tensor([[1.0, 0.0, 0.0, 0.0]]))


def test_token_logp_equals_log_softmax_gather():
    logits = torch.randn(2, 3, 7)
    y = torch.randint(0, 7, (2, 3))
    torch.testing.assert_close(token_logp(logits, y), torch.log_softmax(logits, -1).gather(-1, y[..., None])[..., 0])


def test_frozen_anchor_does_not_move_when_the_policy_trains(tok, policy):
    anchor = policy.anchor()
    prompts = encode_prompts(tok, PROMPTS)
    completions = torch.randint(3, len(tok), (3, 2, 4))
    before = anchor.log_probs(prompts, completions)
    opt = torch.optim.SGD(policy.parameters(), lr=1.0)
    policy.log_probs(prompts, completions).sum().backward()
    opt.step()
    assert not any(p.requires_grad for p in anchor.parameters())
    torch.testing.assert_close(anchor.log_probs(prompts, completions), before)
    assert not torch.allclose(policy.log_probs(prompts, completions).detach(), before)


def test_lora_anchor_is_the_base_model_with_the_adapter_off(tok):
    pytest.importorskip("peft")
    base = build_tiny_gpt2(tok, TinyGPT2(n_layer=1, n_embd=32, n_head=2, n_positions=32), seed=4)
    prompts = encode_prompts(tok, PROMPTS)
    completions = torch.randint(3, len(tok), (3, 2, 4))
    base_policy = CausalLMPolicy(base, tok.pad_token_id)
    ref = base_policy.log_probs(prompts, completions).detach()
    policy = CausalLMPolicy(add_lora(base, r=4), tok.pad_token_id)
    anchor = policy.anchor()
    assert sum(p.numel() for p in anchor.parameters()) == 0              # no second copy of the weights
    opt = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        (-policy.log_probs(prompts, completions).sum()).backward()
        opt.step()
    torch.testing.assert_close(anchor.log_probs(prompts, completions), ref, atol=1e-5, rtol=0)
    assert (policy.log_probs(prompts, completions).detach() - ref).abs().max() > 1e-3


def test_gradient_checkpointing_gives_the_same_gradient(tok):
    prompts = encode_prompts(tok, PROMPTS)
    completions = torch.randint(3, len(tok), (3, 2, 4), generator=torch.Generator().manual_seed(5))
    grads = []
    for gc in (False, True):
        model = build_tiny_gpt2(tok, TinyGPT2(n_layer=2, n_embd=32, n_head=2, n_positions=32), seed=5)
        pol = CausalLMPolicy(model, tok.pad_token_id, gradient_checkpointing=gc)
        pol.log_probs(prompts, completions).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in pol.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_bf16_autocast_runs_and_stays_close(tok):
    model = build_tiny_gpt2(tok, TinyGPT2(n_layer=1, n_embd=32, n_head=2, n_positions=32), seed=6)
    prompts = encode_prompts(tok, PROMPTS)
    completions = torch.randint(3, len(tok), (3, 2, 4))
    fp32 = CausalLMPolicy(model, tok.pad_token_id).log_probs(prompts, completions).detach()
    bf16 = CausalLMPolicy(model, tok.pad_token_id, autocast_dtype=torch.bfloat16).log_probs(prompts, completions)
    assert bf16.dtype == torch.float32
    assert (bf16.detach() - fp32).abs().max() < 0.1


# --- bad input ---------------------------------------------------------------------------------------

def test_prompt_longer_than_the_context_is_refused(tok, policy):
    long_prompt = encode_prompts(tok, ["1" * 30 + "="])
    with pytest.raises(ValueError, match="exceeds the model's context of 32"):
        sample_group(policy, long_prompt, 2, max_new_tokens=5)


def test_tokenizer_without_pad_or_eos_is_refused(tok):
    class NoPad:
        eos_token_id, pad_token_id = 1, None

    class NoEos:
        eos_token_id, pad_token_id = None, 0

    with pytest.raises(ValueError, match="no pad token"):
        check_tokenizer(NoPad())
    with pytest.raises(ValueError, match="no EOS token"):
        check_tokenizer(NoEos())


def test_empty_prompt_list_and_empty_prompt_are_refused(tok):
    with pytest.raises(ValueError, match="no prompts"):
        encode_prompts(tok, [])
    with pytest.raises(ValueError, match="prompt 1"):
        encode_prompts(tok, ["1=", ""])


def test_missing_checkpoint_path_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_causal_lm(str(tmp_path / "no-such-model"))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_causal_lm(str(tmp_path))


def test_saved_tiny_model_loads_like_any_checkpoint(tok, policy, tmp_path):
    policy.model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model, tok2 = load_causal_lm(tmp_path)
    prompts = encode_prompts(tok2, PROMPTS)
    completions = torch.randint(3, len(tok), (3, 2, 4))
    torch.testing.assert_close(CausalLMPolicy(model, tok2.pad_token_id).log_probs(prompts, completions),
                               policy.log_probs(prompts, completions))


def test_greedy_accuracy_works_on_a_lora_anchor_with_no_parameters(tok):
    pytest.importorskip("peft")
    from minigrpo.lm.evaluate import greedy_completions

    base = build_tiny_gpt2(tok, TinyGPT2(n_layer=1, n_embd=32, n_head=2, n_positions=32), seed=7)
    policy = CausalLMPolicy(add_lora(base, r=2), tok.pad_token_id)
    texts = greedy_completions(policy.anchor(), tok, PROMPTS, 3)
    assert texts == greedy_completions(policy, tok, PROMPTS, 3)          # untrained adapter: same model
