"""``BanditConfig``: every setting of a bandit run, declared once (the command line is derived from it)."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Sequence

from minigrpo.bandit.arms import ArmRewards
from minigrpo.core.advantages import BASELINES
from minigrpo.core.kl import parse_kl
from minigrpo.core.recipe import Recipe, replace, seed_grpo
from minigrpo.core.validate import is_int, is_real

BASELINE_CHOICES = tuple(BASELINES) + ("value",)


def skewed_anchor(K: int, skew: float = 1.0) -> list[float]:
    """An "SFT-like" prior that prefers the first arms: π_anchor(k) ∝ exp(−skew·k/(K−1))."""
    w = [math.exp(-skew * k / max(K - 1, 1)) for k in range(K)]
    return [x / sum(w) for x in w]


def _fail(field_: str, value, allowed: str):
    raise ValueError(f"{field_}={value!r} is not allowed: {allowed}")


def _numbers(field_: str, values) -> list[float]:
    """A sequence of numbers as floats, or a ValueError naming the field (a string is not a sequence of
    numbers here: "0.5" would otherwise become [0.0, 0.5])."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        _fail(field_, values, "a sequence of numbers, e.g. [0.2, 0.5, 0.9]")
    out = []
    for v in values:
        if not (isinstance(v, numbers.Real) and not isinstance(v, bool)):
            _fail(field_, values, "a sequence of numbers, e.g. [0.2, 0.5, 0.9]")
        out.append(float(v))
    return out


@dataclass
class BanditConfig:
    """One bandit run. Every field has a default and is checked on construction."""

    means: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9)
    """Arm means μ_k; the number of arms K is their count (≥ 2)."""
    anchor: Sequence[float] | None = None
    """Anchor probabilities π_anchor(k) (K positive numbers summing to 1); None = ``skewed_anchor(K)``."""
    beta: float = 0.1
    """KL coefficient β ≥ 0 (β = 0 with a KL placement means no anchor pull)."""
    baseline: str = "group_mean"
    """One of none, batch_mean, group_mean, group_mean_std, leave_one_out, value."""
    kl: str = "reward:k1"
    """KL placement and estimator: 'reward:k1|k2|k3', 'loss:k1|k2|k3' or 'none'."""
    steps: int = 4000
    """GRPO steps."""
    group_size: int = 128
    """G, completions (arm pulls) per prompt per step. A bandit step costs about the same for G = 16
    or 128 (per-op overhead dominates), and a large group makes the sampled gradient precise enough
    to land within KL 1e-3 of π* even when two arms are nearly tied."""
    lr: float = 0.03
    """Adam learning rate on the logits; decayed linearly to lr·final_lr_frac over the run."""
    final_lr_frac: float = 0.01
    """Learning rate at the last step as a fraction of ``lr`` (1.0 = constant)."""
    noise: str = "bernoulli"
    """Arm reward noise: 'bernoulli' (means in [0, 1]), 'gaussian' (σ = 1) or 'none'."""
    seed: int = 0
    """Seeds sampling and rewards; the same seed gives the same run."""
    record_every: int = 1
    """Record the policy every this many steps (history length = steps / record_every)."""

    def __post_init__(self):
        self.means = _numbers("means", self.means)
        K = len(self.means)
        if K <= 1:
            _fail("arms", K, "a bandit needs at least 2 arms (give ≥ 2 comma-separated means)")
        if not all(math.isfinite(m) for m in self.means):
            _fail("means", self.means, "every arm mean must be a finite number")
        if self.noise not in ArmRewards.NOISES:
            _fail("noise", self.noise, f"one of {ArmRewards.NOISES}")
        if self.noise == "bernoulli" and not all(0 <= m <= 1 for m in self.means):
            _fail("means", self.means, "Bernoulli arm means must lie in [0, 1] (or use noise='gaussian')")
        if self.anchor is None:
            self.anchor = skewed_anchor(K)
        self.anchor = _numbers("anchor", self.anchor)
        if len(self.anchor) != K:
            _fail("anchor", self.anchor, f"{K} probabilities, one per arm (got {len(self.anchor)})")
        if not all(math.isfinite(a) and a > 0 for a in self.anchor):
            _fail("anchor", self.anchor, "probabilities must be finite and > 0 (a zero-probability arm makes KL infinite)")
        if abs(sum(self.anchor) - 1) > 1e-6:
            _fail("anchor", self.anchor, f"probabilities must sum to 1 (they sum to {sum(self.anchor):.6g})")
        if not (is_real(self.beta) and self.beta >= 0):
            _fail("beta", self.beta, "a finite number ≥ 0")
        if self.baseline not in BASELINE_CHOICES:
            _fail("baseline", self.baseline, f"one of {BASELINE_CHOICES}")
        parse_kl(self.kl)  # raises a ValueError naming the setting
        if not (is_int(self.group_size) and self.group_size >= 1):
            _fail("group_size", self.group_size, "an integer ≥ 1")
        need = BASELINES[self.baseline].min_group if self.baseline in BASELINES else 1
        if self.group_size < need:
            _fail("group_size", self.group_size, f"≥ {need} with baseline={self.baseline!r} (a group baseline needs G ≥ 2)")
        if not (is_int(self.steps) and self.steps >= 1):
            _fail("steps", self.steps, "an integer ≥ 1")
        if not (is_real(self.lr) and self.lr > 0):
            _fail("lr", self.lr, "a finite number > 0")
        if not (is_real(self.final_lr_frac) and 0 < self.final_lr_frac <= 1):
            _fail("final_lr_frac", self.final_lr_frac, "a number in (0, 1]")
        if not (is_int(self.seed) and 0 <= self.seed < 2 ** 63):
            _fail("seed", self.seed, "an integer from 0 to 2**63 − 1")
        if not (is_int(self.record_every) and self.record_every >= 1):
            _fail("record_every", self.record_every, "an integer ≥ 1")
        if self.steps % self.record_every:
            # otherwise the last steps are never recorded and ``policy`` would not be the final policy
            _fail("record_every", self.record_every, f"a divisor of steps={self.steps}, so the final policy is recorded")

    @property
    def K(self) -> int:
        return len(self.means)

    def recipe(self) -> Recipe:
        """The seed recipe with this config's baseline and KL placement swapped in."""
        baseline = BASELINES.get(self.baseline)
        return replace(seed_grpo(), name="bandit", kl=parse_kl(self.kl), baseline=baseline)
