"""Held-out evaluation that fits any task: the run's own reward, on prompts it never trains on.

Every ``eval_every`` steps the policy answers the held-out prompts twice:

==========================  ==================================================================
``eval/greedy/reward``      the total reward of its greedy answer (the likeliest token each step)
``eval/greedy/<name>``      each reward component, over the answers it applied to
``eval/sampled/reward``     the same for k sampled answers per prompt (the training temperature,
``eval/sampled/<name>``     top-k and top-p; the same random numbers at every evaluation)
``eval/pass@k/<name>``      for a component that is 0 or 1: the fraction of prompts where at
                            least one of the k samples scores 1
``eval/kl``                 with the anchor given: KL(π ‖ π_anchor) per completion, estimated on the
                            sampled answers (Σ_t log π − log π_anchor; at temperature 1 only, where
                            the samples come from π itself)
``eval/embedding_drift``    with the anchor given: mean over prompts of 1 − cos between the mean anchor
                            hidden state of the policy's sampled answers and of the anchor's own, drawn
                            with the same random numbers (``lm/embedding.py``) — a distance, not a KL
``test_accuracy``           over the rows with an ``answer``: the greedy answer equals it
                            (whitespace around either ignored) — the built-in tasks' measure
==========================  ==================================================================

The keys are stable (one per component name), so plots and loggers can rely on them.
"""
from __future__ import annotations

import math

import torch

from minigrpo.core.sampling import sample_group
from minigrpo.core.scored import call_reward, check_scored
from minigrpo.lm.data import Row, answer_text, prompt_text
from minigrpo.lm.embedding import completion_embeddings, embedding_drift
from minigrpo.lm.tokens import decode_completions, encode_prompts


class _Tally:
    """Sums per component over the completions it applied to, and pass@k per prompt."""

    def __init__(self):
        self.sums, self.counts, self.binary, self.passed, self.prompts = {}, {}, {}, {}, 0

    def add(self, scored) -> None:
        r, valid = scored.r, scored.valid if scored.valid is not None else torch.ones_like(scored.r, dtype=torch.bool)
        self._add("reward", r, valid)
        for k, v in scored.components.items():
            self._add(k, v, scored.applicable.get(k, torch.ones_like(v, dtype=torch.bool)))
        self.prompts += r.shape[0]

    def _add(self, k, v, ok) -> None:
        v, ok = v.float().cpu(), ok.cpu()
        self.sums[k] = self.sums.get(k, 0.0) + v[ok].sum().item()
        self.counts[k] = self.counts.get(k, 0) + int(ok.sum())
        vals = v[ok]
        self.binary[k] = self.binary.get(k, True) and bool(((vals == 0) | (vals == 1)).all())
        self.passed[k] = self.passed.get(k, 0) + int(((v == 1) & ok).any(1).sum())

    def means(self, prefix: str) -> dict:
        return {f"{prefix}/{k}": (self.sums[k] / self.counts[k] if self.counts[k] else math.nan) for k in self.sums}


def _scored(reward, prompts, rollout):
    """The reward's checked ``Scored`` for a rollout, as a training step gets it."""
    return check_scored(call_reward(reward, prompts, rollout), tuple(rollout.shape[:2]), reward, rollout.shape[2])


def _drift(anchor, prompts, ro, draws, device, **sampling) -> torch.Tensor:
    """Embedding drift per prompt (P,): the anchor samples as many completions as the policy did, from the
    same random numbers ``draws``, and encodes both sets (``lm/embedding.py``). Costs one anchor rollout and
    one anchor forward over both sets."""
    P, k, T = ro.shape
    gen = torch.Generator(device=device)
    gen.set_state(draws)
    ra = sample_group(anchor, prompts, k, generator=gen, **sampling)                       # (P, k, T')
    T_all = max(T, ra.shape[2])
    pad = sampling["pad_id"]
    both = torch.cat([_pad_to(ro.completions, T_all, pad), _pad_to(ra.completions, T_all, pad)], 1)   # (P, 2k, T)
    mask = torch.cat([_pad_to(ro.mask, T_all, False), _pad_to(ra.mask, T_all, False)], 1)
    e = completion_embeddings(anchor, prompts, both, mask)                                # (P, 2k, d)
    return embedding_drift(e[:, :k], e[:, k:])


def _pad_to(x: torch.Tensor, T: int, value) -> torch.Tensor:
    """(P, G, t) → (P, G, T), filled with ``value`` after column t."""
    return torch.nn.functional.pad(x, (0, T - x.shape[-1]), value=value)


@torch.no_grad()
def evaluate(policy, tokenizer, rows: list[Row], reward, max_new_tokens: int, *, samples: int = 4,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None, seed: int = 0,
             source: str | None = None, batch_size: int = 256, anchor=None) -> dict:
    """The metrics above for ``rows`` under ``reward`` (a ``compose.RewardSet``), as one flat dict."""
    if not rows:
        return {}
    device, eos, pad = policy.device, tokenizer.eos_token_id, tokenizer.pad_token_id
    greedy, sampled = _Tally(), _Tally()
    kl_sum, kl_n, drift_sum = 0.0, 0, 0.0
    right, answered = 0, 0
    gen = torch.Generator(device=device).manual_seed(seed)
    for i in range(0, len(rows), batch_size):
        batch = rows[i:i + batch_size]
        prompts = encode_prompts(tokenizer, [prompt_text(tokenizer, r.prompt) for r in batch]).to(device)
        ro = sample_group(policy, prompts, 1, max_new_tokens=max_new_tokens, eos_id=eos, pad_id=pad, top_k=1,
                          generator=gen)                                       # greedy: the draw is moot
        bound = reward.bind(batch, source)
        greedy.add(_scored(bound, prompts, ro))
        answers = [answer_text(r.columns.get("answer")) for r in batch]
        if any(a is not None for a in answers):
            texts = decode_completions(tokenizer, ro.completions, ro.mask, prompts=prompts)
            right += sum(a is not None and t[0].strip() == a for t, a in zip(texts, answers))
            answered += sum(a is not None for a in answers)
        if samples:
            draws = gen.get_state()        # the anchor samples below with the same random numbers
            ro = sample_group(policy, prompts, samples, max_new_tokens=max_new_tokens, eos_id=eos, pad_id=pad,
                              temperature=temperature, top_k=top_k, top_p=top_p, generator=gen)
            sampled.add(_scored(bound, prompts, ro))
            if anchor is not None and ro.logp_is_policy:
                k1 = (ro.logp - anchor.log_probs(prompts, ro.completions)).masked_fill(~ro.mask, 0.0).sum(-1)   # (P,k)
                kl_sum, kl_n = kl_sum + k1.sum().item(), kl_n + k1.numel()
            if anchor is not None:
                drift_sum += _drift(anchor, prompts, ro, draws, device, max_new_tokens=max_new_tokens, eos_id=eos,
                                    pad_id=pad, temperature=temperature, top_k=top_k, top_p=top_p).sum().item()
    out = greedy.means("eval/greedy")
    if samples:
        out |= sampled.means("eval/sampled")
        out |= {f"eval/pass@{samples}/{k}": sampled.passed[k] / sampled.prompts
                for k in sampled.sums if sampled.binary[k] and sampled.counts[k]}
    if kl_n:
        out["eval/kl"] = kl_sum / kl_n
    if samples and anchor is not None:
        out["eval/embedding_drift"] = drift_sum / len(rows)
    if answered:                                  # over the rows that have an answer
        out["test_accuracy"] = right / answered
    return out
