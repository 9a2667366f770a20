"""The critic of PPO on a causal LM (``lm.critic.ValueModel``): V (P, G, T) read from a copy of the
model's trunk at the column that predicts each completion token — causal, blind to left padding,
equal to a hand-made forward pass, trainable apart from the model it was copied from, for GPT-2 and
Llama (tests/local_models.py), and saved and loaded back exactly."""
import copy

import pytest
import torch

from local_models import bpe_tokenizer, tiny_gpt2, tiny_llama
from minigrpo.lm.critic import ValueModel
from minigrpo.lm.tokens import encode_prompts

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["what is 12 plus 7? the answer is 19.", "the quick brown fox jumps over the lazy dog",
         "name three colours: red, green and blue"] * 4
PROMPTS = ["what is 12 plus 7?", "the fox", "name three colours:"]          # different lengths
CASES = {"gpt2": ("bytelevel", tiny_gpt2), "llama": ("metaspace", tiny_llama)}
G, T = 2, 5


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    """(causal LM, tokenizer with EOS as pad, prompts (P, L) left-padded, completions (P, G, T))."""
    kind, build = CASES[request.param]
    tok = bpe_tokenizer(TEXTS, kind=kind)
    tok.pad_token = tok.eos_token
    prompts = encode_prompts(tok, PROMPTS)
    completions = torch.randint(0, len(tok), (len(PROMPTS), G, T), generator=torch.Generator().manual_seed(0))
    return build(tok, seed=1), tok, prompts, completions


def critic_of(model, tok, seed: int = 0, **kwargs) -> ValueModel:
    """A critic copied from ``model`` with a random (seeded) head, so V is not 0 everywhere."""
    critic = ValueModel.from_causal_lm(model, tok.pad_token_id, **kwargs)
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        critic.head.weight.copy_(torch.randn(critic.head.weight.shape, generator=g))
        critic.head.bias.copy_(torch.randn(1, generator=g))
    return critic


def test_shape_float32_zero_at_init_and_not_constant_with_a_head(case):
    model, tok, prompts, completions = case
    critic = ValueModel.from_causal_lm(model, tok.pad_token_id)
    V = critic(prompts, completions)
    assert V.shape == completions.shape and V.dtype == torch.float32 and V.requires_grad
    assert torch.equal(V, torch.zeros_like(V))                      # head zero: V = 0 everywhere
    V = critic_of(model, tok)(prompts, completions)
    assert torch.isfinite(V).all() and V.std() > 1e-3


def test_value_at_t_ignores_tokens_from_t_on(case):
    model, tok, prompts, completions = case
    critic = critic_of(model, tok)
    with torch.no_grad():
        V = critic(prompts, completions)
        for t in range(T):
            changed = completions.clone()
            changed[..., t:] = (changed[..., t:] + 1 + torch.arange(T - t)) % len(tok)
            W = critic(prompts, changed)
            torch.testing.assert_close(W[..., :t + 1], V[..., :t + 1], atol=1e-6, rtol=0)
            if t < T - 1:
                assert not torch.allclose(W[..., t + 1:], V[..., t + 1:], atol=1e-4)    # later values see it


def test_left_padding_changes_nothing(case):
    model, tok, prompts, completions = case
    critic = critic_of(model, tok)
    short = 1                                                       # "the fox", the shortest prompt
    with torch.no_grad():
        alone = critic(encode_prompts(tok, [PROMPTS[short]]), completions[short:short + 1])
        batched = critic(prompts, completions)
    assert int((prompts[short] == tok.pad_token_id).sum()) > 0       # it is padded in the batch
    torch.testing.assert_close(batched[short:short + 1], alone, atol=1e-5, rtol=0)


def test_equals_the_head_on_a_plain_forward_pass(case):
    model, tok, prompts, completions = case
    critic = critic_of(model, tok)
    with torch.no_grad():
        V = critic(prompts, completions)
        for p, text in enumerate(PROMPTS):
            x = torch.tensor(tok.encode(text, add_special_tokens=False))
            L = len(x)
            for g in range(G):
                row = torch.cat([x, completions[p, g]])[None]                           # (1, L+T), no padding
                h = model.base_model(row).last_hidden_state[0, L - 1:L + T - 1]         # (T, d)
                ref = h @ critic.head.weight[0] + critic.head.bias[0]
                torch.testing.assert_close(V[p, g], ref, atol=1e-5, rtol=0)


def test_gradients_reach_head_and_trunk_and_leave_the_model_alone(case):
    model, tok, prompts, completions = case
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads_before = [p.requires_grad for p in model.parameters()]
    critic = critic_of(model, tok)
    assert all(p.requires_grad for p in critic.parameters())
    ours = {p.data_ptr() for p in critic.parameters()}
    assert not ours & {p.data_ptr() for p in model.parameters()}    # a copy: no tensor shared
    opt = torch.optim.SGD(critic.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        V = critic(prompts, completions)
        ((V - 1.0) ** 2).mean().backward()
        assert critic.head.weight.grad.abs().sum() > 0 and critic.head.bias.grad.abs().sum() > 0
        trunk_grads = [p.grad for p in critic.trunk.parameters()]
        assert all(g is not None for g in trunk_grads) and sum(g.abs().sum() for g in trunk_grads) > 0
        opt.step()
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert [p.requires_grad for p in model.parameters()] == grads_before
    assert all(p.grad is None for p in model.parameters())


def test_save_and_load_give_the_same_values(case, tmp_path):
    model, tok, prompts, completions = case
    critic = critic_of(model, tok)
    with torch.no_grad():
        critic.trunk.get_input_embeddings().weight.mul_(1.5)          # trunk differs from the model's too
        V = critic(prompts, completions)
    folder = critic.save(tmp_path / "critic")
    critic.save(folder)                                               # again: replaces the folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["critic"]   # no temporary folder left
    with torch.no_grad():
        loaded = ValueModel.load(folder)
        assert type(loaded.trunk) is type(critic.trunk) and loaded.pad_id == tok.pad_token_id
        assert torch.equal(loaded(prompts, completions), V)
        like = ValueModel.from_causal_lm(model, tok.pad_token_id)     # resume: into an existing critic
        params = list(like.parameters())
        assert ValueModel.load(folder, like=like) is like and list(like.parameters()) == params
        assert torch.equal(like(prompts, completions), V)
    missing = tmp_path / "no-such-critic"
    with pytest.raises(FileNotFoundError, match="no-such-critic"):
        ValueModel.load(missing)


def test_a_lora_model_is_merged_into_the_critic(case):
    model, tok, prompts, completions = case
    from minigrpo.lm.models import add_lora

    peft_model = add_lora(copy.deepcopy(model), r=2)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(generator=torch.Generator().manual_seed(0))    # an adapter that changes the model
        merged = copy.deepcopy(peft_model).merge_and_unload()
    critic, reference = critic_of(peft_model, tok), critic_of(merged, tok)
    assert not any("lora" in name for name, _ in critic.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(critic(prompts, completions), reference(prompts, completions), atol=1e-5, rtol=0)
    assert any("lora" in name for name, _ in peft_model.named_parameters())   # the peft model is left as it was


def test_bf16_autocast_returns_float32_close_to_float32(case):
    model, tok, prompts, completions = case
    with torch.no_grad():
        V = critic_of(model, tok)(prompts, completions)
        W = critic_of(model, tok, autocast_dtype=torch.bfloat16)(prompts, completions)
    assert W.dtype == torch.float32
    torch.testing.assert_close(W, V, atol=0.1 * V.abs().max().item(), rtol=0)
