"""Baselines: turn total rewards R (P × G) into advantages A (P × G).

Subtracting a baseline b that does not depend on the sampled completion leaves the policy
gradient's expectation unchanged and lowers its variance (Williams 1992). The group-based
baselines below do use the other completions of the same prompt; how that shifts the fixed point
is spelled out per function.

Every estimator is a pure function of R, wrapped in a ``Baseline`` so a recipe can hold it and
config validation can ask how large a group it needs. ``LearnedValue`` keeps state.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn


def no_baseline(R: Tensor, valid: Tensor | None = None) -> Tensor:
    """A = R (REINFORCE)."""
    return R if valid is None else torch.where(valid, R, 0.0)


def batch_mean(R: Tensor, valid: Tensor | None = None) -> Tensor:
    """A_{p,g} = R_{p,g} − mean over the whole batch."""
    if valid is None:
        return R - R.mean()
    return torch.where(valid, R - R[valid].mean() if valid.any() else R, 0.0)


def _group_count_sum(R: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """(n_p, Σ_g R_{p,g}) over the valid completions of each group, both (P, 1)."""
    return valid.sum(1, keepdim=True).to(R.dtype), torch.where(valid, R, 0.0).sum(1, keepdim=True)


def group_mean(R: Tensor, valid: Tensor | None = None) -> Tensor:
    """A_{p,g} = R_{p,g} − (1/G) Σ_j R_{p,j}.

    The mean includes the sample itself, which scales the expected gradient by (G−1)/G: harmless
    when the KL is in the reward, an effective β·G/(G−1) when the KL is in the loss.
    With ``valid`` (P, G), the mean runs over the valid completions only and the others get A = 0.
    """
    if valid is None:
        return R - R.mean(dim=1, keepdim=True)
    n, total = _group_count_sum(R, valid)
    return torch.where(valid, R - total / n.clamp_min(1), 0.0)


def group_mean_std(R: Tensor, valid: Tensor | None = None, eps: float = 1e-4) -> Tensor:
    """A_{p,g} = (R_{p,g} − mean_j R_{p,j}) / (std_j R_{p,j} + eps)   (DeepSeekMath GRPO, §4.1.2).

    DeepSeekMath writes Â = (r − mean(r))/std(r) and does not say which std or add an eps. Here std is
    the unbiased sample std (divisor G − 1) and eps = 1e-4, as in TRL's GRPOTrainer (``torch.std``
    and ``+ 1e-4``): our choice to match TRL, not the paper's. A group whose
    rewards are all equal has std 0 and gets A = 0 exactly (the numerator is 0), not NaN.
    Dividing by a per-group statistic re-weights prompts, so the fixed point is not π*.
    With ``valid``, mean and std run over the valid completions; a group with fewer than two gets A = 0.
    """
    if valid is None:
        valid = torch.ones_like(R, dtype=torch.bool)
    n, total = _group_count_sum(R, valid)
    centred = torch.where(valid, R - total / n.clamp_min(1), 0.0)
    std = ((centred ** 2).sum(1, keepdim=True) / (n - 1).clamp_min(1)).sqrt()
    first = R.gather(1, valid.to(torch.uint8).argmax(1, keepdim=True))
    constant = ((R == first) | ~valid).all(dim=1, keepdim=True) | (n < 2)   # the mean can round: exact zeros
    return torch.where(constant | ~valid, 0.0, centred / (std + eps))


def leave_one_out(R: Tensor, valid: Tensor | None = None) -> Tensor:
    """A_{p,g} = R_{p,g} − (1/(G−1)) Σ_{j≠g} R_{p,j}   (RLOO, Kool et al. 2019; Ahmadian et al. 2024).

    Unbiased: the baseline of sample g never sees sample g. Equals group_mean · G/(G−1).
    With ``valid``, G counts the valid completions; a group with fewer than two gets A = 0.
    """
    if valid is None:
        G = R.shape[1]
        return R - (R.sum(dim=1, keepdim=True) - R) / (G - 1)
    n, total = _group_count_sum(R, valid)
    return torch.where(valid & (n >= 2), R - (total - R) / (n - 1).clamp_min(1), 0.0)


def step_advantages(values: Tensor, ends: Tensor, present: Tensor, T: int) -> Tensor:
    """Per-token advantages from per-step rewards, with a group baseline per step (P,G,S) → (P,G,T).

        ã_{p,g,s} = r_{p,g,s} − mean_{j : step s present in (p, j)} r_{p,j,s}
        A_{p,g,t} = Σ_{s : t ≤ end_{p,g,s}} ã_{p,g,s}

    A token is credited with the (baselined) rewards of its own step and of every later step — the
    return-to-go of process supervision (DeepSeekMath §4.1.3; Lightman et al. 2023, "Let's Verify
    Step by Step"), here with the baseline taken per step index across the group, so a step that
    every completion gets right teaches nothing, and a step that only this one got wrong is blamed.
    Steps missing from a completion are left out of the baseline and credit nothing.
    """
    P, G, S = values.shape
    n = present.sum(1, keepdim=True).to(values.dtype)                                 # (P,1,S)
    mean = torch.where(present, values, 0.0).sum(1, keepdim=True) / n.clamp_min(1)    # (P,1,S)
    centred = torch.where(present, values - mean, 0.0)                                # (P,G,S) ã
    t = torch.arange(T, device=values.device)
    covers = (t <= ends[..., None]) & present[..., None]                              # (P,G,S,T)
    return torch.einsum("pgs,pgst->pgt", centred, covers.to(values.dtype))


@dataclass(frozen=True)
class Baseline:
    """A stateless advantage estimator: ``A = baseline(R, prompts, valid=None)``."""

    name: str
    fn: Callable[..., Tensor]
    min_group: int = 1
    """The smallest group size G it is defined for."""

    def __call__(self, R: Tensor, prompts=None, valid: Tensor | None = None) -> Tensor:
        return self.fn(R) if valid is None else self.fn(R, valid)


NONE = Baseline("none", no_baseline)
BATCH_MEAN = Baseline("batch_mean", batch_mean)
GROUP_MEAN = Baseline("group_mean", group_mean, min_group=2)
GROUP_MEAN_STD = Baseline("group_mean_std", group_mean_std, min_group=2)
LEAVE_ONE_OUT = Baseline("leave_one_out", leave_one_out, min_group=2)


class LearnedValue(nn.Module):
    """A learned state value V_φ(x): A_{p,g} = R_{p,g} − V_φ(x_p)   (actor-critic baseline).

    Each call first computes A with the current V, then takes one SGD step on
    Σ_p ½·mean_g (R_{p,g} − V_φ(x_p))² / n(x_p), where n(x) counts how often prompt x is in the
    batch, so V tracks E[R | x] and each prompt's value moves at rate ``lr`` whatever the batch. ``value_net`` maps prompts to (P,)
    values; the default is a table with one entry per prompt id (right for bandits).
    """

    name = "value"
    min_group = 1

    def __init__(self, n_prompts: int | None = None, value_net: nn.Module | None = None, lr: float = 0.1):
        super().__init__()
        if value_net is None:
            if n_prompts is None:
                raise ValueError("LearnedValue needs n_prompts (for a value table) or a value_net")
            value_net = _ValueTable(n_prompts)
        self.value_net, self.lr = value_net, lr

    def forward(self, R: Tensor, prompts=None, valid: Tensor | None = None) -> Tensor:
        w = torch.ones_like(R) if valid is None else valid.to(R.dtype)             # (P,G) who counts
        with torch.enable_grad():
            V = self.value_net(prompts)                         # (P,)
            A = (R - V.detach()[:, None]) * w                   # (P,G)
            _, inverse, counts = torch.unique(prompts, return_inverse=True, return_counts=True) \
                if isinstance(prompts, Tensor) and prompts.dtype == torch.long else (None, None, None)
            per_prompt = 0.5 * (w * (R.detach() - V[:, None]) ** 2).sum(1) / w.sum(1).clamp_min(1)   # (P,)
            loss = (per_prompt / counts[inverse]).sum() if counts is not None else per_prompt.sum()
            grads = torch.autograd.grad(loss, list(self.value_net.parameters()))
        with torch.no_grad():
            for p, g in zip(self.value_net.parameters(), grads):
                p.sub_(self.lr * g)
        return A


class _ValueTable(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.v = nn.Parameter(torch.zeros(n))

    def forward(self, prompts: Tensor) -> Tensor:
        return self.v[prompts]


BASELINES = {b.name: b for b in (NONE, BATCH_MEAN, GROUP_MEAN, GROUP_MEAN_STD, LEAVE_ONE_OUT)}
"""Stateless baselines by name (for the CLI). ``value`` is built per run: it has state."""
