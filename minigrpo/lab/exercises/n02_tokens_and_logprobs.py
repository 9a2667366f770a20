"""Exercises of notebooks/02_tokens_and_logprobs.ipynb: the completion mask, the completion tokens' log-probs
from a forward pass's logits, and top-p (nucleus) filtering."""
from __future__ import annotations

import torch

from minigrpo.core.sampling import completion_mask as _completion_mask
from minigrpo.core.sampling import top_p_filter as _top_p_filter
from minigrpo.lab.exercises import Exercise
from minigrpo.lm.policy import token_logp as _token_logp

NOTEBOOK = "02_tokens_and_logprobs.ipynb"
EOS = 1                                               # char_tokenizer's ids: <pad> 0, <eos> 1, <unk> 2


def _completions(gen: torch.Generator) -> list[tuple]:
    few_eos = torch.randint(2, 8, (3, 4, 6), generator=gen)                  # (P, G, T) = (3, 4, 6), no EOS yet
    few_eos[0, 0, 2] = few_eos[1, 2, 0] = few_eos[2, 3, 5] = EOS            # EOS in the middle, first, last
    many = torch.randint(0, 4, (2, 8, 5), generator=gen)                     # ids 0…3: EOS (1) often, twice in a row
    twice = torch.tensor([[[5, EOS, 7, EOS, 4]]])                            # a second EOS is padding too
    return [(few_eos, EOS),
            (many, EOS),
            (twice, EOS),
            (torch.randint(2, 9, (2, 2, 1), generator=gen), EOS),            # T = 1, no EOS: all True
            (torch.full((1, 2, 3), 7), 7)]                                   # another EOS id; every token is one


completion_mask = Exercise(
    id="02.1", title="the completion mask", function="my_completion_mask",
    reference=_completion_mask, cases=_completions,
    hint="mask_t is True when no EOS occurs strictly before t: the EOS itself is True, every token after the "
         "first EOS is False. Count the EOS so far with (completions == eos_id).cumsum(-1) and subtract the "
         "token's own EOS, or shift the count one step to the right")


def _completion_logp(logits: torch.Tensor, completions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """What ``CausalLMPolicy.full_log_probs`` does after its forward pass: the last T + 1 columns of the logits,
    all but the last, predict y_1 … y_T (``token_logp``); then, as ``sample_group`` records it, 0 on padding."""
    T = completions.shape[-1]
    return _token_logp(logits[:, -T - 1:-1], completions).masked_fill(~mask, 0.0)


def _logits_cases(gen: torch.Generator) -> list[tuple]:
    cases = []
    for N, L, T, V, scale, shift in [(6, 4, 3, 10, 3.0, 0.0),       # N = P·G rows, L prompt columns
                                     (4, 2, 5, 12, 1.0, 0.0),
                                     (3, 3, 1, 8, 2.0, 0.0),         # T = 1: only the prompt's last column counts
                                     (2, 3, 4, 6, 4.0, 120.0)]:      # logits ~ 120: exp overflows float32
        logits = torch.randn(N, L + T, V, generator=gen) * scale + shift     # (N, L + T, V)
        completions = torch.randint(0, V, (N, T), generator=gen)            # (N, T)
        ends = torch.randint(0, T + 1, (N, 1), generator=gen)               # real tokens per row, 0 … T
        mask = torch.arange(T) < ends                                       # (N, T) a prefix of each row
        mask[0] = True
        mask[-1] = False                                                    # a row with no real token at all
        cases.append((logits, completions, mask))
    logits, completions, _ = cases[-1]
    T = completions.shape[-1]
    logits[0, -T:-1].scatter_(-1, completions[0, 1:, None], -60.0)          # tokens 2… of row 0: π(y_t) ≈ e^−180
    return cases


completion_logp = Exercise(
    id="02.2", title="log-probs of the completion tokens", function="my_completion_logp",
    reference=_completion_logp, cases=_logits_cases,
    hint="the prediction for y_t sits one column earlier, at column L − 1 + t: take logits[:, -T-1:-1] (shape "
         "(N, T, V)), log_softmax over the vocabulary (not log of softmax: an unlikely token's probability "
         "underflows to 0 and its log is −inf; nor exp by hand: exp(120) overflows float32), "
         "pick y_t with .gather(-1, completions[..., None]), and put 0 where the mask is False")


def _top_p_cases(gen: torch.Generator) -> list[tuple]:
    peaked = torch.log_softmax(torch.tensor([6.0, 1.0, 0.5, 0.0, -1.0]), -1)   # the top token alone has 0.98
    topk = torch.log_softmax(torch.randn(3, 9, generator=gen) * 2, -1)
    topk[:, :3] = float("-inf")                                                  # already cut by a top-k
    topk = torch.log_softmax(topk, -1)
    return [(torch.log_softmax(torch.randn(10, generator=gen) * 2, -1), 0.8),    # one distribution (V,)
            (torch.log_softmax(torch.randn(2, 3, 12, generator=gen) * 1.5, -1), 0.5),   # (P, G, V)
            (peaked, 0.9),                                                       # only the most likely survives
            (torch.log_softmax(torch.randn(4, 7, generator=gen), -1), 0.05),     # tiny p: greedy
            (torch.log_softmax(torch.randn(4, 7, generator=gen), -1), 0.999),    # p near 1: almost everything
            (topk, 0.7)]                                                         # -inf entries in the input


top_p = Exercise(
    id="02.3", title="top-p (nucleus) filtering", function="my_top_p",
    reference=_top_p_filter, cases=_top_p_cases,
    hint="sort each row in descending order; a token is kept when the probability strictly BEFORE it in that "
         "order is < p (so the most likely token is always kept); send the kept/dropped flags back to the "
         "vocabulary order (scatter with the sort's indices), set dropped tokens to -inf and log_softmax again")
