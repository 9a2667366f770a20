"""Sampling from a causal LM with its key/value cache: ``KVCacheDecoder``, what ``CausalLMPolicy.decoder``
returns and ``core/sampling.sample_group`` drives, one token per step (a ``core.protocols.Decoder``)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from einops import rearrange, repeat
from torch import Tensor

if TYPE_CHECKING:
    from minigrpo.lm.policy import CausalLMPolicy


class KVCacheDecoder:
    """Incremental decoding with the model's key/value cache.

    The prompt batch (P, L) runs once; its keys and values are repeated G times (prompt-major,
    matching P × G) into a cache preallocated for all L + T positions (transformers' ``StaticCache``);
    every later step feeds only the G·P tokens just drawn and writes their keys and values in place.
    A cache that grows by concatenation instead copies itself, in a fresh allocation, at every step
    and layer: that was 40 % of a tiny model's sampling time on a CPU. The attention mask covers all
    L + T columns from the start (the causal mask hides the columns not yet written).
    ``step`` returns float32 next-token log-probs (P, G, V) of the last position only.
    """

    def __init__(self, policy: "CausalLMPolicy", prompts: Tensor, G: int, max_new_tokens: int):
        self.policy, self.prompts, self.G, self.T = policy, prompts, G, max_new_tokens
        self.cache = None
        self.mask = None
        self.pos = None        # (P·G, 1) position id of the next token (skips left padding)
        self.col = prompts.shape[1]   # cache column of the next token
        L = prompts.shape[1]          # every cache column a token is written to, made on the device once:
        self.cols = torch.arange(L, L + max_new_tokens, device=prompts.device)   # no host→device copy a token

    def _static_cache(self, prompt_cache) -> object:
        """The prompt's keys/values (P rows) repeated G times into a cache preallocated for L + T columns."""
        from transformers import StaticCache

        L = self.prompts.shape[1]
        cache = StaticCache(config=self.policy.model.config, max_cache_len=L + self.T)
        for layer, src in zip(cache.layers, prompt_cache.layers):     # keys, values (P, heads, L, d) → (P·G, …)
            layer.update(*(repeat(kv, "P h L d -> (P G) h L d", G=self.G) for kv in (src.keys, src.values)))
        return cache

    @torch.no_grad()
    def step(self, y: Tensor | None) -> Tensor:
        policy, G = self.policy, self.G
        P, L = self.prompts.shape
        with policy.decoding_mode(), policy.autocast():
            if y is None:                                    # the prompt, once per prompt
                out, self.mask, self.pos = policy.prompt_pass(self.prompts, G, self.T)     # mask (P·G, L+T)
                self.cache = self._static_cache(out[policy.cache_name])
                logits = repeat(out.logits[:, -1], "P V -> (P G) V", G=G)                     # (P·G, V)
            else:                                            # one new token per completion
                if self.col >= L + self.T:
                    raise ValueError(f"KVCacheDecoder: more than max_new_tokens={self.T} steps were asked for")
                col = self.cols[self.col - L:self.col - L + 1]                               # (1,)
                out = policy.model(input_ids=rearrange(y, "P G -> (P G) 1"), attention_mask=self.mask, use_cache=True,
                                   position_ids=self.pos, cache_position=col, **{policy.cache_name: self.cache})
                self.pos = self.pos + 1
                self.col += 1
                logits = out.logits[:, -1]                                                    # (P·G, V)
        return rearrange(torch.log_softmax(logits.float(), dim=-1), "(P G) V -> P G V", P=P)
