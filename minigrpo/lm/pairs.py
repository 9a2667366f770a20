"""Preference pairs as tensors for DPO/IPO, in the toolkit's one layout: prompts × group × tokens.

A preference pair is a group of two: index 0 (``CHOSEN``) the chosen completion, index 1
(``REJECTED``) the rejected one. ``encode_pairs`` gives

==================  ============  ==========================================================
``prompts``         (P, L) long   left-padded prompt ids (the prompt's text by ``prompt_text``)
``completions``     (P, 2, T)     completion ids, each ended by EOS and padded with pad_id after
``mask``            (P, 2, T)     True on completion tokens, EOS included
``truncated``       int           completions cut to ``max_new_tokens`` (their EOS did not fit)
==================  ============  ==========================================================

T is the longest completion plus its EOS, capped by ``max_new_tokens``. A cut completion keeps its
first ``max_new_tokens`` tokens and no EOS, as the sampler leaves one that ran out of tokens.

Long texts are not tokenized whole: with ``max_new_tokens`` (or a context) given, a text is cut to
``CHARS_PER_TOKEN`` (32) characters per token wanted before it goes to the tokenizer, and cut
further out only when those characters give too few tokens — so a 20 MB completion costs what its
first few thousand characters cost (``encode_head``). The ids kept are the ones the whole text
gives, except where a tokenizer's merges reach more than ``MARGIN`` tokens back from the cut.

``pairs_from_groups`` builds pairs from scored samples (best against worst, or every ordered pair),
as DPO does when the preference comes from a reward.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from minigrpo.core.validate import is_int, is_real
from minigrpo.lm.data import prompt_text
from minigrpo.lm.tokens import check_tokenizer

CHOSEN, REJECTED = 0, 1
CHARS_PER_TOKEN = 32        # characters read per token wanted, before the tokenizer sees a long text
MARGIN = 8                  # tokens past the ones kept that must come out of the cut text


@dataclass(frozen=True)
class Pair:
    """One preference: ``chosen`` is preferred to ``rejected`` after ``prompt`` (text or chat messages)."""

    prompt: str | list
    chosen: str
    rejected: str


@dataclass
class PairBatch:
    """Preference pairs as tensors (see the module docstring): group index 0 chosen, 1 rejected."""

    prompts: Tensor
    completions: Tensor
    mask: Tensor
    truncated: int = 0

    @property
    def shape(self):
        return tuple(self.completions.shape)


def short(value, n: int = 60) -> str:
    """``repr(value)``, cut to ``n`` characters with "…" (for one-line messages)."""
    text = repr(value[:n + 1] if isinstance(value, str) else value)
    return text if len(text) <= n else text[:n - 1] + "…"


def encode_head(tokenizer, text: str, n: int | None) -> tuple[list[int], bool]:
    """The first ``n`` token ids of ``text`` (no special tokens) and whether the text has more than ``n``.

    ``n=None``: the whole text. Otherwise the text is cut to ``n * CHARS_PER_TOKEN`` characters first,
    and the cut moved out (×4) until it yields more than ``n + MARGIN`` tokens or holds the whole text:
    a 20 MB string is never tokenized whole when only its first ``n`` tokens are kept."""
    if n is None:
        return tokenizer.encode(text, add_special_tokens=False), False
    limit = max(n + MARGIN, 1) * CHARS_PER_TOKEN
    while True:
        whole = limit >= len(text)
        ids = tokenizer.encode(text if whole else text[:limit], add_special_tokens=False)
        if whole or len(ids) > n + MARGIN:
            return ids[:n], len(ids) > n
        limit *= 4


def completion_row(tokenizer, text: str, max_new_tokens: int | None) -> tuple[list[int], bool]:
    """A completion's ids ended by EOS, cut to ``max_new_tokens`` (the EOS goes first), and whether it was cut."""
    ids, more = encode_head(tokenizer, text, max_new_tokens)
    row = ids + [tokenizer.eos_token_id]
    if more or (max_new_tokens is not None and len(row) > max_new_tokens):
        return row[:max_new_tokens], True
    return row, False


def left_pad_rows(rows: list[list[int]], pad_id: int) -> Tensor:
    """Rows of ids → (P, L) long, padded on the left to the longest."""
    L = max(len(r) for r in rows)
    return torch.tensor([[pad_id] * (L - len(r)) + r for r in rows], dtype=torch.long)


def check_max_new_tokens(max_new_tokens, context, owner: str) -> None:
    if max_new_tokens is not None and not (is_int(max_new_tokens) and max_new_tokens >= 1):
        raise ValueError(f"{owner}: max_new_tokens={max_new_tokens!r} is not allowed; an integer ≥ 1, or None")
    if context is not None and not (is_int(context) and context >= 2):
        raise ValueError(f"{owner}: context={context!r} is not allowed; an integer ≥ 2 (the model's context), "
                         "or None for no limit")


def prompt_ids(tokenizer, prompt, context: int | None, where: str) -> list[int]:
    """A prompt's ids (through ``prompt_text``), refused when empty or, alone, over ``context``."""
    text = prompt_text(tokenizer, prompt, where)
    ids, more = encode_head(tokenizer, text, context)
    if more:
        raise ValueError(f"{where}the prompt alone is over the model's context of {context} tokens "
                         f"({short(text)}); shorten the prompt or drop it")
    if not ids:
        raise ValueError(f"{where}the prompt ({short(text)}) encodes to no tokens; prompts must be non-empty")
    return ids


def encode_pairs(tokenizer, pairs, max_new_tokens: int | None = None, context: int | None = None) -> PairBatch:
    """Preference pairs (objects with ``.prompt``, ``.chosen``, ``.rejected``; ``PreferencePair`` and
    ``Pair`` work) → a ``PairBatch``: completions (P, 2, T), index 0 chosen, index 1 rejected.

    Refused, with a one-line ValueError naming pair i: no pairs; a prompt that is not a string or chat
    messages, or a chosen/rejected that is not a string; a pair whose chosen and rejected come out as
    the same token ids (a tokenizer that maps both to <unk>, or two texts cut to the same first
    ``max_new_tokens`` tokens) — such a pair states no preference the model can learn; and, with
    ``context`` (the model's context in tokens; None: no limit), a prompt plus completion longer than it.
    Texts are cut to ``max_new_tokens * 32`` characters before tokenizing (see ``encode_head``)."""
    check_tokenizer(tokenizer)
    check_max_new_tokens(max_new_tokens, context, "encode_pairs")
    pairs = list(pairs)
    if not pairs:
        raise ValueError("encode_pairs: no pairs (pairs=[]); give at least one (prompt, chosen, rejected) pair")
    heads, rows, truncated = [], [], 0
    for i, pair in enumerate(pairs):
        where = f"pair {i}: "
        if not all(hasattr(pair, k) for k in ("prompt", "chosen", "rejected")):
            raise ValueError(f"{where}{short(pair)} is not a pair; give objects with .prompt, .chosen and .rejected "
                             "(PreferencePair, or minigrpo.lm.pairs.Pair)")
        if not isinstance(pair.prompt, (str, list)):
            raise ValueError(f"{where}prompt={short(pair.prompt)} is not allowed; a string or a list of chat messages")
        bad = [k for k in ("chosen", "rejected") if not isinstance(getattr(pair, k), str)]
        if bad:
            raise ValueError(f"{where}{', '.join(f'{k}={short(getattr(pair, k))}' for k in bad)} is not allowed; "
                             "chosen and rejected must be strings")
        head = prompt_ids(tokenizer, pair.prompt, context, where)
        chosen, cut_c = completion_row(tokenizer, pair.chosen, max_new_tokens)
        rejected, cut_r = completion_row(tokenizer, pair.rejected, max_new_tokens)
        if chosen == rejected:
            why = (f"both begin with the same {max_new_tokens} tokens, all that max_new_tokens={max_new_tokens} keeps"
                   if cut_c and cut_r else "they encode to the same token ids (characters the tokenizer does not "
                   "know become the same <unk>, or its normalisation makes them equal)")
            raise ValueError(f"{where}chosen={short(pair.chosen)} and rejected={short(pair.rejected)} are the same "
                             f"to the model: {why}; such a pair states no preference — drop it"
                             + (" or raise max_new_tokens" if cut_c and cut_r else ""))
        longer = max(len(chosen), len(rejected))
        if context is not None and len(head) + longer > context:
            raise ValueError(f"{where}the prompt ({len(head)} tokens) and its longer completion ({longer} tokens with "
                             f"EOS) make {len(head) + longer}, over the model's context of {context} tokens; shorten "
                             "the texts, lower max_new_tokens, or drop the pair")
        heads.append(head)
        rows.append((chosen, rejected))
        truncated += cut_c + cut_r
    T = max(len(r) for pair_rows in rows for r in pair_rows)
    completions = torch.full((len(rows), 2, T), tokenizer.pad_token_id, dtype=torch.long)     # (P, 2, T)
    mask = torch.zeros((len(rows), 2, T), dtype=torch.bool)
    for p, pair_rows in enumerate(rows):
        for j, r in enumerate(pair_rows):
            completions[p, j, :len(r)] = torch.tensor(r, dtype=torch.long)
            mask[p, j, :len(r)] = True
    return PairBatch(left_pad_rows(heads, tokenizer.pad_token_id), completions, mask, truncated)


def pairs_from_groups(prompts: list, groups: list[list[str]], rewards: list[list[float]],
                      how: str = "best_worst") -> tuple[list[Pair], int]:
    """Scored samples → DPO pairs, and how many prompts gave none.

    For each prompt, its completions ``groups[p]`` and their ``rewards[p]``:

    * ``"best_worst"``: the highest-reward completion chosen, the lowest-reward one rejected (the first
      of each where rewards tie); no pair when all rewards tie or the two texts are the same.
    * ``"all"``: every (i, j) with r_i > r_j and different texts, each (chosen, rejected) text pair once
      (a completion sampled twice does not count twice), in the order of i then j.

    Returns ``(pairs, n_tied)``: ``n_tied`` counts the prompts that gave no pair (their rewards all tie,
    or the completions whose rewards differ have the same text)."""
    if how not in ("best_worst", "all"):
        raise ValueError(f"pairs_from_groups: how={how!r} is not allowed; use 'best_worst' or 'all'")
    if not (len(prompts) == len(groups) == len(rewards)):
        raise ValueError(f"pairs_from_groups: {len(prompts)} prompts, {len(groups)} groups and {len(rewards)} "
                         "reward lists; give one group of completions and one list of rewards per prompt")
    pairs, n_tied = [], 0
    for p, (prompt, texts, rs) in enumerate(zip(prompts, groups, rewards)):
        if len(texts) != len(rs):
            raise ValueError(f"pairs_from_groups: prompt {p} has {len(texts)} completions and {len(rs)} rewards")
        if not all(isinstance(t, str) for t in texts):
            raise ValueError(f"pairs_from_groups: prompt {p}: every completion must be a string")
        bad = [r for r in rs if not is_real(r)]
        if bad:
            raise ValueError(f"pairs_from_groups: prompt {p}: reward {bad[0]!r} is not a finite number")
        if how == "best_worst":
            got = []
            if texts:
                best = max(range(len(rs)), key=lambda i: rs[i])          # the first of the highest
                worst = min(range(len(rs)), key=lambda i: rs[i])         # the first of the lowest
                if rs[best] > rs[worst] and texts[best] != texts[worst]:
                    got = [Pair(prompt, texts[best], texts[worst])]
        else:
            seen, got = set(), []
            for i in range(len(texts)):
                for j in range(len(texts)):
                    if rs[i] > rs[j] and texts[i] != texts[j] and (texts[i], texts[j]) not in seen:
                        seen.add((texts[i], texts[j]))
                        got.append(Pair(prompt, texts[i], texts[j]))
        n_tied += not got
        pairs += got
    return pairs, n_tied
