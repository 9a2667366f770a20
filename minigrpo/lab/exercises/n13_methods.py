"""Exercises of notebooks/13_methods.ipynb: the preference margin h, the DPO and IPO losses on it, PPO's GAE
advantages, and offline GRPO's importance ratio."""
from __future__ import annotations

import torch

from minigrpo.core.critic import gae as _gae
from minigrpo.core.loss import importance_ratio as _importance_ratio
from minigrpo.core.preference import DPO, IPO
from minigrpo.core.preference import preference_margin as _preference_margin
from minigrpo.lab.exercises import Exercise

NOTEBOOK = "13_methods.ipynb"


def _padded_mask(gen: torch.Generator, shape: tuple, T: int) -> torch.Tensor:
    """(…, T) True on the first L tokens of each completion, L drawn in 1…T."""
    lengths = torch.randint(1, T + 1, shape, generator=gen)
    return torch.arange(T) < lengths[..., None]


def _margin_cases(gen: torch.Generator) -> list[tuple]:
    cases = []
    for P, T in [(4, 5), (3, 1), (1, 6)]:
        logp = torch.log_softmax(torch.randn(P, 2, T, 7, generator=gen), -1)[..., 0]          # (P, 2, T)
        logp_anchor = torch.log_softmax(torch.randn(P, 2, T, 7, generator=gen), -1)[..., 0]
        mask = _padded_mask(gen, (P, 2), T)                                                    # chosen, rejected
        junk = torch.full_like(logp, -30.0)                                                    # padding: ignore it
        cases.append((torch.where(mask, logp, junk), torch.where(mask, logp_anchor, 2 * junk), mask))
    return cases


margin = Exercise(
    id="13.1", title="the preference margin h", function="my_margin",
    reference=lambda logp, logp_anchor, mask: _preference_margin(logp, logp_anchor, mask), cases=_margin_cases,
    hint="the sequence log-ratio of each completion is Σ_t (log π − log π_anchor) over its real tokens "
         "(mask True; the padding holds junk), shape (P, 2); h = chosen's (index 0) minus rejected's (index 1), "
         "shape (P,)")


def _loss_cases(gen: torch.Generator) -> list[tuple]:
    return [(torch.randn(8, generator=gen), 0.1, 0.1),
            (torch.tensor([0.0, 50.0, -50.0, 5.0]), 0.05, 0.05),        # h = 50 at β = 0.05: still a loss
            (torch.tensor([-3000.0, 3000.0]), 1.0, 0.5),                 # βh = ∓3000: σ under- and overflows
            (10 * torch.randn(5, generator=gen), 0.5, 2.0)]


def _losses(h, beta, tau):
    return DPO(beta).value(h), IPO(tau).value(h)


dpo_ipo_losses = Exercise(
    id="13.2", title="the DPO and IPO losses on the margin", function="my_dpo_ipo_losses",
    reference=_losses, cases=_loss_cases,
    hint="per pair, a tuple (DPO, IPO) of two (P,) tensors: DPO −log σ(β·h), written with "
         "torch.nn.functional.logsigmoid (σ(−3000) is 0 and log 0 = −inf); IPO (h − 1/(2τ))²")


def _gae_cases(gen: torch.Generator) -> list[tuple]:
    cases = []
    for (P, G, T), gamma, lam in [((2, 3, 5), 1.0, 0.95), ((3, 2, 4), 1.0, 1.0), ((2, 2, 4), 1.0, 0.0),
                                  ((1, 4, 6), 0.9, 0.8)]:
        mask = _padded_mask(gen, (P, G), T)
        R = torch.zeros(P, G, T)
        last = mask.sum(-1, keepdim=True) - 1
        R.scatter_(-1, last, torch.rand(P, G, 1, generator=gen))                 # the reward on the last token …
        R = R - 0.05 * torch.rand(P, G, T, generator=gen) * mask                  # … and a per-token KL penalty
        V = torch.randn(P, G, T, generator=gen)                                   # the critic's values, junk on
        cases.append((R + 7.0 * ~mask, V, mask, gamma, lam))                      # the padding (R too)
    return cases


gae = Exercise(
    id="13.3", title="GAE advantages", function="my_gae",
    reference=lambda R, V, mask, gamma, lam: _gae(R, V, mask, gamma, lam), cases=_gae_cases,
    hint="zero R and V on the padding first; then from the last token backwards: δ_t = R_t + γ·V_{t+1} − V_t "
         "(V_{t+1} = 0 past the last token) and A_t = δ_t + γλ·A_{t+1}, with A = 0 on the padding and nothing "
         "carried through it; return the tuple (A, A + V)")


def _ratio_cases(gen: torch.Generator) -> list[tuple]:
    logp = torch.log_softmax(torch.randn(2, 3, 4, 6, generator=gen), -1)[..., 0]      # (P, G, T) log π_θ
    logp_mu = torch.log_softmax(torch.randn(2, 3, 4, 6, generator=gen), -1)[..., 0]   # log μ of the logger
    rare = logp_mu.clone()
    rare[0, 0, :2] = torch.tensor([-40.0, -95.0])       # tokens μ almost never wrote: log-ratio far beyond 20
    far = logp.clone()
    far[1, 2, 1] = -70.0                                # a token π_θ has all but forgotten: ratio → 0
    return [(logp, logp_mu), (logp, logp.clone()), (logp, rare), (far, logp_mu)]


importance_ratio = Exercise(
    id="13.4", title="offline GRPO's importance ratio", function="my_importance_ratio",
    reference=lambda logp, logp_behaviour: _importance_ratio(logp, logp_behaviour), cases=_ratio_cases,
    hint="ρ_t = π_θ(y_t)/μ(y_t) = exp(log π_θ − log μ), computed from the log-probs and with the log-ratio "
         "clamped to [−20, 20] before the exp (a token the logger almost never wrote would give inf in float32)")
