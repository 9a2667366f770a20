"""Recipes: a GRPO variant — or PPO — is a choice of four pieces, composed here and nowhere else.

==============  =========================================================  =====================
piece           what it decides                                             module
==============  =========================================================  =====================
``kl``          where the anchor KL goes, and which estimator               ``kl.py``
``baseline``    how total rewards become advantages (a critic for PPO)      ``advantages.py``, ``critic.py``
``surrogate``   the per-token policy-gradient loss (clipped or not)         ``loss.py``
``aggregation`` how per-token losses are weighted into one number           ``loss.py``
==============  =========================================================  =====================

Presets are recipes with the pieces their papers use. Change one piece with
``dataclasses.replace(preset, baseline=LEAVE_ONE_OUT)``, or by name with
``compose("deepseek", kl="reward:k1")`` — the way a config file or a flag says it
(``recipe: deepseek`` then ``kl: reward:k1``): every piece has a name in a registry below.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from minigrpo.core import advantages as adv
from minigrpo.core.critic import GAE, Critic
from minigrpo.core.kl import ESTIMATORS, K1, K3, KLInLoss, KLInReward, KLInTokenReward, NoKL
from minigrpo.core.validate import refuse
from minigrpo.core.loss import (PLAIN, Surrogate, clipped, constant_normaliser, group_token_mean, seq_mean_token_mean,
                               token_mean)


@dataclass(frozen=True)
class Recipe:
    """The pieces of one GRPO variant (see the module docstring)."""

    name: str
    kl: KLInReward | KLInTokenReward | KLInLoss | NoKL
    baseline: Callable     # a Baseline; GAE (declared) or a Critic (bound to a value net) for PPO
    surrogate: Surrogate
    aggregation: Callable

    def describe(self) -> str:
        agg = aggregation_name(self.aggregation)
        return (f"{self.name}: kl={self.kl}, baseline={self.baseline.name}, "
                f"surrogate={self.surrogate}, aggregation={agg}")


def seed_grpo() -> Recipe:
    """The guided-reward GRPO this toolkit is built on: R_total = r − β·k1 (held constant), group-mean
    baseline, a plain policy-gradient step (one update per rollout, so a PPO clip would never act).
    Its fixed point is the closed-form optimum π* ∝ π_anchor·exp(r/β)."""
    return Recipe("seed", KLInReward(K1), adv.GROUP_MEAN, PLAIN, seq_mean_token_mean)


def deepseek_grpo() -> Recipe:
    """DeepSeekMath GRPO (Shao et al. 2024, eq. 3): group mean/std advantages, PPO clip 0.2, k3 KL
    in the loss, per-sequence mean. Its fixed point is not π* (see tests/test_fixed_points.py)."""
    return Recipe("deepseek", KLInLoss(K3), adv.GROUP_MEAN_STD, clipped(0.2), seq_mean_token_mean)


def dr_grpo(max_tokens: int | None = None) -> Recipe:
    """Dr. GRPO (Liu et al. 2025): no std scaling, no length normalisation (constant normaliser);
    k3 KL in the loss as in the GRPO it corrects."""
    return Recipe("dr_grpo", KLInLoss(K3), adv.GROUP_MEAN, clipped(0.2), constant_normaliser(max_tokens))


def rloo() -> Recipe:
    """RLOO (Ahmadian et al. 2024, "Back to Basics"): leave-one-out baseline, KL in the reward
    (k1), REINFORCE without clipping."""
    return Recipe("rloo", KLInReward(K1), adv.LEAVE_ONE_OUT, PLAIN, seq_mean_token_mean)


def dapo_like() -> Recipe:
    """Token-mean aggregation with clip-higher (DAPO, Yu et al. 2025), here with the anchor KL kept."""
    return Recipe("dapo_like", KLInLoss(K3), adv.GROUP_MEAN_STD, clipped(0.2, 0.28), token_mean)


def ppo() -> Recipe:
    """PPO as RLHF uses it (Ziegler et al. 2019; Ouyang et al. 2022): the k1 KL to the anchor in the
    reward token by token, the score at the last token, per-token advantages from a learned value by
    GAE(γ = 1, λ = 0.95), PPO clip 0.2, the token mean over the batch. The baseline is declared here
    (``GAE``) and bound to a value network per run (``critic.Critic``); run it with several minibatch
    epochs per rollout (``learn(updates=…, minibatches=…)``). With a converged critic its fixed point
    is π* ∝ π_anchor·exp(r/β), as the seed recipe's (tests/test_methods_bandit.py)."""
    return Recipe("ppo", KLInTokenReward(K1), GAE(), clipped(0.2), token_mean)


PRESETS = {"seed": seed_grpo, "deepseek": deepseek_grpo, "dr_grpo": dr_grpo, "rloo": rloo, "dapo_like": dapo_like,
           "ppo": ppo}


METHODS = ("grpo", "ppo", "dpo", "ipo", "offline_grpo")
"""What trains a policy: online GRPO (any recipe but ppo), PPO (the recipe ppo: a critic), DPO or IPO on
preference pairs (``preference.py``; no recipe), offline GRPO on logged completions (``offline.py``)."""


def method_and_recipe(method: str | None, recipe: str | None, owner: str) -> tuple[str, str]:
    """A config's method and recipe, each filled in from the other where None: PPO is the recipe
    'ppo' and only it (its baseline is a critic); every other method uses the recipe 'seed' unless
    told otherwise. A mismatch is refused naming ``owner``'s setting."""
    method = method or ("ppo" if recipe == "ppo" else "grpo")
    recipe = recipe or ("ppo" if method == "ppo" else "seed")
    if (method == "ppo") != (recipe == "ppo"):
        refuse(owner, "recipe", recipe, f"method={method!r} goes with recipe " +
               ("'ppo' (a critic and GAE)" if method == "ppo" else "other than 'ppo' (recipe ppo is method ppo)"))
    return method, recipe


def preset(name: str) -> Recipe:
    if name not in PRESETS:
        raise ValueError(f"recipe={name!r} is not a preset; allowed: {sorted(PRESETS)}")
    return PRESETS[name]()


# --- every piece by name: what a config file or a flag can say -------------------------------------

KLS = {str(placement): placement for placement in (
    NoKL(), *(KLInReward(e) for e in ESTIMATORS.values()), *(KLInTokenReward(e) for e in ESTIMATORS.values()),
    *(KLInLoss(e) for e in ESTIMATORS.values()))}
"""KL placements by name: 'none', 'reward:k1' … 'reward:k3', 'token:k1' … 'token:k3', 'loss:k1' … 'loss:k3'."""

BASELINES = {**adv.BASELINES, "gae": GAE()}
"""Baselines by name: the stateless ones of ``advantages.py`` and 'gae' (a critic, bound per run)."""

AGGREGATIONS = {"seq_mean_token_mean": seq_mean_token_mean, "token_mean": token_mean,
                "group_token_mean": group_token_mean, "constant_normaliser": constant_normaliser()}
"""Aggregations by name (``constant_normaliser`` divides by the rollout's T, as ``dr_grpo()`` does)."""

PIECES = ("kl", "baseline", "clip_eps", "clip_eps_high", "aggregation")
"""The pieces a config names: the KL placement, the baseline, the clip range [1 − clip_eps,
1 + clip_eps_high] (both None: the plain surrogate) and the aggregation."""


def aggregation_name(aggregation: Callable) -> str:
    """The registry name of an aggregation (``constant_normaliser(T)`` is "constant_normaliser")."""
    return getattr(aggregation, "__name__", str(aggregation)).removesuffix("_weights")


def pieces(recipe: Recipe) -> dict:
    """A recipe's pieces by name, as a config holds them (see ``PIECES``)."""
    return {"kl": str(recipe.kl), "baseline": recipe.baseline.name, "clip_eps": recipe.surrogate.eps_low,
            "clip_eps_high": recipe.surrogate.eps_high, "aggregation": aggregation_name(recipe.aggregation)}


def compose(name: str, **chosen) -> Recipe:
    """The preset ``name`` with pieces chosen by name; a piece given as None stays the preset's own.

    ``clip_eps`` alone clips symmetrically (``clip_eps_high`` follows it). The recipe is named after
    the preset when every piece is the preset's, else after the preset and what changed
    ("deepseek, kl=reward:k1"): a preset's name never labels other pieces.
    """
    unknown = sorted(set(chosen) - set(PIECES))
    if unknown:
        raise ValueError(f"compose: unknown piece(s) {unknown}; the pieces are {list(PIECES)}")
    own = pieces(preset(name))
    given = {k: v for k, v in chosen.items() if v is not None}
    if "clip_eps" in given and "clip_eps_high" not in given:
        given["clip_eps_high"] = given["clip_eps"]
    p = {**own, **given}
    changed = ", ".join(f"{k}={v}" for k, v in p.items() if v != own[k])
    if (p["kl"].startswith("token:")) != (p["baseline"] == "gae"):
        raise ValueError(f"compose: kl={p['kl']!r} with baseline={p['baseline']!r}: per-token KL rewards ('token:…') "
                         "go with the per-token baseline 'gae' (a critic), and only with it")
    return Recipe(f"{name}, {changed}" if changed else name, KLS[p["kl"]], BASELINES[p["baseline"]],
                  Surrogate(p["clip_eps"], p["clip_eps_high"]), AGGREGATIONS[p["aggregation"]])


__all__ = ["Recipe", "PRESETS", "preset", "replace", "seed_grpo", "deepseek_grpo", "dr_grpo", "rloo", "dapo_like", "ppo",
           "NoKL", "BASELINES", "GAE", "Critic",
           "KLS", "AGGREGATIONS", "PIECES", "aggregation_name", "pieces", "compose", "METHODS", "method_and_recipe"]
