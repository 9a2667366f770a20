"""Held-out accuracy: greedy completions of test prompts, scored by the task."""
from __future__ import annotations

import torch

from minigrpo.core.sampling import sample_group
from minigrpo.lm.policy import AdapterOffAnchor, CausalLMPolicy
from minigrpo.lm.tasks import Problem, Task
from minigrpo.lm.tokens import decode_completions, encode_prompts


@torch.no_grad()
def greedy_completions(policy: CausalLMPolicy | AdapterOffAnchor, tokenizer, prompts: list[str], max_new_tokens: int,
                       batch_size: int = 256) -> list[str]:
    """The most likely next token at every step (top-k with k = 1), one completion per prompt."""
    out = []
    device = policy.device
    for i in range(0, len(prompts), batch_size):
        ids = encode_prompts(tokenizer, prompts[i:i + batch_size]).to(device)                  # (P, L)
        ro = sample_group(policy, ids, 1, max_new_tokens=max_new_tokens, eos_id=tokenizer.eos_token_id,
                          pad_id=tokenizer.pad_token_id, top_k=1,
                          generator=torch.Generator(device=device).manual_seed(0))      # greedy: the draw is moot
        out += [row[0] for row in decode_completions(tokenizer, ro.completions, ro.mask, prompts=ids)]
    return out


def exact_match(policy: CausalLMPolicy | AdapterOffAnchor, tokenizer, problems: list[Problem],
                max_new_tokens: int) -> float | None:
    """Fraction of ``problems`` whose greedy completion is the answer, whitespace around either ignored
    (None when there are no problems)."""
    if not problems:
        return None
    texts = greedy_completions(policy, tokenizer, [p.prompt for p in problems], max_new_tokens)
    return sum(t.strip() == p.answer.strip() for t, p in zip(texts, problems)) / len(problems)


def accuracy(policy: CausalLMPolicy | AdapterOffAnchor, tokenizer, task: Task, problems: list[Problem],
             max_new_tokens: int) -> float:
    """A task's held-out accuracy: ``exact_match`` on its problems."""
    return exact_match(policy, tokenizer, problems, max_new_tokens)
