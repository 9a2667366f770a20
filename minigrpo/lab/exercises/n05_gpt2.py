"""Exercises of notebooks/05_gpt2.ipynb: GPT-2's EOS-as-pad prompts (attention mask and position ids) and the weight
a LoRA adapter on one of GPT-2's Conv1D layers merges into."""
from __future__ import annotations

import warnings

import torch

from minigrpo.lab.exercises import Exercise
from minigrpo.lm.policy import positions as _positions
from minigrpo.lm.policy import prompt_mask as _prompt_mask

NOTEBOOK = "05_gpt2.ipynb"
GPT2_EOS = 50256                                      # GPT-2's <|endoftext|>, its EOS and, here, its pad


def _mask_and_positions(prompts: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``CausalLMPolicy.prompt_pass`` hands the model: ``prompt_mask`` and ``positions`` of it."""
    mask = _prompt_mask(prompts, pad_id)
    return mask, _positions(mask)


def _left_padded(gen: torch.Generator, P: int, L: int, pad_id: int, vocab: int) -> torch.Tensor:
    ids = torch.randint(0, vocab, (P, L), generator=gen)
    ids[ids == pad_id] = (pad_id + 1) % vocab                               # the text itself holds no pad id here
    lengths = torch.randint(1, L + 1, (P, 1), generator=gen)
    lengths[0] = L                                                          # one row fills the batch
    return ids.masked_fill(torch.arange(L) < L - lengths, pad_id)          # (P, L) pads on the left


def _prompt_cases(gen: torch.Generator) -> list[tuple]:
    inside = _left_padded(gen, 3, 7, GPT2_EOS, 50257)
    inside[1, :2] = GPT2_EOS
    inside[1, -1] = GPT2_EOS                                                # an EOS at the end of a text …
    inside[2] = torch.tensor([GPT2_EOS, GPT2_EOS, 464, GPT2_EOS, 3290, 13, GPT2_EOS])   # … and inside: both real
    return [(_left_padded(gen, 4, 6, GPT2_EOS, 50257), GPT2_EOS),
            (inside, GPT2_EOS),
            (_left_padded(gen, 2, 5, 0, 16)[:, 1:].clone().fill_(5), 0),   # no padding at all
            (_left_padded(gen, 5, 8, 0, 16), 0)]                            # the tiny model: pad id 0


prompt_positions = Exercise(
    id="05.1", title="attention mask and positions with EOS as pad", function="my_prompt_positions",
    reference=_mask_and_positions, cases=_prompt_cases,
    hint="a column is real from the first non-pad id on: (prompts != pad_id).cumsum(-1) > 0 — not just "
         "prompts != pad_id, since GPT-2's pad is its EOS and may sit inside or at the end of a text; the "
         "positions are mask.long().cumsum(-1) − 1, clamped at 0 so the left padding gets 0, not −1; "
         "return the tuple (mask, positions)")


def _merged_weight(W0: torch.Tensor, A: torch.Tensor, B: torch.Tensor, alpha: int) -> torch.Tensor:
    """The weight of a GPT-2 Conv1D layer after ``add_lora`` (peft, fan_in_fan_out) is merged into it: a one-layer
    GPT-2 gets a rank-r adapter, the layer whose weight has W0's shape is given W0, A and B, and peft merges it."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from minigrpo.lm.models import add_lora

    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GPT2LMHeadModel(GPT2Config(vocab_size=8, n_positions=8, n_embd=8, n_layer=1, n_head=2,
                                                  bos_token_id=0, eos_token_id=0))
        model = add_lora(model, r=A.shape[0], alpha=alpha)
    layer = next(m for m in model.modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer")
                 and tuple(m.base_layer.weight.shape) == tuple(W0.shape))
    with torch.no_grad():
        layer.base_layer.weight.copy_(W0)
        layer.lora_A["default"].weight.copy_(A)
        layer.lora_B["default"].weight.copy_(B)
        layer.merge()
    return layer.base_layer.weight.detach().clone()


def _lora_cases(gen: torch.Generator) -> list[tuple]:
    cases = []
    for (k, d), r, alpha in [((8, 24), 4, 8),        # c_attn: (n_embd, 3·n_embd), add_lora's default α = 2r
                             ((8, 32), 2, 2),        # mlp.c_fc: (n_embd, 4·n_embd), α = r
                             ((32, 8), 1, 16),       # mlp.c_proj: (4·n_embd, n_embd), rank 1
                             ((8, 8), 8, 4)]:        # attn.c_proj: square, so a missing transpose still fits
        W0 = torch.randn(k, d, generator=gen) * 0.1                       # (k_in, d_out), y = x·W0 + b
        A = torch.randn(r, k, generator=gen)                              # (r, k_in)
        B = torch.randn(d, r, generator=gen)                              # (d_out, r): 0 at the start, trained here
        cases.append((W0, A, B, alpha))
    return cases


lora_merge = Exercise(
    id="05.2", title="LoRA's merged weight on GPT-2's Conv1D", function="my_lora_merged",
    reference=_merged_weight, cases=_lora_cases,
    hint="B·A is (d_out, k_in), the nn.Linear layout; GPT-2's Conv1D stores its weight the other way round, "
         "(k_in, d_out), so add the transpose: W0 + (alpha / r)·(B @ A).T, with r = A.shape[0]")
