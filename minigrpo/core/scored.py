"""Rewards: the contract every reward meets, and the checks the trainer applies to it.

A reward is any callable ``reward_fn(prompts, completions) -> r`` with r of shape (P, G) — a bandit's
arm draw, or a tensor function of token ids (``protocols.Reward``). A reward made of named parts returns
``Scored(r, components, …)`` so every part is logged, may mark completions it cannot judge (None:
left out of the baseline, not scored as 0), and may attach per-step rewards (``StepRewards``).
Text-level rewards — plain ``f(prompt, completion)`` functions, programmatic checks, reward models,
LM judges, human labels — are combined by ``compose.RewardSet``.

``check_scored`` is applied to every reward the trainer receives, so a reward that returns the wrong
count, the wrong shape, or NaN/inf fails loudly and by name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import BuiltinFunctionType, FunctionType, MethodType

import torch
from einops import rearrange
from torch import Tensor

from minigrpo.core.protocols import Named, RolloutReward


@dataclass
class StepRewards:
    """Rewards for intermediate steps (process rewards), S steps per completion at most.

    ==============  ==========  ============================================================
    ``values``      (P, G, S)   r_{p,g,s}: the reward of step s of completion (p, g)
    ``ends``        (P, G, S)   the token index (inclusive) where step s ends; its reward
                                reaches every token up to there (see ``advantages.step_advantages``)
    ``present``     (P, G, S)   False where completion (p, g) has no step s (or it is not applicable)
    ==============  ==========  ============================================================
    """

    values: Tensor
    ends: Tensor
    present: Tensor

    @property
    def per_completion(self) -> Tensor:
        """The mean step reward of each completion (P, G) — what the metrics log."""
        from minigrpo.core.masks import masked_mean

        return masked_mean(self.values, self.present, dim=-1)

    def scaled(self, w: float) -> "StepRewards":
        return StepRewards(w * self.values, self.ends, self.present)

    @staticmethod
    def cat(parts: list["StepRewards"]) -> "StepRewards":
        """Steps of several components side by side (each keeps its own per-step baseline)."""
        return StepRewards(torch.cat([s.values for s in parts], -1), torch.cat([s.ends for s in parts], -1),
                           torch.cat([s.present for s in parts], -1))


@dataclass
class Scored:
    """A reward with its named parts.

    ==================  ==========  ======================================================
    ``r``               (P, G)      the total outcome reward that trains
    ``components``      {name: (P, G)}  each part, logged as ``reward/<name>``
    ``applicable``      {name: (P, G) bool}  where a part had a value (None = not applicable);
                                    parts missing here applied everywhere
    ``valid``           (P, G) bool or None   False: no part applied, so the completion is left
                                    out of the baseline and gets no outcome advantage
    ``steps``           StepRewards or None   per-step (process) rewards, turned into per-token
                                    advantages with a group baseline per step
    ==================  ==========  ======================================================
    """

    r: Tensor
    components: dict = field(default_factory=dict)
    applicable: dict = field(default_factory=dict)
    valid: Tensor | None = None
    steps: StepRewards | None = None

    def component_means(self) -> dict[str, float]:
        """Mean of every component over the completions it applied to (NaN when it applied to none)."""
        out = {}
        for k, v in self.components.items():
            m = self.applicable.get(k)
            out[k] = v.mean().item() if m is None else (v[m].mean().item() if m.any() else float("nan"))
        return out


def reward_name(reward_fn) -> str:
    """How messages name a reward: a string as is, a reward object's ``name`` (``protocols.Named``), a
    function's ``__name__``, else its class name; "reward" when there is none."""
    if reward_fn is None:
        return "reward"
    if isinstance(reward_fn, str):
        return reward_fn
    if isinstance(reward_fn, Named) and reward_fn.name:
        return reward_fn.name
    if isinstance(reward_fn, (FunctionType, BuiltinFunctionType, MethodType)):
        return reward_fn.__name__
    return type(reward_fn).__name__


def call_reward(reward_fn, prompts: Tensor, rollout) -> object:
    """Call a reward: ``reward_fn(prompts, completions)``, or with ``rollout=`` too when the reward
    reads the rollout (a ``protocols.RolloutReward``, as ``compose.RewardSet`` is)."""
    if isinstance(reward_fn, RolloutReward):
        return reward_fn(prompts, rollout.completions, rollout=rollout)
    return reward_fn(prompts, rollout.completions)


def check_scored(out, shape: tuple, reward_fn=None, T: int | None = None) -> Scored:
    """A checked ``Scored`` from whatever a reward function returned (a tensor, a list, or ``Scored``).
    Wrong shapes, NaN/inf and malformed steps raise ``ValueError`` naming the reward."""
    if not isinstance(out, Scored):
        return Scored(check_rewards(out, shape, reward_fn))
    name = reward_name(reward_fn)
    comps = {k: check_rewards(v, shape, f"{name}/{k}") for k, v in out.components.items()}
    applicable = {k: _check_mask(v, shape, f"{name}/{k} applicable") for k, v in out.applicable.items()}
    valid = None if out.valid is None else _check_mask(out.valid, shape, f"{name} valid")
    r = check_rewards(torch.where(valid, torch.as_tensor(out.r), 0.0) if valid is not None else out.r,
                      shape, reward_fn)
    steps = out.steps
    if steps is not None:
        S = steps.values.shape[-1] if steps.values.dim() == 3 else None
        for part, v in (("values", steps.values), ("ends", steps.ends), ("present", steps.present)):
            if v.dim() != 3 or tuple(v.shape[:2]) != shape or v.shape[-1] != S:
                raise ValueError(f"reward {name!r}: step {part} have shape {tuple(v.shape)}; expected (P, G, S) "
                                 f"with (P, G) = {shape} and one S for values, ends and present")
        present = steps.present.bool()
        if not torch.isfinite(steps.values[present]).all():
            raise ValueError(f"reward {name!r} returned a non-finite step reward; rewards must be finite numbers")
        if T is not None and present.any() and not ((steps.ends[present] >= 0) & (steps.ends[present] < T)).all():
            raise ValueError(f"reward {name!r}: step ends must be token indices in [0, {T}), got "
                             f"{steps.ends[present].tolist()}")
        steps = StepRewards(torch.where(present, steps.values, 0.0), steps.ends.long(), present)
    return Scored(r, comps, applicable, valid, steps)


def _check_mask(m, shape, what) -> Tensor:
    m = torch.as_tensor(m)
    if m.shape != shape or m.dtype != torch.bool:
        raise ValueError(f"{what} must be a bool tensor of shape {shape}, got {m.dtype} {tuple(m.shape)}")
    return m


def check_rewards(r, shape: tuple, reward_fn=None) -> Tensor:
    """Return r as a float tensor of ``shape`` (P, G), or raise naming the reward and the problem."""
    if isinstance(r, (list, tuple)) and any(x is None for x in _flat(r)):
        raise ValueError(f"reward {reward_name(reward_fn)!r} returned None; a reward function that can decline to "
                         f"score a completion returns Scored(valid=...), or is a component of compose.RewardSet, "
                         f"which leaves None out of the baseline")
    if not (isinstance(r, Tensor) and r.is_floating_point()):
        try:
            r = torch.as_tensor(r, dtype=torch.get_default_dtype())
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"reward {reward_name(reward_fn)!r} returned {type(r).__name__}, which is not numbers: "
                             f"{e}") from None
    if r.shape != shape:
        if r.numel() == shape[0] * shape[1] and r.dim() == 1:
            r = rearrange(r, "(P G) -> P G", P=shape[0])   # a flat list of P·G rewards in prompt-major order
        else:
            raise ValueError(f"reward {reward_name(reward_fn)!r} returned shape {tuple(r.shape)}; expected (P, G) = "
                             f"{shape} (one reward per completion)")
    # a finite sum means finite rewards (one op, where isfinite().all() takes four); a sum that overflowed is
    # checked element by element
    if not math.isfinite(r.sum().item()) and not torch.isfinite(r).all():
        bad = (~torch.isfinite(r)).nonzero()[0].tolist()
        raise ValueError(f"reward {reward_name(reward_fn)!r} returned a non-finite value {r[tuple(bad)].item()} at "
                         f"(prompt, completion) = {tuple(bad)}; rewards must be finite numbers")
    return r


def _flat(x):
    for v in x:
        if isinstance(v, (list, tuple)):
            yield from _flat(v)
        else:
            yield v
