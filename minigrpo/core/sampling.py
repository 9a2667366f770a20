"""Sampling: draw a group of G completions for each of P prompts.

Everything downstream sees one layout, prompts × group × tokens (P × G × T). A bandit is a policy
whose completions have one token (T = 1); a language model runs the same loop for T tokens.
"""
from __future__ import annotations

import contextlib
import math
import numbers
from dataclasses import dataclass

import torch
from torch import Tensor

from minigrpo.core.protocols import Decoder, NextTokenPolicy, Sampler, require
from minigrpo.core.validate import is_int


@dataclass
class Rollout:
    """A batch of sampled completions.

    ==============  ============  ========================================================
    ``prompts``     (P, ...)      what the policy was conditioned on (ids, contexts, tokens)
    ``completions`` (P, G, T)     sampled token ids; padding after EOS holds ``pad_id``
    ``logp``        (P, G, T)     log-prob of each sampled token under the distribution it was
                                  drawn from (after temperature / top-k / top-p); 0 on padding
    ``mask``        (P, G, T)     True on generated tokens, EOS included; False on padding
    ``logp_is_policy``  bool      True when that distribution *is* the policy (temperature 1, no
                                  top-k/top-p): ``logp`` then serves as log π_old with no extra pass
    ==============  ============  ========================================================
    """

    prompts: Tensor
    completions: Tensor
    logp: Tensor
    mask: Tensor
    logp_is_policy: bool = True

    @property
    def shape(self):
        return tuple(self.completions.shape)


def sample_categorical(logp_all: Tensor, generator: torch.Generator | None = None, u: Tensor | None = None) -> Tensor:
    """Draw one index per row of log-probabilities (N, V) by inverting the CDF: y = #{k : F(k) ≤ u}.

    With u ~ U[0, 1), P(y = k) = P(F(k−1) ≤ u < F(k)) = p_k, and a token of probability 0 is never
    drawn (not even at u = 0). Equivalent to ``torch.multinomial(p, 1)`` in distribution and ~3×
    cheaper for small V. The clamp sends a u above a rounded-down F(V−1) (≈ 1 − 1e-7) to the last index.
    ``u`` (N, 1): the uniform numbers to draw with, given (see ``sample_group``'s ``noise``); None:
    drawn here from ``generator``.
    """
    N, V = logp_all.shape
    cdf = logp_all.exp().cumsum(-1)                                                    # (N, V)
    if u is None:
        u = torch.rand(N, 1, generator=generator, dtype=cdf.dtype, device=cdf.device)
    else:
        u = u.to(cdf.dtype)
    return torch.searchsorted(cdf, u, right=True).clamp_max_(V - 1)[:, 0]              # (N,)


def apply_temperature(logp_all: Tensor, temperature: float) -> Tensor:
    """log softmax(logits / τ): τ < 1 sharpens, τ > 1 flattens (log-probs are logits up to a constant)."""
    return logp_all if temperature == 1.0 else torch.log_softmax(logp_all / temperature, dim=-1)


def top_k_filter(logp_all: Tensor, k: int) -> Tensor:
    """Keep the k most likely tokens of each row (…, V) and renormalise; the rest get −inf.
    k = 1 is greedy decoding."""
    kth = logp_all.topk(k, dim=-1).values[..., -1:]                                    # (…, 1)
    return torch.log_softmax(logp_all.masked_fill(logp_all < kth, float("-inf")), dim=-1)


def top_p_filter(logp_all: Tensor, p: float) -> Tensor:
    """Nucleus sampling (Holtzman et al. 2019): keep the smallest set of most likely tokens whose
    probability sums to ≥ p, renormalised. The most likely token is always kept."""
    sorted_logp, order = logp_all.sort(dim=-1, descending=True)                        # (…, V)
    before = sorted_logp.exp().cumsum(-1) - sorted_logp.exp()                          # mass strictly before
    drop_sorted = before >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return torch.log_softmax(logp_all.masked_fill(drop, float("-inf")), dim=-1)


def completion_mask(completions: Tensor, eos_id: int) -> Tensor:
    """True on every token up to and including the first EOS (no EOS strictly before t), (…, T)."""
    is_eos = completions == eos_id
    return (is_eos.cumsum(-1) - is_eos.long()) == 0


class PrefixDecoder:
    """The plain decoding loop, no cache: each step asks ``policy.next_token_logp(prompts, prefix)``
    for the next-token log-probs given the whole prefix (P, G, t). Bandits and small policies use it."""

    def __init__(self, policy: NextTokenPolicy, prompts: Tensor, G: int):
        self.policy, self.prompts = policy, prompts
        self.prefix = torch.empty(prompts.shape[0], G, 0, dtype=torch.long)

    def step(self, y: Tensor | None) -> Tensor:
        """Append the tokens just drawn, y (P, G) or None at the start; return log π(·|x, prefix) (P, G, V)."""
        if y is not None:
            self.prefix = torch.cat([self.prefix, y[..., None]], dim=-1)              # (P, G, t+1)
        return self.policy.next_token_logp(self.prompts, self.prefix)


class PrefixDecoding:
    """Mixin that makes a ``NextTokenPolicy`` a ``Sampler`` (see ``protocols.py``): its decoder is a
    ``PrefixDecoder`` over ``next_token_logp``, and sampling holds no context open. Every bandit
    policy inherits it; a language model writes both itself (a key/value cache, an autocast region)."""

    def decoder(self, prompts: Tensor, G: int, max_new_tokens: int) -> PrefixDecoder:
        return PrefixDecoder(self, prompts, G)

    def sampling_context(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()


@torch.no_grad()
def sample_group(policy: Sampler, prompts: Tensor, G: int, *, max_new_tokens: int = 1, eos_id: int | None = None,
                 pad_id: int = 0, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None, noise: Tensor | None = None) -> Rollout:
    """Sample G completions per prompt, token by token, from the policy's next-token distribution.

    The policy is a ``protocols.Sampler``: it supplies a decoder, ``policy.decoder(prompts, G,
    max_new_tokens)`` (a language model keeps its KV cache there; a bandit policy inherits a
    ``PrefixDecoder`` over its ``next_token_logp`` from ``PrefixDecoding``). ``decoder.step(y)`` feeds
    the tokens just drawn and returns next-token log-probs (P, G, V); this loop does the rest, the
    same for a bandit and for GPT-2: temperature → top-k → top-p → draw → record log-prob → stop when
    every completion has ended.

    ``logp`` is recorded under the distribution actually sampled, which is what importance ratios
    need. After a completion emits ``eos_id`` its later positions hold ``pad_id`` with mask False
    and logp 0 (the EOS itself is a trained token, mask True).

    ``noise`` (P, G, T): the uniform numbers u ~ U[0, 1) to draw with, token t of completion (p, g)
    by inverting its CDF at ``noise[p, g, t]`` (``sample_categorical``); None: drawn from ``generator``
    as the loop goes, so a prompt's draws depend on the others in the batch. Given per prompt (a
    language-model run draws prompt p's from a generator seeded by the run's seed, the step and p),
    a prompt gets the same completions whichever batch it is sampled in — the same on one process
    as on several that share the step's prompts (``runs/parallel.py``).

    ``policy.sampling_context()`` is held open around the whole loop (a language model in bf16 opens
    one autocast region there, so its weights are cast once per rollout instead of once per token).
    A policy that is not a ``Sampler`` is refused with a ``TypeError`` naming what it lacks.
    """
    if not (is_int(G) and G >= 1):
        raise ValueError(f"sample_group: G={G!r} must be an integer ≥ 1")
    if not (is_int(max_new_tokens) and max_new_tokens >= 1):
        raise ValueError(f"sample_group: max_new_tokens={max_new_tokens!r} must be an integer ≥ 1")
    if not (isinstance(temperature, numbers.Real) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"sample_group: temperature={temperature!r} must be a finite number > 0")
    if top_k is not None and not (is_int(top_k) and top_k >= 1):
        raise ValueError(f"sample_group: top_k={top_k!r} must be an integer ≥ 1, or None for no top-k")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"sample_group: top_p={top_p!r} must be in (0, 1], or None for no top-p")
    T = max_new_tokens
    if noise is not None and tuple(noise.shape) != (prompts.shape[0], G, T):
        raise ValueError(f"sample_group: noise has shape {tuple(noise.shape)}; it must be (P, G, max_new_tokens) = "
                         f"{(prompts.shape[0], G, T)}")
    try:
        context, make_decoder = policy.sampling_context, policy.decoder
    except AttributeError:               # not a Sampler: say what is missing (a correct policy pays nothing)
        require(policy, Sampler, "sample_group: policy")
        raise
    with context():                      # e.g. one autocast region for the whole loop
        decoder = make_decoder(prompts, G, T)
        tokens, logps = _decode(decoder, prompts, G, T, eos_id, pad_id, temperature, top_k, top_p, generator, noise)
    if len(tokens) == 1:                                                # a one-token completion (bandit)
        completions, logp = tokens[0][..., None], logps[0][..., None]   # (P, G, 1)
    else:
        completions, logp = torch.stack(tokens, -1), torch.stack(logps, -1)           # (P, G, T')
    if eos_id is None:
        mask = torch.ones_like(completions, dtype=torch.bool)
    else:
        mask = completion_mask(completions, eos_id)
        completions = completions.masked_fill(~mask, pad_id)
        logp = logp.masked_fill(~mask, 0.0)
    if completions.shape[-1] < T:                                       # every completion ended early
        pad = T - completions.shape[-1]
        completions = torch.nn.functional.pad(completions, (0, pad), value=pad_id)
        logp = torch.nn.functional.pad(logp, (0, pad))
        mask = torch.nn.functional.pad(mask, (0, pad), value=False)
    plain = temperature == 1.0 and top_k is None and (top_p is None or top_p >= 1)
    return Rollout(prompts, completions, logp, mask, logp_is_policy=plain)


def _decode(decoder: Decoder, prompts, G, T, eos_id, pad_id, temperature, top_k, top_p, generator, noise=None):
    """The token loop of ``sample_group``: lists of the T' ≤ T drawn tokens (P, G) and their log-probs."""
    P = prompts.shape[0]
    tokens, logps = [], []
    noise_t = None if noise is None else noise.movedim(-1, 0).contiguous()             # (T, P, G)
    ended = None
    y = None
    for t in range(T):
        logp_all = apply_temperature(decoder.step(y), temperature)                      # (P, G, V)
        if top_k is not None and top_k < logp_all.shape[-1]:
            logp_all = top_k_filter(logp_all, top_k)
        if top_p is not None and top_p < 1:
            logp_all = top_p_filter(logp_all, top_p)
        V = logp_all.shape[-1]
        u = None if noise is None else noise_t[t].reshape(P * G, 1)                     # (P·G, 1)
        y = sample_categorical(logp_all.reshape(P * G, V), generator, u).view(P, G)   # (P, G)
        tokens.append(y)
        logps.append(logp_all.gather(-1, y[..., None])[..., 0])
        if eos_id is not None and t + 1 < T:
            ended = (y == eos_id) if ended is None else ended | (y == eos_id)
            if bool(ended.all()):
                break                                                                  # every completion ended
            y = y.masked_fill(ended, pad_id)      # what an ended completion feeds next is masked out anyway
    return tokens, logps
