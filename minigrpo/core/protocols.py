"""Interfaces: what an object must provide to be a policy, an anchor, a reward or a reward component.

"What must my object provide?" has its answer here, one class per role, each listing exactly what
the algorithm calls (shapes P × G × T: prompts × group × tokens, V the vocabulary or the arms):

===================  ====================================================================  =============================
role                 members                                                               called by
===================  ====================================================================  =============================
``Decoder``          ``step(y) -> logp (P, G, V)``                                         ``sampling.sample_group``
``Sampler``          ``decoder(prompts, G, max_new_tokens)``, ``sampling_context()``       ``sampling.sample_group``
``NextTokenPolicy``  ``next_token_logp(prompts, prefix) -> (P, G, V)``                     ``sampling.PrefixDecoder``
``Anchor``           ``log_probs(prompts, completions) -> (P, G, T)``                      ``step.grpo_step`` (π_anchor)
``Policy``           ``Sampler`` + ``Anchor`` + ``accumulate_grad(…)`` + ``parameters()``  ``step.grpo_step`` (π_θ)
``Reward``           ``reward_fn(prompts, completions) -> r (P, G) | Scored``              ``step.grpo_step``
``RolloutReward``    a ``Reward`` called with ``rollout=`` too (a base class, see below)   ``scored.call_reward``
``Named``            ``name: str``                                                         ``scored.reward_name``
``TextReward``       ``f(prompt, completion) -> float | None | [float | None, …]``         ``compose.RewardSet``
``RewardComponent``  ``score(batch) -> (P, G) | StepRewards``                              ``compose.RewardSet``
===================  ====================================================================  =============================

The parts of a text-level reward, combined by ``rewards.compose.RewardSet``, are a ``TextReward``
(a plain ``f(prompt, completion)``) or a ``RewardComponent`` (``score(batch)`` over the whole
rollout, decoded). Optional task abilities are ``lm.tasks.TaskWithSteps`` and
``lm.tasks.TaskWithCarelessAnswers``.

Sampling has one path, for a bandit and for GPT-2 alike: ``sample_group`` always asks the policy for a
decoder and holds its ``sampling_context`` open. A policy that can only say "next-token log-probs
given this whole prefix" (``NextTokenPolicy``: every bandit policy, any small model) inherits
``sampling.PrefixDecoding``, which supplies both: a ``PrefixDecoder`` over ``next_token_logp`` and a
context that does nothing. A language model writes its own (``lm.policy.CausalLMPolicy``: a
key/value-cache decoder and one autocast region per rollout). So nothing is optional and nothing is
probed for: the two kinds differ in which implementation they inherit or write, not in which code
path they take. Likewise a neural policy inherits ``accumulate_grad`` from ``loss.AutogradGradient``.

A reward that reads the rollout (log-probs, mask) as well as the completion ids is the one real
choice between two kinds of reward, and a plain function already has the call signature of both,
so the kind cannot be told from the members an object has. ``RolloutReward`` is therefore an
abstract base class, declared by inheriting it, rather than a Protocol (``compose.RewardSet`` does).

The Protocols marked ``@runtime_checkable`` support ``isinstance``, which checks that the members
exist (not their signatures; ``tests/test_protocols.py`` checks those for every class in the package).
``require`` turns a failed check into an error that names what is missing.
"""
from __future__ import annotations

import abc
import contextlib
from typing import TYPE_CHECKING, Iterator, Protocol, runtime_checkable

from torch import Tensor

if TYPE_CHECKING:                    # for the annotations only: scored and sampling import this module
    from minigrpo.core.sampling import Rollout
    from minigrpo.core.scored import Scored, StepRewards


# --- policies -------------------------------------------------------------------------------------

@runtime_checkable
class Decoder(Protocol):
    """One sampling run's token loop state, made by ``Sampler.decoder`` for one batch of prompts."""

    def step(self, y: Tensor | None) -> Tensor:
        """Feed the tokens just drawn, y (P, G), or None at the start; return the next-token
        log-probs log π(· | x, y_≤t), (P, G, V)."""
        ...


@runtime_checkable
class Sampler(Protocol):
    """What ``sampling.sample_group`` needs of a policy: a decoder, and a context to hold open."""

    def decoder(self, prompts: Tensor, G: int, max_new_tokens: int) -> Decoder:
        """A fresh ``Decoder`` for ``prompts`` (P, ...), G completions each, at most ``max_new_tokens`` steps."""
        ...

    def sampling_context(self) -> contextlib.AbstractContextManager:
        """Held open around the whole token loop (one autocast region for a bf16 language model;
        ``contextlib.nullcontext()`` when there is nothing to hold)."""
        ...


@runtime_checkable
class NextTokenPolicy(Protocol):
    """A policy that gives next-token log-probs given a whole prefix (bandit policies, small models);
    inheriting ``sampling.PrefixDecoding`` makes it a ``Sampler``."""

    def next_token_logp(self, prompts: Tensor, prefix: Tensor) -> Tensor:
        """log π(· | x, prefix) for a prefix (P, G, t) of tokens already drawn: (P, G, V)."""
        ...


@runtime_checkable
class Anchor(Protocol):
    """What ``step.grpo_step`` needs of the anchor π_anchor: it scores the sampled tokens, nothing else."""

    def log_probs(self, prompts: Tensor, completions: Tensor) -> Tensor:
        """log π(y_t | x, y_<t) of every completion token (P, G, T), padding included (masked downstream).
        Carries a graph when gradients are on and the object has trainable parameters."""
        ...


@runtime_checkable
class Policy(Sampler, Anchor, Protocol):
    """What ``step.grpo_step`` needs of the policy π_θ: sample, score, and turn ψ into parameter gradients.

    =====================================================  ==================================================
    ``decoder(prompts, G, max_new_tokens)``                sampling (``Sampler``)
    ``sampling_context()``                                 sampling (``Sampler``)
    ``log_probs(prompts, completions)``                    logp (P, G, T) with a graph (``Anchor``)
    ``accumulate_grad(prompts, completions, logp, psi)``   ∂L/∂θ += Σ ψ·∂logp/∂θ
    ``parameters()``                                       the trainable tensors (for gradient clipping)
    =====================================================  ==================================================
    """

    def accumulate_grad(self, prompts: Tensor, completions: Tensor, logp: Tensor, psi: Tensor) -> None:
        """Add Σ_{p,g,t} ψ_{p,g,t}·∂logp_{p,g,t}/∂θ to every parameter's ``.grad``, where ψ = ∂L/∂logp
        (P, G, T) comes from the loss (``loss.py``) and ``logp`` is what ``log_probs`` just returned.
        Neural policies inherit ``loss.AutogradGradient`` (``logp.backward(psi)``); the tabular one
        writes the closed form."""
        ...

    def parameters(self) -> Iterator[Tensor]:
        """The trainable tensors (``nn.Module.parameters``)."""
        ...


# --- rewards --------------------------------------------------------------------------------------

class Reward(Protocol):
    """A reward: ``reward_fn(prompts, completions) -> r``, one number per completion.

    ``prompts`` (P, ...) as the policy saw them, ``completions`` (P, G, T) token ids. It returns a
    (P, G) tensor (or nested list, or a flat list of P·G in prompt-major order), or ``scored.Scored``
    for named parts, completions it cannot judge, and step rewards. Any plain function with this
    signature is a reward; ``bandit.arms.ArmRewards`` and ``rewards.compose.RewardSet`` are objects.
    """

    def __call__(self, prompts: Tensor, completions: Tensor) -> Tensor | list | Scored:
        ...


@runtime_checkable
class Named(Protocol):
    """An object that names itself in logs and error messages (reward objects and components do)."""

    name: str


class RolloutReward(abc.ABC):
    """Base class of a reward that reads the whole rollout, not only the completion ids.

    ``scored.call_reward`` calls it as ``reward_fn(prompts, completions, rollout=rollout)`` with the
    ``sampling.Rollout`` (log-probs, mask). A base class rather than a Protocol: a plain function
    already has this call signature, so only a declaration can tell the two kinds apart, and the
    check costs nothing in the bandit's per-step loop.
    """

    @abc.abstractmethod
    def __call__(self, prompts: Tensor, completions: Tensor,
                 rollout: Rollout | None = None) -> Tensor | list | Scored:
        ...


# --- parts of a reward, combined by rewards.compose.RewardSet --------------------------------------

class TextReward(Protocol):
    """A reward component as a plain function of the texts: ``f(prompt, completion)``, called once per completion.

    Returns a float; ``None`` when it cannot judge this completion (not applicable: left out of the
    baseline, not scored 0); or a list with one float or ``None`` per step of the completion (the
    text cut at ``RewardSet.step_separators``), which makes it a step reward.
    """

    def __call__(self, prompt: str, completion: str) -> float | None | list[float | None]:
        ...


@runtime_checkable
class RewardComponent(Protocol):
    """A reward component that scores the whole batch at once (reward models, LM judges, ``checks.py``).

    ``batch`` is a ``rewards.compose.Completions``: prompt and completion ids, masks, decoded texts,
    whether each completion ended, the rollout. ``RewardSet`` tells a ``RewardComponent`` from a
    ``TextReward`` by this one member (an object with ``score`` is scored as a batch even when it is
    also callable). The components of this package also carry a ``name`` (``Named``).
    """

    def score(self, batch) -> Tensor | list | StepRewards:
        """(P, G) values (a list may hold ``None`` where not applicable), or ``StepRewards``."""
        ...


# --- checking -------------------------------------------------------------------------------------

def protocol_members(protocol: type) -> list[str]:
    """The names a Protocol asks for, its bases' included: annotated attributes, then methods."""
    names: list[str] = []
    for cls in protocol.__mro__:
        if cls is Protocol or cls is object or not issubclass(cls, Protocol):
            continue
        for name in (*cls.__dict__.get("__annotations__", {}), *vars(cls)):
            if (not name.startswith("_") or name == "__call__") and name not in names:
                names.append(name)
    return names


def require(obj, protocol: type, who: str) -> None:
    """Raise ``TypeError`` naming the members ``obj`` lacks when it is not a ``protocol``
    (a ``@runtime_checkable`` Protocol of this module)."""
    if isinstance(obj, protocol):
        return
    have = set(dir(obj))
    missing = [m for m in protocol_members(protocol) if m not in have] or ["(a member set to None)"]
    purpose = protocol.__doc__.splitlines()[0].replace("``", "")
    raise TypeError(f"{who}: {type(obj).__name__} does not provide protocols.{protocol.__name__}; missing: "
                    f"{', '.join(missing)}. {protocol.__name__}: {purpose}")
