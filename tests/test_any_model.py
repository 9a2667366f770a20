"""Any Hugging Face causal LM with its own tokenizer goes through the same policy: GPT-2 with a
byte-level BPE (no pad token), Llama with a SentencePiece-style BPE ("▁" word starts, <s>/</s>), and
Qwen2 with a byte-level BPE and a ChatML template whose end-of-turn is the EOS. Each is saved,
loaded back with ``load_causal_lm`` and checked against a plain Hugging Face forward pass; one GRPO
step trains it; the texts a reward sees are exactly what the model wrote (tests/local_models.py)."""
import pytest
import torch

from local_models import bpe_tokenizer, save_model, tiny_gpt2, tiny_llama, tiny_qwen2
from minigrpo.core.recipe import preset
from minigrpo.core.sampling import sample_group
from minigrpo.core.step import grpo_step
from minigrpo.lm.models import load_causal_lm
from minigrpo.lm.policy import CausalLMPolicy, prompt_mask
from minigrpo.lm.tokens import decode_completions, decode_prompts, encode_prompts

TEXTS = ["what is 12 plus 7? the answer is 19.", "the quick brown fox jumps over the lazy dog",
         "a café in zürich serves crème brûlée", "name three colours: red, green and blue"] * 4
QUESTIONS = ["what is 12 plus 7?", "name three colours:", "the fox"]       # different lengths
CASES = {"gpt2-bytelevel": ("bytelevel", False, tiny_gpt2),
         "llama-metaspace": ("metaspace", False, tiny_llama),
         "qwen2-bytelevel-chat": ("bytelevel", True, tiny_qwen2)}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    """(name, tokenizer as built, model, tokenizer) with the model and tokenizer loaded back from a folder."""
    kind, chat, build = CASES[request.param]
    built = bpe_tokenizer(TEXTS, kind=kind, chat_template=chat)
    folder = save_model(build(built, seed=1), built, tmp_path_factory.mktemp(request.param))
    model, tok = load_causal_lm(folder)
    return request.param, built, model, tok


def prompt_texts(tok, questions=QUESTIONS) -> list[str]:
    if tok.chat_template is None:
        return list(questions)
    return [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
            for q in questions]


def plain_forward_logp(model, prompt_ids: list[int], completion: torch.Tensor) -> torch.Tensor:
    """Oracle: the model's own log-softmax over the unpadded prompt + completion, at the completion's tokens."""
    seq = torch.cat([torch.tensor(prompt_ids), completion])[None]
    with torch.no_grad():
        logits = model(seq).logits[0, len(prompt_ids) - 1:-1]
    return torch.log_softmax(logits.float(), -1).gather(-1, completion[:, None])[:, 0]


def test_tokenizer_without_pad_loads_with_eos_as_pad_on_the_left(case):
    name, built, model, tok = case
    assert built.pad_token_id is None and tok.eos_token_id == built.eos_token_id
    assert tok.pad_token_id == tok.eos_token_id and tok.padding_side == "left"
    assert model.config.pad_token_id == tok.eos_token_id == model.generation_config.pad_token_id
    assert tok.chat_template == built.chat_template
    for text in TEXTS[:4] + prompt_texts(tok):            # loaded as saved: the same ids as the tokenizer built
        assert tok.encode(text, add_special_tokens=False) == built.encode(text, add_special_tokens=False)


def test_sampled_log_probs_equal_log_probs_and_a_plain_forward_pass(case):
    name, _, model, tok = case
    policy = CausalLMPolicy(model, tok.pad_token_id)
    texts = prompt_texts(tok)
    prompts = encode_prompts(tok, texts)                                            # (P, L), left-padded
    assert len({len(tok.encode(t, add_special_tokens=False)) for t in texts}) == len(texts)
    ro = sample_group(policy, prompts, 3, max_new_tokens=10, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                      generator=torch.Generator().manual_seed(0))
    assert ro.shape == (3, 3, 10) and ro.logp_is_policy
    scored = policy.log_probs(prompts, ro.completions).detach()
    torch.testing.assert_close(scored.masked_fill(~ro.mask, 0.0), ro.logp, atol=1e-5, rtol=0)
    for p, text in enumerate(texts):
        x = tok.encode(text, add_special_tokens=False)
        for g in range(3):
            n = int(ro.mask[p, g].sum())
            ref = plain_forward_logp(model, x, ro.completions[p, g, :n])
            torch.testing.assert_close(ro.logp[p, g, :n], ref, atol=1e-5, rtol=0)


def test_decoding_and_scoring_raise_no_future_warning(case):
    """The decoder passes the key/value cache by the name the model's forward takes now (``cache_name``):
    transformers' FutureWarning about ``past_key_values`` showed in every LM notebook once."""
    import warnings

    name, _, model, tok = case
    policy = CausalLMPolicy(model, tok.pad_token_id)
    prompts = encode_prompts(tok, prompt_texts(tok))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        ro = sample_group(policy, prompts, 2, max_new_tokens=6, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                          generator=torch.Generator().manual_seed(0))
        policy.log_probs(prompts, ro.completions)


def test_a_grpo_step_trains_the_model(case):
    name, _, model, tok = case
    policy = CausalLMPolicy(model, tok.pad_token_id)
    anchor = policy.anchor()
    prompts = encode_prompts(tok, prompt_texts(tok))
    target = tok.encode(" the", add_special_tokens=False)[-1]

    def reward(prompts, completions):                     # (P, G, T) → (P, G): how often the target token appears
        return (completions == target).float().mean(-1) + 0.1 * torch.arange(completions.shape[1]).float()

    before = [p.detach().clone() for p in policy.parameters()]
    opt = torch.optim.Adam(policy.parameters(), lr=1e-2)
    step = grpo_step(policy, anchor, prompts, reward, preset("deepseek"), 0.04, opt, 4,
                     generator=torch.Generator().manual_seed(1), max_new_tokens=6, eos_id=tok.eos_token_id,
                     pad_id=tok.pad_token_id)
    assert torch.isfinite(step.loss) and step.A.abs().sum() > 0
    assert any(not torch.equal(b, p) for b, p in zip(before, policy.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(anchor.parameters(), before))


def test_prompt_plus_completion_round_trips_through_decoding(case):
    """decode_prompts + decode_completions(…, prompts) = the decoded whole row, EOS and padding left out."""
    name, _, model, tok = case
    prompts = encode_prompts(tok, prompt_texts(tok))
    P, G, T = len(QUESTIONS), 4, 7
    completions = torch.randint(0, len(tok), (P, G, T), generator=torch.Generator().manual_seed(2))
    completions[completions == tok.eos_token_id] = tok.eos_token_id + 1
    completions[0, 1, 3] = tok.eos_token_id                        # an ended completion, padded after its EOS
    completions[0, 1, 4:] = tok.pad_token_id
    mask = torch.ones(P, G, T, dtype=torch.bool)
    mask[0, 1, 4:] = False
    heads = decode_prompts(tok, prompts)
    assert heads == [tok.decode(tok.encode(t, add_special_tokens=False)) for t in prompt_texts(tok)]
    texts = decode_completions(tok, completions, mask, prompts)
    for p in range(P):
        x = tok.encode(prompt_texts(tok)[p], add_special_tokens=False)
        for g in range(G):
            y = completions[p, g][mask[p, g] & (completions[p, g] != tok.eos_token_id)].tolist()
            assert heads[p] + texts[p][g] == tok.decode(x + y, clean_up_tokenization_spaces=False)
    assert texts[0][1] == decode_completions(tok, completions[:1, 1:2, :3], mask[:1, 1:2, :3], prompts[:1])[0][0]


def test_sentencepiece_space_appears_only_where_the_model_wrote_one():
    tok = bpe_tokenizer(TEXTS, kind="metaspace")
    tok.pad_token = tok.eos_token
    prompts = encode_prompts(tok, ["what is 12 plus 7?"])                        # (1, L)
    word = tok.convert_tokens_to_ids("▁the")                  # a word-start token: " the" after a prompt
    inner = next(i for t, i in tok.get_vocab().items() if t.isalpha() and not t.startswith("▁") and len(t) > 1)
    completions = torch.tensor([[[word, inner], [inner, word]]])                 # (1, 2, 2)
    mask = torch.ones_like(completions, dtype=torch.bool)
    texts = decode_completions(tok, completions, mask, prompts)[0]
    assert texts[0] == " the" + tok.convert_ids_to_tokens(inner)
    assert texts[1] == tok.convert_ids_to_tokens(inner) + " the"
    assert decode_completions(tok, completions, mask)[0][0] == "the" + tok.convert_ids_to_tokens(inner)  # alone: no space


def test_byte_level_character_split_at_the_prompt_boundary_falls_back_to_the_completion_alone():
    tok = bpe_tokenizer(["ab"] * 4, vocab_size=260, kind="bytelevel")
    tok.pad_token = tok.eos_token
    lead, cont = tok.convert_tokens_to_ids(["Ã", "©"])              # "é" = bytes C3 A9, one token each
    prompts = torch.tensor([[tok.pad_token_id] + tok.encode("ab", add_special_tokens=False) + [lead]])
    completions = torch.tensor([[[cont] + tok.encode("b", add_special_tokens=False)]])
    mask = torch.ones_like(completions, dtype=torch.bool)
    assert tok.decode(prompts[0, 1:].tolist() + completions[0, 0].tolist()) == "abéb"
    assert decode_completions(tok, completions, mask, prompts) == [[tok.decode(completions[0, 0].tolist())]]


def test_left_padding_with_eos_as_pad_masks_only_the_padding():
    """pad = EOS = <|im_end|>, which also ends every turn inside a chat prompt: only the columns before
    the first real token are padding, and scoring in a padded batch equals a plain forward pass."""
    built = bpe_tokenizer(TEXTS, kind="bytelevel", chat_template=True)
    built.pad_token = built.eos_token
    model = tiny_qwen2(built, seed=3)
    chats = [[{"role": "user", "content": "what is 12 plus 7?"}, {"role": "assistant", "content": "19"},
              {"role": "user", "content": "and 1 plus 1?"}], [{"role": "user", "content": "hi"}]]
    texts = [built.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
    prompts = encode_prompts(built, texts)                                       # (2, L)
    lengths = [len(built.encode(t, add_special_tokens=False)) for t in texts]
    assert (prompts[0] == built.eos_token_id).sum() == 3          # <|im_end|> ends each of its three turns
    assert prompt_mask(prompts, built.pad_token_id).sum(-1).tolist() == lengths
    assert decode_prompts(built, prompts) == texts
    completions = torch.randint(3, len(built), (2, 2, 5), generator=torch.Generator().manual_seed(4))
    completions[1, 0, 2], completions[1, 0, 3:] = built.eos_token_id, built.pad_token_id
    ours = CausalLMPolicy(model, built.pad_token_id).log_probs(prompts, completions).detach()
    for p, text in enumerate(texts):
        for g in range(2):
            ref = plain_forward_logp(model, built.encode(text, add_special_tokens=False), completions[p, g])
            torch.testing.assert_close(ours[p, g], ref, atol=1e-5, rtol=0)


def test_a_folder_whose_tokenizer_has_no_eos_is_refused_in_one_line(tmp_path):
    built = bpe_tokenizer(TEXTS, kind="metaspace")
    built.eos_token = None
    folder = save_model(tiny_llama(built), built, tmp_path)
    with pytest.raises(ValueError, match="has no EOS token") as err:
        load_causal_lm(folder)
    assert "\n" not in str(err.value)


def test_a_hub_id_with_dots_is_asked_of_the_hub_not_refused_as_a_missing_path():
    """``Qwen/Qwen2.5-0.5B`` is an owner/name hub id; a missing ``./ckpt`` or ``a/b/c`` is a path."""
    from minigrpo.lm.models import looks_like_path

    assert not looks_like_path("Qwen/Qwen2.5-0.5B") and not looks_like_path("gpt2")
    assert looks_like_path("./ckpt") and looks_like_path("runs/a/b") and looks_like_path("model.bin")
    assert looks_like_path("data/x.jsonl", (".jsonl",)) and not looks_like_path("openai/gsm8k", (".jsonl",))
    with pytest.raises(OSError, match="the Hugging Face hub did not provide it"):   # offline in tests: at once
        load_causal_lm("Qwen/Qwen2.5-0.5B")
