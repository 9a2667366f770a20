"""Your prompts: a dataset read with 🤗 ``datasets``, in the one form every run uses — rows of a prompt
and columns.

``PromptData.load(PATH)`` reads

==============================  ============================================================
``problems.jsonl`` / ``.json``   one JSON object per line (``datasets``' "json" builder)
``problems.csv``                 a header row, then one row per prompt
``problems.parquet``             Parquet
a folder                         written by ``Dataset.save_to_disk`` (a ``DatasetDict``: its
                                 "train" split, and its "test" split as held-out data)
a hub name                       ``user/dataset`` (``load_dataset(name, split="train")``), for
                                 users with the Hugging Face hub; its rows need a ``prompt`` column
==============================  ============================================================

Every row has a ``prompt``: a string, or a list of chat messages ``[{"role": "user", "content":
"…"}]`` that the model's chat template turns into text (``prompt_text``). Every other column (an
``answer``, a ``difficulty``…) travels with the row to the reward functions, which receive it as a
keyword argument — TRL's convention.

The built-in tasks are prompt sources of the same form (``lm/sources.py``): ``TaskPrompts`` draws a
task's problems as rows with an ``answer`` column, and ``Task.dataset`` writes them out as a
``datasets.Dataset``, so a reward written for your data runs on a built-in task unchanged, and the
other way round.

A ``.jsonl`` file is first scanned a line at a time, holding at most ``lines.MAX_LINE_BYTES`` (1 MiB)
of a line: a longer line is refused, naming the file, the line and the limit, before any reader
parses it.

Held-out rows are fixed by a hash of the prompt (``in_held_out``), as for the tasks: the same rows
are held out on every run and every seed.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from minigrpo.lm.lines import first_long_line, first_non_utf8, long_line_message
from minigrpo.lm.models import looks_like_path

FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class Row:
    """One prompt and its other columns.

    ``prompt``   the prompt: a string, or chat messages ``[{"role", "content"}, …]``
    ``columns``  every other column of the row, by name (what reward functions receive as keywords)
    ``index``    the row's number in its data (``dataset[index]``, counting from 0); None for a drawn problem
    """

    prompt: str | list
    columns: dict = field(default_factory=dict)
    index: int | None = None

    @property
    def is_chat(self) -> bool:
        return isinstance(self.prompt, list)

    def key(self) -> str:
        """The text whose hash decides the row's split: the prompt, or its messages as JSON."""
        return self.prompt if isinstance(self.prompt, str) else json.dumps(self.prompt, sort_keys=True)


def in_held_out(key: str, fraction: float) -> bool:
    """A row is held out when the BLAKE2b hash of its prompt falls in the first ``fraction`` of the
    hash range: fixed, whatever the seed. (Not the tasks' CRC32: CRC is linear, so the hashes of
    templated prompts that differ in a few characters cluster, and a 10% split can come out empty.)"""
    h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    return h < fraction * 2 ** 64


def prompt_text(tokenizer, prompt: str | list, where: str = "") -> str:
    """The text the model reads: a string as it is; chat messages through the tokenizer's chat
    template, ending with the assistant's turn (``add_generation_prompt=True``)."""
    if isinstance(prompt, str):
        return prompt
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"{where}the prompt is a list of chat messages, but the model's tokenizer has no chat "
                         "template; use a chat model, set tokenizer.chat_template, or give prompts as strings")
    return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)


def answer_text(value) -> str | None:
    """An ``answer`` column's value as the text a completion is compared with: stripped; a whole number
    read as a float (a CSV column with a gap reads 1 as 1.0) without its ".0"; None for a missing one."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value).strip()


def data_name(source: str) -> str:
    """A short name for run folders: the file's stem, or its folder's name when the file is called
    train/test/data (``examples/word_problems/train.jsonl`` → ``word_problems``)."""
    path = Path(str(source).rstrip("/"))
    if path.stem.lower() in ("train", "test", "data", "dataset") and path.parent.name not in ("", "."):
        return path.parent.name
    return path.stem or "data"


def _where(source: str, index: int | None) -> str:
    return f"data {source!r}" + ("" if index is None else f", row {index}") + ": "


def _check_prompt(prompt, source: str, index: int) -> None:
    if isinstance(prompt, str):
        if not prompt:
            raise ValueError(f"{_where(source, index)}the prompt is empty; every row needs a non-empty prompt")
        return
    ok = isinstance(prompt, list) and prompt and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in prompt)
    if not ok:
        raise ValueError(f"{_where(source, index)}prompt={_short(prompt)} is not allowed; a prompt is a non-empty "
                         "string or a list of chat messages {'role': ..., 'content': ...}")


def _short(value, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[:n - 1] + "…"


def _quiet_datasets():
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)     # a failure is reported once, by us
    return datasets


def read_dataset(source: str, split: str = "train", config: str | None = None):
    """A ``datasets.Dataset`` (or a ``DatasetDict`` from a save_to_disk folder) from a file, a folder
    or a hub name (``config``: the hub dataset's configuration, e.g. "main") — every failure a
    ValueError/FileNotFoundError of one line naming the source."""
    datasets = _quiet_datasets()
    path = Path(source).expanduser()
    if config is not None and (path.exists() or looks_like_path(source, FORMATS)):
        raise ValueError(f"data_config={config!r} names a hub dataset's configuration; data {source!r} is a "
                         "local file or folder, which has none")
    if path.is_dir():
        if not any((path / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
            raise ValueError(f"data {source!r} is a folder but not one written by datasets' save_to_disk (no "
                             "dataset_info.json or dataset_dict.json); give a .jsonl, .csv or .parquet file")
        return datasets.load_from_disk(str(path))
    if path.exists():
        kind = FORMATS.get(path.suffix.lower())
        if kind is None:
            raise ValueError(f"data {source!r}: the file type {path.suffix or '(none)'!r} is not read; use "
                             f"{', '.join(FORMATS)}, or a folder written by save_to_disk")
        if _blank(path):
            raise ValueError(f"data {source!r} is empty; it needs a row per prompt, with a 'prompt' column")
        if path.suffix.lower() == ".jsonl":        # one row a line: a line over the limit is refused unread
            long = first_long_line(path)
            if long is not None:
                raise ValueError(f"data {long_line_message(source, *long)}")
        if kind in ("json", "csv"):                 # text: a byte that is not UTF-8 is named, line and column
            bad = first_non_utf8(path)
            if bad is not None:
                raise ValueError(f"data {source!r}: line {bad[0]} is not UTF-8 (byte 0x{bad[2]:02x} at byte "
                                 f"{bad[1] + 1} of the line); save the file as UTF-8")
        try:
            return datasets.load_dataset(kind, data_files=str(path), split=split)
        except Exception as e:                      # datasets wraps reader errors in its own types
            raise ValueError(f"data {source!r} could not be read as {kind.upper()}{_bad_line(path)}: "
                             f"{_first_line(e)}") from None
    if looks_like_path(source, FORMATS):
        raise FileNotFoundError(f"data {source!r} does not exist; give a .jsonl, .csv or .parquet file, a folder "
                                "written by save_to_disk, or a hub dataset name")
    try:
        return datasets.load_dataset(source, config, split=split)
    except Exception as e:
        raise ValueError(f"data {source!r}: no local file by that name, and the Hugging Face hub did not provide "
                         f"it ({_first_line(e)})") from None


def _blank(path: Path) -> bool:
    """True when a file holds nothing but whitespace (read until the first other byte)."""
    with open(path, "rb") as f:
        while chunk := f.read(1 << 16):
            if chunk.strip():
                return False
    return True


def _first_line(e: BaseException) -> str:
    """The innermost cause's message, first line (datasets wraps a reader's error in its own)."""
    while (e.__cause__ or e.__context__) is not None:
        e = e.__cause__ or e.__context__
    text = str(e) or type(e).__name__
    return text.strip().splitlines()[0][:300]


def _bad_line(path: Path) -> str:
    """For a JSONL file that did not read: the first line that is not a JSON object, if one is."""
    if path.suffix.lower() != ".jsonl":
        return ""
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                if not isinstance(json.loads(line), dict):
                    return f" (line {n} is not a JSON object)"
            except json.JSONDecodeError as e:
                return f" (line {n} is not valid JSON: {e.msg})"
    return ""


class PromptData:
    """Rows of prompts and columns from one source (a file, a folder, a hub name or records).

    ``rows``     the rows, in order
    ``source``   where they came from (named in every message)
    ``columns``  the column names other than ``prompt``
    """

    def __init__(self, rows: list[Row], source: str, columns: list[str]):
        self.rows, self.source, self.columns = rows, source, list(columns)

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"PromptData({self.source!r}, {len(self)} rows, columns {['prompt', *self.columns]})"

    @classmethod
    def load(cls, source, split: str = "train", prompt_column: str = "prompt",
             config: str | None = None) -> "PromptData":
        """Read a file, a save_to_disk folder or a hub name (see the module docstring); a folder's
        ``DatasetDict`` gives its ``split``. ``prompt_column``: the column that holds the prompts."""
        if isinstance(source, PromptData):
            return source
        if not isinstance(source, (str, os.PathLike)):
            return cls.from_dataset(source, prompt_column=prompt_column)
        source = os.fspath(source)
        ds = read_dataset(source, split, config)
        if isinstance(ds, dict):                           # a DatasetDict from save_to_disk
            if split not in ds:
                raise ValueError(f"data {source!r} holds the splits {sorted(ds)}, not {split!r}")
            ds = ds[split]
        return cls.from_dataset(ds, source, prompt_column)

    @classmethod
    def from_dataset(cls, ds, source: str = "dataset", prompt_column: str = "prompt") -> "PromptData":
        """From a ``datasets.Dataset``, or a list of dicts (records). The ``prompt_column`` (a hub
        dataset's ``question``, say) becomes the rows' prompt, and every other column stays a column."""
        if isinstance(ds, list):
            records, names = ds, sorted({k for r in ds if isinstance(r, dict) for k in r})
            if not all(isinstance(r, dict) for r in ds):
                raise ValueError(f"data {source!r}: records must be dicts with a 'prompt' key")
        elif hasattr(ds, "column_names") and hasattr(ds, "to_list"):
            records, names = ds.to_list(), list(ds.column_names)
        else:
            raise ValueError(f"data={_short(ds)} is not allowed; give a file path, a datasets.Dataset or a list of "
                             "dicts with a 'prompt' key")
        if not records:
            raise ValueError(f"data {source!r} holds no rows; it needs a row per prompt, with a 'prompt' column")
        key = prompt_column
        if key not in names:
            raise ValueError(f"data {source!r} has no {key!r} column (its columns: {names}); name the column that "
                             "holds the prompts with prompt_column (--prompt-column)")
        rows = []
        for i, rec in enumerate(records):
            if rec.get(key) is None:
                raise ValueError(f"{_where(source, i)}the row has no {key!r}")
            _check_prompt(rec[key], source, i)
            rows.append(Row(rec[key], {k: v for k, v in rec.items() if k != key}, i))
        return cls(rows, source, [n for n in names if n != key])

    # --- views -------------------------------------------------------------------------------------
    def subset(self, keep, source: str | None = None) -> "PromptData":
        return PromptData([r for r in self.rows if keep(r)], source or self.source, self.columns)

    def split(self, test_fraction: float) -> tuple["PromptData", "PromptData"]:
        """(train, test): a row is held out when the hash of its prompt falls in the first
        ``test_fraction`` of the hash range (``in_held_out``) — fixed, whatever the seed."""
        test = self.subset(lambda r: in_held_out(r.key(), test_fraction), f"{self.source} (held out)")
        train = self.subset(lambda r: not in_held_out(r.key(), test_fraction))
        if not train.rows:
            raise ValueError(f"data {self.source!r}: all {len(self)} rows fell in the held-out "
                             f"{test_fraction:g}; lower test_fraction or give separate held-out data")
        return train, test

    def max_length(self, tokenizer, column: str) -> int:
        """The longest value of ``column`` in tokens (0 when no row has it as a string)."""
        texts = [r.columns[column] for r in self.rows if isinstance(r.columns.get(column), str)]
        return max(map(len, tokenizer(texts, add_special_tokens=False)["input_ids"]), default=0) if texts else 0

    def check_lengths(self, tokenizer, max_new_tokens: int, context: int | None) -> None:
        """Refuse, naming the row, a prompt whose tokens and ``max_new_tokens`` do not fit ``context``."""
        texts = [prompt_text(tokenizer, r.prompt, _where(self.source, r.index)) for r in self.rows]
        lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]   # one batched call
        for r, n in zip(self.rows, lengths):
            if n == 0:
                raise ValueError(f"{_where(self.source, r.index)}the prompt encodes to no tokens")
            if context is not None and n + max_new_tokens > context:
                raise ValueError(f"{_where(self.source, r.index)}the prompt is {n} tokens; with max_new_tokens="
                                 f"{max_new_tokens} that is {n + max_new_tokens}, over the model's context of "
                                 f"{context} tokens (shorten the prompt, drop the row, or lower max_new_tokens)")
