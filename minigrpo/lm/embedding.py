"""Embedding drift: how far the policy's completions sit from the anchor's in the anchor's own hidden space.

``completion_embeddings`` encodes completions with a model's last hidden state (after its final
norm), averaged over the completion's tokens (EOS included, padding not): one vector per completion,
each token read in the context of its prompt and the tokens before it. ``embedding_drift`` compares two
sets of completions of the same prompts, G each, encoded by the *anchor*:

    ē^π_p = mean_g e(y^π_{p,g}),   ē^anchor_p = mean_g e(y^anchor_{p,g})          (P, d)
    drift = mean_p [1 − cos(ē^π_p, ē^anchor_p)]                                    in [0, 2]

What it is: a distance between where the two models' answers land in the anchor's representation, a
semantic-ish view of drift that does not need the two models to share a tokenizer's probabilities.

What it is not: a KL. It is not an expectation of log-ratios and has no direction (it is symmetric);
it is not zero exactly when the distributions are equal — two different distributions with the same
mean embedding (answers that average out, or differ only in length, since cosine ignores the norm) give
0, and two samples of the *same* distribution give more than 0 by chance alone. It depends on the
anchor's representation, which may ignore a change that matters (a digit the last layer barely encodes)
or magnify one that does not. ``runs/evaluation.py`` logs it as ``eval/embedding_drift`` beside the
sampled ``eval/kl``, on paired samples: both models sample with the same random numbers, so a policy
equal to its anchor writes the same completions and its drift is exactly 0.
"""
from __future__ import annotations

import contextlib

import torch
from einops import rearrange
from torch import Tensor

from minigrpo.core.masks import masked_mean
from minigrpo.lm.policy import AdapterOffAnchor, CausalLMPolicy, is_peft_model


@torch.no_grad()
def completion_embeddings(model: CausalLMPolicy | AdapterOffAnchor, prompts: Tensor, completions: Tensor,
                          mask: Tensor) -> Tensor:
    """e(y_{p,g}) = mean over the completion's tokens of the model's last hidden state, (P, G, d) float32.

    Left-padded prompts (P, L), completions (P, G, T). As in ``CausalLMPolicy.log_probs`` the prompt runs
    once per prompt (``prompt_pass``) and its key/value cache is repeated G times; the completions' T tokens
    then run through the model's trunk (``base_model``: no LM head, only the last layer's states kept), whose
    state at completion column t is token y_t's, read after x and y_<t. A LoRA policy's anchor
    (``AdapterOffAnchor``) runs with its adapter off. A completion with no token embeds as 0."""
    P, G, T = completions.shape
    base = model._policy[0] if isinstance(model, AdapterOffAnchor) else model
    off = base.model.disable_adapter() if base is not model else contextlib.nullcontext()
    base.check_length(prompts.shape[1], T)
    base.use_attention(prompts.shape[1] + T)
    hf = base.model.get_base_model() if is_peft_model(base.model) else base.model
    y = rearrange(completions, "P G T -> (P G) T")                                            # (P·G, T)
    # eval mode: with gradient checkpointing a model kept in train mode has its cache turned off
    with off, base.decoding_mode(), base.autocast():
        out, attn, start = base.prompt_pass(prompts, G, T)                                    # attn (P·G, L+T)
        cache = out[base.cache_name]
        cache.batch_repeat_interleave(G)                                                      # (P·G) rows
        pos = start + torch.arange(T, device=start.device)                                    # (P·G, T)
        # GPT-2: .transformer, Llama/Qwen2: .model; its last_hidden_state is after the final norm
        h = hf.base_model(input_ids=y, attention_mask=attn, position_ids=pos, use_cache=True,
                          **{base.cache_name: cache}).last_hidden_state                        # (P·G, T, d)
    h = rearrange(h.float(), "(P G) T d -> P G T d", P=P)                                     # (P, G, T, d)
    return masked_mean(h, mask[..., None].expand_as(h), dim=2)                                 # (P, G, d)


def embedding_drift(e_policy: Tensor, e_anchor: Tensor, eps: float = 1e-8) -> Tensor:
    """Per prompt, 1 − cos(ē^π_p, ē^anchor_p) between the two groups' mean embeddings: (P, G, d) × 2 → (P,).

    0 when the two groups embed alike on average, up to 2 when they point opposite ways; see the module
    docstring for why this is not a KL."""
    a, b = e_policy.mean(1), e_anchor.mean(1)                                                  # (P, d)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1, eps=eps)
    return (1.0 - cos).clamp(0.0, 2.0)            # rounding can put cos a hair above 1
