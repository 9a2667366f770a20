"""Your SFT data: prompt → completion pairs read from a dataset and checked before any training, and a
tiny model's tokenizer and context sized to them.

A row of the data (read by ``data.PromptData``: JSONL, CSV, Parquet, a save_to_disk folder or a hub
name) has a ``prompt`` — a string, or chat messages that the tokenizer's chat template turns into
text — and a completion column (``completion`` unless ``SFTConfig.completion_column`` names another):
a string, or for chat data a list of assistant messages, whose contents are the completion
(TRL's "prompt-completion" form, conversational or not). The SFT target of a row is its completion
followed by EOS, read after the prompt's text — what GRPO will later sample after the same prompt.

Rows are held out by a hash of the prompt (``PromptData.split``), the same rows on every run.
"""
from __future__ import annotations

import dataclasses
import math

from minigrpo.core.validate import is_int
from minigrpo.lm.data import PromptData, Row, data_name, prompt_text
from minigrpo.lm.models import TinyGPT2
from minigrpo.lm.tasks import Problem
from minigrpo.lm.tokens import char_tokenizer

# The chat template a tiny character-level model gets when the data's prompts are chat messages: one
# line per message, "role: content", then the assistant's turn. Short, because every character is a token.
TINY_CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                      "{% if add_generation_prompt %}assistant: {% endif %}")


def _where(source: str, index: int | None) -> str:
    return f"data {source!r}" + ("" if index is None else f", row {index}") + ": "


def completion_text(value, where: str = "") -> str:
    """A row's completion as text: a string as it is (an integer, as CSV and JSON readers give a number
    column, written out); a list of assistant messages, their contents joined."""
    if isinstance(value, str):
        text = value
    elif is_int(value):
        text = str(value)
    elif isinstance(value, list) and value and all(
            isinstance(m, dict) and m.get("role") == "assistant" and isinstance(m.get("content"), str) for m in value):
        text = "".join(m["content"] for m in value)
    elif value is None:
        raise ValueError(f"{where}the completion is missing; every row needs one")
    else:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:59] + "…"
        raise ValueError(f"{where}completion={shown} is not allowed; a completion is a string, or for chat data a "
                         "list of assistant messages [{'role': 'assistant', 'content': ...}]")
    if not text.strip():
        raise ValueError(f"{where}the completion is empty; every row needs a non-empty completion")
    return text


class SFTData:
    """The prompt → completion pairs of one dataset, read and checked at once.

    ``rows``             every row, in order (``data.Row``)
    ``train``, ``test``  the same rows split (``data.PromptData``), held out by a hash of the prompt
    ``completions``      row index → completion text
    ``source``           where the data came from (named in every message)

    ``pairs(tokenizer, context)`` then gives each row's prompt text and completion as a
    ``tasks.Problem`` (what ``sft.sft_batch`` encodes), refusing a row that does not fit the model.
    """

    def __init__(self, source, completion_column: str = "completion", test_fraction: float = 0.1,
                 prompt_column: str = "prompt", config: str | None = None):
        data = PromptData.load(source, prompt_column=prompt_column, config=config)
        if completion_column not in data.columns:
            raise ValueError(f"data {data.source!r} has no {completion_column!r} column (its columns: "
                             f"{[prompt_column, *data.columns]}); name the column that holds the completions with "
                             "completion_column (--completion-column)")
        self.source = data.source
        self.completions = {r.index: completion_text(r.columns[completion_column], _where(data.source, r.index))
                            for r in data.rows}
        self.train, self.test = data.split(test_fraction)
        self.rows = data.rows
        self._pairs: dict[int, Problem] = {}

    @property
    def is_chat(self) -> bool:
        return any(r.is_chat for r in self.rows)

    @property
    def name(self) -> str:
        """A short name for folders (``lm/data.data_name``: ``reverse`` for ``data/reverse.jsonl``)."""
        return data_name(self.source)

    def pairs(self, tokenizer, context: int | None) -> dict[int, Problem]:
        """Row index → (prompt text, completion), every row checked: its prompt and completion encode to
        tokens, and prompt + completion + EOS fit ``context`` (the model's positions; None: unlimited)."""
        texts = {r.index: prompt_text(tokenizer, r.prompt, _where(self.source, r.index)) for r in self.rows}
        lengths = self.lengths(tokenizer, texts)
        for i, (n_prompt, n_completion) in lengths.items():
            if n_prompt == 0 or n_completion == 0:
                raise ValueError(f"{_where(self.source, i)}the {'prompt' if n_prompt == 0 else 'completion'} "
                                 "encodes to no tokens")
            if context is not None and n_prompt + n_completion + 1 > context:
                raise ValueError(f"{_where(self.source, i)}the prompt ({n_prompt} tokens), completion "
                                 f"({n_completion}) and EOS make {n_prompt + n_completion + 1} tokens, over the "
                                 f"model's context of {context}; shorten the row or drop it")
        self._pairs = {i: Problem(texts[i], self.completions[i]) for i in texts}
        return self._pairs

    def lengths(self, tokenizer, texts: dict[int, str]) -> dict[int, tuple[int, int]]:
        """Row index → (prompt tokens, completion tokens), no special tokens added (as ``sft_batch``)."""
        index = list(texts)
        prompts = tokenizer([texts[i] for i in index], add_special_tokens=False)["input_ids"]
        completions = tokenizer([self.completions[i] for i in index], add_special_tokens=False)["input_ids"]
        return {i: (len(p), len(c)) for i, p, c in zip(index, prompts, completions)}

    def problems(self, rows: list[Row]) -> list[Problem]:
        """The (prompt text, completion) pairs of ``rows``; call ``pairs`` first."""
        return [self._pairs[r.index] for r in rows]


def tiny_tokenizer(data: SFTData):
    """A character tokenizer over every character of the data's prompts and completions, held-out rows
    included (a held-out row must encode too); for chat prompts, with ``TINY_CHAT_TEMPLATE``."""
    chars = set("".join(data.completions.values()))
    for r in data.rows:
        texts = [r.prompt] if isinstance(r.prompt, str) else [m["role"] + m["content"] for m in r.prompt]
        chars |= set("".join(texts))
    tokenizer = char_tokenizer("".join(sorted(chars)))
    if data.is_chat:                 # the template's own characters ("assistant: ", "\n") must be tokens too
        tokenizer.chat_template = TINY_CHAT_TEMPLATE
        rendered = [prompt_text(tokenizer, r.prompt) for r in data.rows if r.is_chat]
        tokenizer = char_tokenizer("".join(sorted(chars | set("".join(rendered)))))
        tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer


def tiny_shape(shape: TinyGPT2, data: SFTData, tokenizer) -> TinyGPT2:
    """``shape`` with room for GRPO after SFT: n_positions ≥ the longest prompt + twice the longest
    completion + EOS (completions sampled later may run longer than the data's), rounded up to a
    multiple of 8, and never below ``shape.n_positions``."""
    texts = {r.index: prompt_text(tokenizer, r.prompt) for r in data.rows}
    lengths = data.lengths(tokenizer, texts).values()
    need = max(p for p, _ in lengths) + 2 * max(c for _, c in lengths) + 1
    return dataclasses.replace(shape, n_positions=max(shape.n_positions, 8 * math.ceil(need / 8)))
