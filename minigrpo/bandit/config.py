"""``BanditConfig``: every setting of a bandit run, declared once (the command line is derived from it)."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Iterable, Sequence

from minigrpo.bandit.arms import ArmRewards
from minigrpo.core.recipe import BASELINES, KLS, METHODS, PRESETS, Recipe, compose, method_and_recipe, replace
from minigrpo.core.validate import SEED, check_fields, integer, number, one_of, optional, refuse, setting

BASELINE_CHOICES = tuple(BASELINES) + ("value",)
# Bounds far above any lesson, so a typo (a few extra zeros) is refused at once instead of running for hours or
# ending in an out-of-memory error: the run records K probabilities every record_every steps.
MAX_ARMS = 65_536
MAX_RECORDED = 1 << 28            # recorded probabilities, (steps / record_every) × K: 1 GiB of float32



def skewed_anchor(K: int, skew: float = 1.0) -> list[float]:
    """An "SFT-like" prior that prefers the first arms: π_anchor(k) ∝ exp(−skew·k/(K−1))."""
    w = [math.exp(-skew * k / max(K - 1, 1)) for k in range(K)]
    return [x / sum(w) for x in w]


def _fail(field_: str, value, allowed: str):
    refuse("BanditConfig", field_, value, allowed)


def _numbers(field_: str, values) -> list[float]:
    """A sequence of numbers as floats, or a ValueError naming the field (a string is not a sequence of
    numbers here: "0.5" would otherwise become [0.0, 0.5])."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        _fail(field_, values, "must be a sequence of numbers, e.g. [0.2, 0.5, 0.9]")
    out = []
    for v in values:
        if not (isinstance(v, numbers.Real) and not isinstance(v, bool)):
            _fail(field_, values, "must be a sequence of numbers, e.g. [0.2, 0.5, 0.9]")
        out.append(float(v))
    return out


@dataclass
class BanditConfig:
    """One bandit run. Every field has a default and is checked on construction.

    ``recipe`` names a preset of ``core/recipe.py``; ``kl`` and ``baseline`` left None are filled in
    from it on construction, so the config says exactly what runs. The preset's surrogate and
    aggregation come with it (on a one-token bandit with one update per rollout neither changes
    the gradient: the ratio is 1 and every completion has one token).
    """

    means: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9)
    """Arm means μ_k; the number of arms K is their count (≥ 2)."""
    anchor: Sequence[float] | None = None
    """Anchor probabilities π_anchor(k) (K positive numbers summing to 1); None = ``skewed_anchor(K)``."""
    beta: float = setting(0.1, number(ge=0))
    """KL coefficient β ≥ 0 (β = 0 with a KL placement means no anchor pull)."""
    method: str | None = setting(None, optional(one_of(METHODS)))
    """grpo, ppo, dpo, ipo or offline_grpo; None: ppo when recipe is 'ppo', else grpo. DPO's β and
    IPO's τ are ``beta``; the recipe's pieces serve grpo, ppo and offline_grpo."""
    recipe: str | None = setting(None, optional(one_of(PRESETS)))
    """The recipe: seed, deepseek, dr_grpo, rloo, dapo_like or ppo (``core/recipe.py``); None: ppo for
    method ppo, else seed. ``kl`` and ``baseline`` left None are the preset's own."""
    baseline: str | None = setting(None, optional(one_of(BASELINE_CHOICES)))
    """One of none, batch_mean, group_mean, group_mean_std, leave_one_out, value; None: the preset's
    (seed: group_mean)."""
    kl: str | None = setting(None, optional(one_of(KLS)))
    """KL placement and estimator: 'reward:k1|k2|k3', 'loss:k1|k2|k3' or 'none'; None: the preset's
    (seed: reward:k1)."""
    steps: int = setting(4000, integer(1, 10_000_000))
    """GRPO steps."""
    group_size: int = setting(128, integer(1, 1 << 20))
    """G, completions (arm pulls) per prompt per step. A bandit step costs about the same for G = 16
    or 128 (per-op overhead dominates), and a large group makes the sampled gradient precise enough
    to land within KL 1e-3 of π* even when two arms are nearly tied."""
    lr: float = setting(0.03, number(gt=0))
    """Adam learning rate on the logits; decayed linearly to lr·final_lr_frac over the run."""
    final_lr_frac: float = setting(0.01, number(gt=0, le=1))
    """Learning rate at the last step as a fraction of ``lr`` (1.0 = constant)."""
    noise: str = setting("bernoulli", one_of(ArmRewards.NOISES))
    """Arm reward noise: 'bernoulli' (means in [0, 1]), 'gaussian' (σ = 1) or 'none'."""
    seed: int = setting(0, SEED)
    """Seeds sampling and rewards; the same seed gives the same run."""
    record_every: int = setting(1, integer(1))
    """Record the policy every this many steps (history length = steps / record_every)."""
    updates: int | None = setting(None, optional(integer(1)))
    """Optimizer updates per rollout (epochs over it, where the PPO clip acts); None: 4 for ppo, else 1."""
    critic_lr: float = setting(0.1, number(gt=0))
    """ppo: Adam learning rate of the critic (one value per run, V(x))."""
    pairs: int = setting(100_000, integer(1))
    """dpo/ipo: preference pairs (a, b) drawn from the anchor, labelled a ≻ b with probability
    σ(μ_a − μ_b) (Bradley–Terry on the arm means); pairs of one arm with itself are dropped."""
    logged: int = setting(100_000, integer(1))
    """offline_grpo: pulls logged once from the behaviour policy, with their rewards; each step draws
    a group of G of them."""
    behaviour: Sequence[float] | None = None
    """offline_grpo: the logging policy's probabilities (K numbers ≥ 0 summing to 1; a 0 is an arm
    never logged); None: the anchor."""

    def __post_init__(self):
        self.means = _numbers("means", self.means)
        K = len(self.means)
        if K <= 1 or K > MAX_ARMS:
            _fail("arms", K, f"a bandit needs 2 to {MAX_ARMS:,} arms (give that many comma-separated means)")
        if not all(math.isfinite(m) for m in self.means):
            _fail("means", self.means, "every arm mean must be a finite number")
        if self.anchor is None:
            self.anchor = skewed_anchor(K)
        self.anchor = _numbers("anchor", self.anchor)
        check_fields(self)
        if self.noise == "bernoulli" and not all(0 <= m <= 1 for m in self.means):
            _fail("means", self.means, "Bernoulli arm means must lie in [0, 1] (or use noise='gaussian')")
        if len(self.anchor) != K:
            _fail("anchor", self.anchor, f"must be {K} probabilities, one per arm (got {len(self.anchor)})")
        if not all(math.isfinite(a) and a > 0 for a in self.anchor):
            _fail("anchor", self.anchor, "probabilities must be finite and > 0 (a zero-probability arm makes KL infinite)")
        if abs(sum(self.anchor) - 1) > 1e-6:
            _fail("anchor", self.anchor, f"probabilities must sum to 1 (they sum to {sum(self.anchor):.6g})")
        self.method, self.recipe = method_and_recipe(self.method, self.recipe, "BanditConfig")
        if self.behaviour is not None:
            self.behaviour = _numbers("behaviour", self.behaviour)
            if len(self.behaviour) != K or not all(math.isfinite(b) and b >= 0 for b in self.behaviour) \
                    or abs(sum(self.behaviour) - 1) > 1e-6:
                _fail("behaviour", self.behaviour, f"must be {K} probabilities ≥ 0 summing to 1, one per arm")
            if self.method != "offline_grpo":
                _fail("behaviour", self.behaviour, "is the logging policy of method offline_grpo only")
        if (self.steps // self.record_every + 1) * K > MAX_RECORDED:
            _fail("record_every", self.record_every, f"steps / record_every × arms = {self.steps // self.record_every:,} "
                                                     f"× {K:,} probabilities to record is over {MAX_RECORDED:,}; "
                                                     "raise record_every")
        self._fill_method()
        # the recipe's pieces: the preset's own where None
        own = self.build_recipe()
        self.kl = str(own.kl)
        self.baseline = self.baseline or own.baseline.name
        need = BASELINES[self.baseline].min_group if self.baseline in BASELINES else 1
        if self.method in ("dpo", "ipo"):
            need = 1                      # no groups: pairs
        if self.group_size < need:
            _fail("group_size", self.group_size, f"must be ≥ {need} with baseline={self.baseline!r} "
                                                 "(a group baseline needs G ≥ 2)")
        if self.steps % self.record_every:
            # otherwise the last steps are never recorded and ``policy`` would not be the final policy
            _fail("record_every", self.record_every, f"must divide steps={self.steps}, so the final policy is recorded")

    def _fill_method(self) -> None:
        """The rules of one method: DPO/IPO need β > 0; PPO's defaults (4 updates) and its baseline."""
        if self.method in ("dpo", "ipo") and not self.beta > 0:
            _fail("beta", self.beta, f"method {self.method} needs beta > 0 (DPO's β, IPO's τ)")
        if self.updates is None:
            self.updates = 4 if self.method == "ppo" else 1
        if self.method == "ppo" and self.baseline not in (None, "gae"):
            _fail("baseline", self.baseline, "method ppo's baseline is its critic ('gae')")

    @property
    def K(self) -> int:
        return len(self.means)

    def build_recipe(self) -> Recipe:
        """The preset with this config's KL placement and baseline (``core/recipe.compose``). With
        baseline 'value' the recipe's baseline is None: the runner supplies a learned value."""
        if self.baseline == "value":
            return replace(compose(self.recipe, kl=self.kl), name=f"{self.recipe}, baseline=value", baseline=None)
        return compose(self.recipe, kl=self.kl, baseline=self.baseline)
