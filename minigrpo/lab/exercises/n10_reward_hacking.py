"""Exercises of notebooks/10_reward_hacking.ipynb: how far an answer distribution moved (total variation, KL), the
true reward at the proxy's optimum π*, and the adaptive β that steers the KL towards a target."""
from __future__ import annotations

import torch

from minigrpo.core.kl import AdaptiveBeta as _AdaptiveBeta
from minigrpo.core.optimum import expected_reward as _expected_reward
from minigrpo.core.optimum import kl_divergence as _kl_divergence
from minigrpo.core.optimum import optimal_policy as _optimal_policy
from minigrpo.core.optimum import total_variation as _total_variation
from minigrpo.lab.exercises import Exercise

NOTEBOOK = "10_reward_hacking.ipynb"


def _distributions(gen: torch.Generator) -> list[tuple]:
    def dist(V, scale=1.0):
        return torch.softmax(scale * torch.randn(V, generator=gen), -1)

    p_zero = dist(8)
    p_zero[[1, 5]] = 0.0                                 # answers the policy never writes: 0·log 0 = 0
    p_zero = p_zero / p_zero.sum()
    p = dist(6)
    return [(dist(12), dist(12)),                         # two answer distributions over 12 answers
            (dist(20, 4.0), dist(20)),                    # a peaked policy against a broad anchor
            (p_zero, dist(8)),
            (p, p.clone()),                               # no move at all: 0
            (torch.tensor([0.5, 0.5, 0.0]), torch.tensor([0.5, 0.0, 0.5]))]   # q = 0 where p > 0: KL = inf


def _kl(p, q):
    return float(_kl_divergence(p.log(), q.log()))


def _tv(p, q):
    return float(_total_variation(p.log(), q.log()))


tv = Exercise(
    id="10.1", title="the total variation between two answer distributions", function="my_tv",
    reference=_tv, cases=_distributions,
    hint="TV(p, q) = ½ Σ_y |p(y) − q(y)|, a number between 0 and 1: the most probability any set of answers "
         "gained or lost")


kl = Exercise(
    id="10.2", title="KL(p ‖ q) between two answer distributions", function="my_kl",
    reference=_kl, cases=_distributions,
    hint="KL(p ‖ q) = Σ_y p(y)·(log p(y) − log q(y)), summing only where p(y) > 0 (0·log 0 is 0, but in torch "
         "0 * log(0) is NaN: mask with torch.where(p > 0, …, 0.0)); it is inf where q(y) = 0 < p(y); and mind "
         "the order: p is the first argument")


def _proxy_cases(gen: torch.Generator) -> list[tuple]:
    cases = []
    for K, beta in [(5, 0.1), (8, 1.0), (6, 0.01), (4, 0.002)]:      # β = 0.002: exp(r/β) overflows float32
        logp_anchor = torch.log_softmax(torch.randn(K, generator=gen), -1)
        r_true = torch.rand(K, generator=gen)
        r_proxy = r_true.clone()
        r_proxy[0] = r_true.max() + 0.3                                  # the proxy overpays one answer
        cases.append((logp_anchor, r_proxy, r_true, beta))
    return cases


def _true_reward_at_optimum(logp_anchor, r_proxy, r_true, beta):
    return float(_expected_reward(_optimal_policy(logp_anchor, r_proxy, beta), r_true))


proxy_optimum = Exercise(
    id="10.3", title="the true reward at the proxy's optimum", function="my_true_reward_at_optimum",
    reference=_true_reward_at_optimum, cases=_proxy_cases,
    hint="π* is built from the PROXY reward, log π* = log_softmax(log π_anchor + r_proxy/β) (stay in log space: "
         "at small β exp(r/β) overflows); the answer is what the TRUE reward says of it, Σ_y π*(y)·r_true(y)",
    notes=("notice (try it with your function): as β → 0, π* piles onto the answer the proxy overpays and "
           "E_π*[r_true] tends to that answer's true reward, whatever it is worth; a large β keeps π* near the "
           "anchor — Goodhart's law, in closed form",))


def _beta_cases(gen: torch.Generator) -> list[tuple]:
    # (β, the step's sampled KL, the target KL, n samples in the step, horizon)
    return [(0.01, 0.12, 0.1, 128, 500.0),      # 20% over the target: e = 0.2, right at the clip
            (0.01, 0.5, 0.1, 128, 500.0),       # far over: e clipped to 0.2
            (0.3, 0.0, 0.1, 128, 500.0),        # no KL at all: e = −1, clipped to −0.2
            (0.05, 0.09, 0.1, 64, 10_000.0),    # a little under: e = −0.1
            (0.02, 0.1, 0.1, 128, 500.0),       # on target: β unchanged
            (float(torch.rand(1, generator=gen)), float(torch.rand(1, generator=gen)), 0.2, 256, 1000.0)]


def _adaptive_beta(beta, kl, target_kl, n, horizon):
    controller = _AdaptiveBeta(beta, target_kl, horizon)
    controller.observe(kl, n)
    return controller.value


adaptive_beta = Exercise(
    id="10.4", title="one update of the adaptive β", function="my_adaptive_beta",
    reference=_adaptive_beta, cases=_beta_cases,
    hint="e = clip(KL / KL_target − 1, −0.2, 0.2), then β·(1 + e·n / horizon): the error is clipped before it "
         "is scaled by n / horizon, and β is multiplied, not added to")
