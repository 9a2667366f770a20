"""Composing guided rewards: named components, weighted and combined into one reward the step trains on.

A component is either

* a **plain Python function** ``f(prompt: str, completion: str)`` returning a float, ``None`` (not
  applicable: this component cannot judge this completion), or a list of floats (one per step of the
  completion, the steps cut at ``step_separators``) — enough to define a reward: a ``protocols.TextReward``; or
* an object with ``score(batch: Completions)`` returning a (P, G) tensor or list (``None`` entries
  allowed), or ``StepRewards`` — for rewards that read token ids, masks or the rollout, or that
  batch their work (reward models, LM judges, programmatic checks in ``checks.py``): a
  ``protocols.RewardComponent``.

An object with ``score`` is scored as a batch even when it is also callable.

``RewardSet`` decodes the rollout once into a ``Completions`` view, calls every component, checks
what each returned (by name), and combines the outcome components:

=================  ============================================================================
``combine="sum"``        r = Σ_k w_k·c_k
``combine="normalised"``  r = Σ_k w_k·(c_k − mean_g c_k)/(std_g c_k + ε), per group, so a component
                          with a large scale cannot drown the others (each speaks in group std units)
=================  ============================================================================

Not applicable is not zero: where component k returned ``None`` for a completion, that completion
takes the group's mean of c_k (over the completions k did judge), so k neither raises nor lowers it
and it does not move k's baseline. A completion that no outcome component judged is marked invalid:
the step leaves it out of the baseline and gives it no outcome advantage. Step components are
scaled by their weight and kept as steps (``advantages.step_advantages`` turns them into per-token
advantages with a group baseline per step).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import torch
from torch import Tensor

from minigrpo.core.protocols import RewardComponent, RolloutReward
from minigrpo.core.scored import Scored, StepRewards
from minigrpo.core.validate import is_real
from minigrpo.rewards.functions import RewardFunction


# --- the text view a reward reads ------------------------------------------------------------------

@dataclass
class Completions:
    """One rollout as reward components see it (decoded once, shared by all of them).

    ==================  ==============  ==================================================
    ``prompt_ids``      (P, L)          left-padded prompt ids
    ``ids``             (P, G, T)       completion ids (padding after EOS)
    ``mask``            (P, G, T)       True on generated tokens, EOS included
    ``prompts``         [P] str         prompt texts
    ``texts``           [P][G] str      completion texts, without EOS and padding
    ``ended``           (P, G) bool     True when the completion stopped with EOS
    ``rollout``         Rollout / None  the sampled rollout itself (log-probs and all)
    ==================  ==============  ==================================================
    """

    prompt_ids: Tensor
    ids: Tensor
    mask: Tensor
    prompts: list
    texts: list
    ended: Tensor
    tokenizer: object
    rollout: object = None
    rows: list | None = None         # [P] the data rows (lm/data.Row) the prompts came from, when known
    source: str | None = None        # where those rows came from (a file), for messages
    _token_text: dict = field(default_factory=dict, repr=False)

    @classmethod
    def decode(cls, tokenizer, prompt_ids: Tensor, ids: Tensor, rollout=None, rows=None,
               source: str | None = None) -> "Completions":
        from minigrpo.core.sampling import completion_mask
        from minigrpo.lm.tokens import decode_completions, decode_prompts

        eos = tokenizer.eos_token_id
        mask = completion_mask(ids, eos)                     # up to and including the first EOS
        return cls(prompt_ids, ids, mask, decode_prompts(tokenizer, prompt_ids),
                   decode_completions(tokenizer, ids, mask, prompts=prompt_ids), (ids == eos).any(-1), tokenizer,
                   rollout, rows, source)

    def row_prompts(self) -> list:
        """The prompts as the data wrote them (a string, or chat messages); the decoded texts without rows."""
        return self.prompts if self.rows is None else [r.prompt for r in self.rows]

    def row_columns(self, p: int) -> dict:
        """The other columns of prompt p's row ({} without rows): what reward functions receive by name."""
        return {} if self.rows is None else self.rows[p].columns

    def where(self, p: int, g: int | None) -> str:
        """Where a completion came from, for messages: its data row and texts, or its (p, g) position."""
        row = None if self.rows is None else self.rows[p].index
        prompt = self.prompts[p] if len(self.prompts[p]) <= 40 else self.prompts[p][:39] + "…"
        place = f"on row {row} of data {self.source!r}" if row is not None else f"on prompt {p} of the batch"
        text = "" if g is None else f", completion {g}: {self.texts[p][g][:40]!r}"
        return f"({place}: prompt {prompt!r}{text})"

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.ids.shape)

    def lengths(self) -> Tensor:
        """Completion tokens, the EOS not counted (P, G)."""
        eos = self.tokenizer.eos_token_id
        return (self.mask & (self.ids != eos)).sum(-1)

    def token_text(self, token_id: int) -> str:
        if token_id not in self._token_text:
            self._token_text[token_id] = self.tokenizer.decode([token_id])
        return self._token_text[token_id]

    def steps(self, p: int, g: int, separators: str = ",\n") -> list[tuple[int, str]]:
        """The steps of completion (p, g) as [(end token index, step text)]: the text split at the
        separators (like ``str.split``), each step ending at the token that holds its separator, the
        last at the EOS (or the last token). ``"12,9,17⏎"`` → [(2, "12"), (4, "9"), (7, "17")]."""
        eos = self.tokenizer.eos_token_id
        kept = [(t, tok) for t, (tok, k) in enumerate(zip(self.ids[p, g].tolist(), self.mask[p, g].tolist())) if k]
        out, text = [], ""
        for t, tok in kept:
            for c in ("" if tok == eos else self.token_text(tok)):
                if c in separators:
                    out.append((t, text))
                    text = ""
                else:
                    text += c
        out.append((kept[-1][0] if kept else 0, text))
        return out


# --- combining components: pure functions ---------------------------------------------------------

def fill_not_applicable(c: Tensor, applicable: Tensor) -> Tensor:
    """c (P,G) with each not-applicable entry replaced by the mean of its group's applicable ones
    (0 where none in the group applies): the completion is neither pushed nor pulled by c, and
    c's group baseline is the mean of the completions it did judge."""
    n = applicable.sum(1, keepdim=True)
    mean = torch.where(applicable, c, 0.0).sum(1, keepdim=True) / n.clamp_min(1)
    return torch.where(applicable, c, mean.expand_as(c))


def weighted_sum(components: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """r = Σ_k w_k·c_k   (P, G)."""
    return sum(weights[k] * c for k, c in components.items())


def group_normalise(c: Tensor, eps: float = 1e-6) -> Tensor:
    """ĉ_{p,g} = (c_{p,g} − mean_j c_{p,j}) / (std_j c_{p,j} + ε), a constant group → 0 exactly."""
    centred = c - c.mean(1, keepdim=True)
    constant = (c == c[:, :1]).all(1, keepdim=True)
    return torch.where(constant, 0.0, centred / (c.std(1, keepdim=True, unbiased=False) + eps))


def normalised_sum(components: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """r = Σ_k w_k·ĉ_k with ĉ the per-group normalised component (see ``group_normalise``): each
    component counts in units of its own spread within the group (as in multi-objective GRPO)."""
    return sum(weights[k] * group_normalise(c) for k, c in components.items())


COMBINE = {"sum": weighted_sum, "normalised": normalised_sum}


# --- the reward set ---------------------------------------------------------------------------------

class RewardSet(RolloutReward):
    """Named reward components → one reward for ``grpo_step`` (see the module docstring).

    ``components`` maps a name to a component (a ``TextReward`` or a ``RewardComponent``) or to
    ``(component, weight)`` (weight 1 by default). ``combine`` is ``"sum"`` or ``"normalised"``.
    ``step_separators`` cut a completion into steps for plain functions that return a list. It reads
    the rollout (a ``protocols.RolloutReward``): components see it as ``batch.rollout``.
    """

    def __init__(self, tokenizer, components: dict, combine: str = "sum", step_separators: str = ",\n",
                 name: str = "reward_set"):
        from minigrpo.lm.tokens import check_tokenizer

        check_tokenizer(tokenizer)
        if not isinstance(components, dict) or not components:
            raise ValueError(f"RewardSet: components={components!r}; give a non-empty mapping name → component "
                             "or name → (component, weight)")
        if combine not in COMBINE:
            raise ValueError(f"RewardSet: combine={combine!r} is not allowed; choose one of {sorted(COMBINE)}")
        self.tokenizer, self.combine, self.step_separators, self.name = tokenizer, combine, step_separators, name
        self.components, self.weights = {}, {}
        for k, spec in components.items():
            fn, w = spec if isinstance(spec, tuple) else (spec, 1.0)
            if not (callable(fn) or isinstance(fn, RewardComponent)):
                raise ValueError(f"RewardSet: component {k!r} is {fn!r}; give a function f(prompt, completion), "
                                 "f(prompts, completions) or an object with score(batch)")
            if not is_real(w):
                raise ValueError(f"RewardSet: weight of {k!r} is {w!r}; weights must be finite numbers")
            if not isinstance(fn, RewardComponent):          # a plain function: called in its own signature
                fn = RewardFunction(fn, k)
            self.components[k], self.weights[k] = fn, float(w)

    def __call__(self, prompts: Tensor, completions: Tensor, rollout=None) -> Scored:
        return self.score(Completions.decode(self.tokenizer, prompts, completions, rollout))

    def bind(self, rows: list, source: str | None = None) -> "RolloutReward":
        """This reward for one batch of data rows: components see each prompt's row (its columns)."""
        return _BoundRewardSet(self, rows, source)

    def check_columns(self, columns, source: str) -> None:
        """Refuse, before the run, a reward function that asks for a column the data lacks."""
        for fn in self.components.values():
            if isinstance(fn, RewardFunction):
                fn.check_columns(columns, source)

    def score(self, batch: Completions) -> Scored:
        P, G, T = batch.shape
        values, applicable, steps, outcome = {}, {}, [], []
        for k, fn in self.components.items():
            out = fn.score(batch)
            if isinstance(fn, RewardFunction) and not fn.batched:
                out = self._maybe_steps(out, batch, k)
            if isinstance(out, StepRewards):
                steps.append(out.scaled(self.weights[k]))
                values[k], applicable[k] = out.per_completion, out.present.any(-1)
                continue
            values[k], applicable[k] = self._outcome(out, (P, G), k)
            outcome.append(k)
        filled = {k: fill_not_applicable(values[k], applicable[k]) for k in outcome}
        r = COMBINE[self.combine](filled, self.weights) if filled else torch.zeros(P, G)
        judges = [k for k in outcome if self.weights[k] != 0] or outcome     # weight-0 parts are only logged
        valid = torch.stack([applicable[k] for k in judges]).any(0) if judges else None
        if valid is not None and bool(valid.all()):
            valid = None
        return Scored(torch.as_tensor(r, dtype=torch.get_default_dtype()),
                      {k: torch.where(applicable[k], values[k], 0.0) for k in values},
                      {k: m for k, m in applicable.items() if not bool(m.all())}, valid,
                      StepRewards.cat(steps) if steps else None)

    # --- helpers ------------------------------------------------------------------------------
    def _outcome(self, out, shape, k) -> tuple[Tensor, Tensor]:
        """(values, applicable) of an outcome component's output, checked by name."""
        name = f"{self.name}/{k}"
        if isinstance(out, Tensor):
            if out.is_complex() or out.dtype not in _REAL_DTYPES and not out.is_floating_point():
                raise ValueError(f"reward component {name!r} returned a tensor of {out.dtype}; return real numbers")
            vals = out.to(torch.get_default_dtype())
            ok = torch.ones(vals.shape, dtype=torch.bool)
        else:
            flat = list(_rows(out))
            ok = torch.tensor([[x is not None for x in row] for row in flat], dtype=torch.bool) if flat else None
            for p, row in enumerate(flat):
                for g, x in enumerate(row):
                    if x is not None and not _is_number(x):
                        raise ValueError(f"reward component {name!r} returned {x!r} ({type(x).__name__}) for "
                                         f"(prompt, completion) = ({p}, {g}); return numbers (a float, int or bool), "
                                         "or None when the component does not apply — text such as '1.0' is not "
                                         "read as a number")
            vals = torch.tensor([[0.0 if x is None else float(x) for x in row] for row in flat])
        if vals.dim() == 1 and vals.numel() == shape[0] * shape[1]:
            vals, ok = vals.view(shape), ok.view(shape)
        if tuple(vals.shape) != shape:
            raise ValueError(f"reward component {name!r} returned shape {tuple(vals.shape)}; expected (P, G) = "
                             f"{shape} (one value per completion)")
        bad = ok & ~torch.isfinite(vals)
        if bad.any():
            p, g = bad.nonzero()[0].tolist()
            raise ValueError(f"reward component {name!r} returned a non-finite value {vals[p, g].item()} for "
                             f"(prompt, completion) = ({p}, {g}); return a finite number, or None when the "
                             "component does not apply")
        return vals.to(torch.get_default_dtype()), ok

    def _maybe_steps(self, outs: list, batch: Completions, k: str):
        """A per-completion function's [P][G] outputs: as they are, or ``StepRewards`` when it returned lists."""
        P, G, T = batch.shape
        name = f"{self.name}/{k}"
        if not any(isinstance(o, (list, tuple)) for row in outs for o in row):
            return outs
        # a list per completion: step rewards, one per step of the text
        S = max(len(o) for row in outs for o in row if isinstance(o, (list, tuple))) or 1
        values, ends, present = torch.zeros(P, G, S), torch.zeros(P, G, S, dtype=torch.long), \
            torch.zeros(P, G, S, dtype=torch.bool)
        for p in range(P):
            for g in range(G):
                o = outs[p][g]
                if o is None:
                    continue
                if not isinstance(o, (list, tuple)):
                    raise ValueError(f"reward component {name!r} returned a list for some completions and "
                                     f"{type(o).__name__} for ({p}, {g}); a stepwise component returns a list "
                                     "(or None) for every completion")
                cut = batch.steps(p, g, self.step_separators)
                if len(o) != len(cut):
                    raise ValueError(f"reward component {name!r} returned {len(o)} step rewards for completion "
                                     f"({p}, {g}) {batch.texts[p][g]!r}, which has {len(cut)} steps cut at "
                                     f"{self.step_separators!r}; return one value (or None) per step")
                for s, (x, (end, _)) in enumerate(zip(o, cut)):      # each x is a finite float or None
                    if x is not None:
                        values[p, g, s], ends[p, g, s], present[p, g, s] = x, end, True
        return StepRewards(values, ends, present)


_REAL_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _is_number(x) -> bool:
    """A real number as a reward may give it: a Python or NumPy number, a bool (1/0) or a one-element tensor;
    never text ("1.0") or a container."""
    if isinstance(x, Tensor) or (hasattr(x, "dtype") and hasattr(x, "item")):      # torch or NumPy scalar
        return getattr(x, "ndim", 0) == 0 and not getattr(x, "is_complex", lambda: False)() \
            and getattr(x.dtype, "kind", "f") in "biuf"
    return isinstance(x, numbers.Real)


def _rows(out):
    for row in out:
        if isinstance(row, Tensor) or (hasattr(row, "tolist") and getattr(row, "ndim", 0) >= 1):   # torch, NumPy
            row = row.tolist()
        yield list(row) if isinstance(row, (list, tuple)) else [row]


class _BoundRewardSet(RolloutReward):
    """A ``RewardSet`` for one batch of data rows (``RewardSet.bind``)."""

    def __init__(self, reward_set: RewardSet, rows: list, source: str | None):
        self.reward_set, self.rows, self.source, self.name = reward_set, rows, source, reward_set.name

    def __call__(self, prompts: Tensor, completions: Tensor, rollout=None) -> Scored:
        rs = self.reward_set
        return rs.score(Completions.decode(rs.tokenizer, prompts, completions, rollout, self.rows, self.source))
