"""Exercises of notebooks/03_one_grpo_step_by_hand.ipynb: step 4 (the KL charged against the reward), step 6 (the
per-token push ψ) and the k3 estimator that DeepSeekMath's recipe puts into the loss."""
from __future__ import annotations

import torch

from minigrpo.core.kl import K1, KLInReward
from minigrpo.core.kl import k3 as _k3
from minigrpo.core.kl import k3_grad as _k3_grad
from minigrpo.core.loss import pg_loss_grad as _pg_loss_grad
from minigrpo.core.loss import seq_mean_token_mean as _seq_mean_token_mean
from minigrpo.lab.exercises import Exercise

NOTEBOOK = "03_one_grpo_step_by_hand.ipynb"


def _group(gen: torch.Generator, P: int, G: int, T: int, drift: float = 0.3):
    """(logp_old, logp_anchor, mask) of a sampled group (P, G, T): a prefix mask per completion (EOS included),
    one completion with no token at all, and log-probs that are not 0 on padding (the anchor scores padding)."""
    logp_old = -torch.rand(P, G, T, generator=gen) * 3                      # (P, G, T) log-probs ≤ 0
    logp_anchor = logp_old + drift * torch.randn(P, G, T, generator=gen)    # the policy has moved a little
    lengths = torch.randint(1, T + 1, (P, G, 1), generator=gen)
    mask = torch.arange(T) < lengths                                        # (P, G, T)
    mask[0, -1] = False                                                     # |o| = 0
    return logp_old, logp_anchor, mask


def _reward_cases(gen: torch.Generator) -> list[tuple]:
    cases = []
    for P, G, T, beta in [(3, 4, 5, 0.05), (2, 2, 3, 1.0), (4, 8, 6, 1e-3), (1, 3, 1, 0.5)]:   # G = 2; T = 1
        logp_old, logp_anchor, mask = _group(gen, P, G, T)
        r = torch.randint(0, 2, (P, G), generator=gen).float()             # (P, G) exact-answer rewards
        cases.append((r, logp_old, logp_anchor, mask, beta))
    return cases


total_reward = Exercise(
    id="03.1", title="the KL charged against the reward (step 4)", function="my_total_reward",
    reference=KLInReward(K1).shape_reward, cases=_reward_cases,
    hint="k1 = logp_old − logp_anchor per token; sum it over the tokens (dim=-1) counting only the real ones "
         "(the anchor's log-probs are not 0 on padding: multiply by the mask or use torch.where), then "
         "R = r − β·Σ_t m·k1, of shape (P, G)")


def _psi(logp: torch.Tensor, logp_old: torch.Tensor, A: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """ψ of the seed recipe (plain surrogate, per-sequence mean): ``recipe.aggregation(mask) *
    recipe.surrogate.grad(logp, logp_old, A[..., None])``, as notebook 03 computes it."""
    return _seq_mean_token_mean(mask) * _pg_loss_grad(logp, logp_old, A[..., None])


def _psi_cases(gen: torch.Generator) -> list[tuple]:
    cases = []
    for P, G, T, off_policy in [(3, 4, 5, 0.0), (2, 2, 4, 0.0), (2, 6, 3, 0.5), (1, 3, 1, 0.2)]:
        logp_old, _, mask = _group(gen, P, G, T)
        logp = logp_old + off_policy * torch.randn(P, G, T, generator=gen)   # ρ = 1, or a later update: ρ ≠ 1
        R = torch.randn(P, G, generator=gen)
        A = R - R.mean(1, keepdim=True)                                       # (P, G) group-mean advantages
        cases.append((logp, logp_old, A, mask))
    return cases


psi = Exercise(
    id="03.2", title="the per-token push ψ (step 6)", function="my_psi",
    reference=_psi, cases=_psi_cases,
    hint="ψ = W·(−ρ·A) with ρ = exp(logp − logp_old) (not always 1: the checker also tries a later update), "
         "A broadcast over the tokens as A[..., None], and W = m / (P·G·|o|) where |o| = mask.sum(-1, "
         "keepdim=True); a completion with no token has |o| = 0: clamp it to 1 so its W is 0, not NaN")


def _k3_both(logp: torch.Tensor, logp_anchor: torch.Tensor):
    return _k3(logp, logp_anchor), _k3_grad(logp, logp_anchor)


def _k3_cases(gen: torch.Generator) -> list[tuple]:
    logp = -torch.rand(3, 4, 5, generator=gen) * 3
    near = -torch.rand(2, 6, generator=gen)
    far = torch.tensor([-30.0, -1.0, -0.5, -2.0])                           # log ratios +25, −29, −9.5, +0.0
    return [(logp, logp + 0.5 * torch.randn(3, 4, 5, generator=gen)),       # (P, G, T)
            (near, near.clone()),                                           # π = π_anchor: k3 = 0, ∂ = 0
            (near, near + 1e-4 * torch.randn(2, 6, generator=gen)),         # tiny log ratios
            (far, torch.tensor([-5.0, -30.0, -10.0, -2.0]))]                # beyond the clamp at ±20


k3 = Exercise(
    id="03.3", title="the k3 estimator and its derivative", function="my_k3",
    reference=_k3_both, cases=_k3_cases,
    hint="with lr = (logp_anchor − logp).clamp(−20, 20): k3 = exp(lr) − 1 − lr (torch.expm1(lr) − lr keeps "
         "it ≥ 0) and ∂k3/∂logp = 1 − exp(lr); return both as a tuple (k3, grad), each the shape of logp")
