"""An LM judge: a (small) causal LM scores a completion by the probability it gives a verdict.

The completion is put into a judging prompt (``template``), and the judge's next-token distribution
is read at the end of it. With verdicts {v: value}, e.g. {"Y": 1, "N": 0} or grades {"1": 1, …, "5": 5},

    p(v | judging prompt) renormalised over the verdicts,   r = Σ_v value_v · p(v)

— the probability of "Yes" for a yes/no judge, the expected grade for a grader (as in G-Eval, Liu et
al. 2023). Reading probabilities rather than sampling a verdict gives a smooth reward with no extra
noise. The next-token log-probs come from the same decoder that samples completions
(``CausalLMPolicy.decoder``), so the judge is any Hugging Face causal LM; ``tasks.JudgeTask`` plus
``sft.build_anchor`` trains a tiny one on CPU.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor


def verdict_probs(logp_all: Tensor, verdict_ids: Tensor) -> Tensor:
    """p(v) = softmax over the verdict tokens of the judge's next-token log-probs: (N, V) → (N, n_verdicts).

    Renormalised over the verdicts: the mass the judge puts on other tokens is left out, not counted as a verdict."""
    return logp_all[:, verdict_ids.to(logp_all.device)].log_softmax(-1).exp()      # (N, n_v)


def expected_verdict(logp_all: Tensor, verdict_ids: Tensor, values: Tensor) -> Tensor:
    """r = Σ_v value_v·p(v), the judge's expected verdict (N,), from its next-token log-probs (N, V)."""
    return verdict_probs(logp_all, verdict_ids) @ values.to(logp_all.dtype).to(logp_all.device)


class LMJudge:
    """A ``protocols.RewardComponent``: r = Σ_v value_v·p(v | template(prompt, completion))."""

    def __init__(self, model, tokenizer, template: str = "{prompt}{completion}?",
                 verdicts: dict[str, float] | None = None, name: str = "judge", batch_size: int = 256):
        from minigrpo.lm.policy import CausalLMPolicy
        from minigrpo.lm.tokens import check_tokenizer

        check_tokenizer(tokenizer)
        verdicts = dict(verdicts or {"Y": 1.0, "N": 0.0})
        if len(verdicts) < 2:
            raise ValueError(f"LMJudge: verdicts={verdicts!r}; give at least two verdicts with values")
        ids = {}
        for v in verdicts:
            tok = tokenizer.encode(v, add_special_tokens=False)
            if len(tok) != 1:
                raise ValueError(f"LMJudge: verdict {v!r} is {len(tok)} tokens for this tokenizer; each verdict "
                                 "must be exactly one token (for GPT-2 style tokenizers try ' Yes' / ' No')")
            ids[v] = tok[0]
        if "{completion}" not in template:
            raise ValueError(f"LMJudge: template={template!r} must contain '{{completion}}' (and usually '{{prompt}}')")
        self.policy = model if isinstance(model, CausalLMPolicy) else CausalLMPolicy(model, tokenizer.pad_token_id)
        self.policy.requires_grad_(False)
        self.tokenizer, self.template, self.name, self.batch_size = tokenizer, template, name, batch_size
        self.verdict_ids = torch.tensor(list(ids.values()))
        self.values = torch.tensor(list(verdicts.values()), dtype=torch.get_default_dtype())

    @classmethod
    def load(cls, path: str | Path, device="cpu", **kwargs) -> "LMJudge":
        from minigrpo.lm.models import load_causal_lm

        model, tok = load_causal_lm(path, device=device)
        return cls(model, tok, **kwargs)

    @torch.no_grad()
    def verdict_probs(self, prompts: list[str], completions: list[str]) -> Tensor:
        """p(v | judging prompt), renormalised over the verdicts (N, n_verdicts)."""
        from minigrpo.lm.tokens import encode_prompts

        texts = [self.template.format(prompt=p, completion=c) for p, c in zip(prompts, completions)]
        out = []
        for i in range(0, len(texts), self.batch_size):
            ids = encode_prompts(self.tokenizer, texts[i:i + self.batch_size]).to(self.policy.device)   # (N, L)
            logp_all = self.policy.decoder(ids, 1, 1).step(None)[:, 0]                                 # (N, V)
            out.append(verdict_probs(logp_all, self.verdict_ids).cpu())                                 # (N, n_v)
        return torch.cat(out)

    def scores(self, prompts: list[str], completions: list[str]) -> Tensor:
        """r = Σ_v value_v·p(v) (N,)."""
        return self.verdict_probs(prompts, completions) @ self.values

    def score(self, batch) -> Tensor:
        P, G, T = batch.shape
        prompts = [batch.prompts[p] for p in range(P) for _ in range(G)]
        texts = [batch.texts[p][g] for p in range(P) for g in range(G)]
        return self.scores(prompts, texts).view(P, G)                                  # (P,G)
