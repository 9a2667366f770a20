"""Logged data for offline GRPO: completions sampled once and scored once, stored as a table.

One row per completion:

==============  ==================================================================================
``prompt``      the prompt: text, or chat messages ``[{"role", "content"}, …]``
``completion``  the completion's text (without the EOS)
``reward``      its reward, a finite number
``logp``        optional: the behaviour policy's log-prob of each completion token as the sampler
                produced them, a list of numbers ≤ 0 — one per token and one for the EOS, or one per
                token only when the sampler ran out of tokens before an EOS. In a CSV file, the
                list written as JSON text (``"[-0.1, -2.3]"``). Every row has it, or none does.
any other       kept with the row (``ScoredCompletion.columns``)
==============  ==================================================================================

``write_logged`` writes JSONL (atomically); ``read_logged`` reads JSONL itself (row and line in every
message) and CSV, Parquet, ``.json`` and save_to_disk folders through ``data.read_dataset``.
``group_logged`` gathers the rows of each prompt, and ``encode_logged`` turns the groups into a
``core.offline.LoggedBatch`` — P prompts × G slots (the largest group) × T tokens.

The log-probs are checked against the tokenizer: a row's ``logp`` must have one entry per token of
its completion as this tokenizer encodes it (plus the EOS). A different length means the log-probs
were logged under another tokenizer — or the sampler wrote a token split this tokenizer would not
make; either way the ratios π_θ/μ would be taken token against the wrong token, so it is refused.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from minigrpo.core.offline import LoggedBatch
from minigrpo.core.validate import is_int, is_real
from minigrpo.lm.data import read_dataset
from minigrpo.lm.pairs import check_max_new_tokens, completion_row, encode_head, left_pad_rows, prompt_ids, short
from minigrpo.lm.saving import write_text_atomic
from minigrpo.lm.tokens import check_tokenizer

FIELDS = ("prompt", "completion", "reward", "logp")
REQUIRED = ("prompt", "completion", "reward")


@dataclass
class ScoredCompletion:
    """One logged completion.

    ``prompt``      text, or chat messages
    ``completion``  the completion's text
    ``reward``      its reward (a finite float)
    ``logp``        the behaviour policy's log-prob of each token (EOS included), or None
    ``columns``     the row's other columns, by name
    ``row``         its row in the file it was read from (counting from 0); None when built in code.
                    Named in messages; not compared.
    """

    prompt: str | list
    completion: str
    reward: float
    logp: list[float] | None = None
    columns: dict = field(default_factory=dict)
    row: int | None = field(default=None, compare=False)


# --- checks --------------------------------------------------------------------------------------

def _check_prompt(prompt, where: str) -> None:
    if isinstance(prompt, str) and prompt:
        return
    if isinstance(prompt, list) and prompt and all(isinstance(m, dict) and isinstance(m.get("role"), str)
                                                   and isinstance(m.get("content"), str) for m in prompt):
        return
    raise ValueError(f"{where}prompt={short(prompt)} is not allowed; a prompt is a non-empty string or a list of "
                     "chat messages {'role': ..., 'content': ...}")


def _completion(value, where: str) -> str:
    if isinstance(value, str):
        return value
    if is_int(value):                      # a CSV column of digits reads as integers
        return str(value)
    raise ValueError(f"{where}completion={short(value)} is not allowed; a completion is a string")


def _reward(value, where: str) -> float:
    if not is_real(value):
        raise ValueError(f"{where}reward={short(value)} is not allowed; a reward is a finite number")
    return float(value)


def _logp(value, where: str) -> list[float] | None:
    """None (or a CSV's empty cell) → None; a list of finite numbers ≤ 0 (or its JSON text) → floats."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        raise ValueError(f"{where}logp={short(value)} is not allowed; logp is a list of log-probs (numbers ≤ 0), "
                         "one per completion token and the EOS")
    if not value:
        raise ValueError(f"{where}logp=[] is not allowed; a completion has at least one token (its EOS), and a "
                         "log-prob for each")
    for t, x in enumerate(value):
        if not (is_real(x) and x <= 0):
            raise ValueError(f"{where}logp[{t}]={short(x)} is not allowed; a log-prob is a finite number ≤ 0")
    return [float(x) for x in value]


def check_record(rec, where: str) -> ScoredCompletion:
    """A ScoredCompletion whose fields are checked (reward as a float, logp as floats), or ValueError at ``where``."""
    if not isinstance(rec, ScoredCompletion):
        raise ValueError(f"{where}{short(rec)} is not a ScoredCompletion")
    _check_prompt(rec.prompt, where)
    clash = sorted(set(rec.columns) & set(FIELDS)) if isinstance(rec.columns, dict) else None
    if clash is None or clash:
        raise ValueError(f"{where}columns={short(rec.columns)} is not allowed; a dict of other columns, without "
                         f"the names {list(FIELDS)}")
    return ScoredCompletion(rec.prompt, _completion(rec.completion, where), _reward(rec.reward, where),
                            _logp(rec.logp, where), dict(rec.columns), rec.row)


def _same_logp(records: list[ScoredCompletion], name) -> None:
    """Every record has logp, or none does (``name(i)`` says where record i is)."""
    first = records[0].logp is not None
    for i, rec in enumerate(records):
        if (rec.logp is not None) != first:
            raise ValueError(f"{name(i)}{'has no' if first else 'has a'} logp, but {name(0).rstrip(': ')} "
                             f"{'has one' if first else 'has none'}; give logp for every row or for none")


# --- files ---------------------------------------------------------------------------------------

def write_logged(path, records: list[ScoredCompletion]) -> Path:
    """Write records as JSONL (one object a line: prompt, completion, reward, logp when not None, then
    the other columns), atomically: a temporary file in the same folder, then ``os.replace``. The
    parent folders are created. Refuses (naming the record) what ``read_logged`` would refuse."""
    path = Path(path)
    records = list(records)
    if not records:
        raise ValueError(f"write_logged {str(path)!r}: no records; a logged file needs at least one row")
    lines = []
    for i, rec in enumerate(records):
        where = f"write_logged {str(path)!r}, record {i}: "
        rec = check_record(rec, where)
        obj = {"prompt": rec.prompt, "completion": rec.completion, "reward": rec.reward}
        if rec.logp is not None:
            obj["logp"] = rec.logp
        try:
            lines.append(json.dumps(obj | rec.columns, ensure_ascii=False, allow_nan=False) + "\n")
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}a column's value cannot be written as JSON ({e})") from None
    _same_logp(records, lambda i: f"write_logged {str(path)!r}, record {i} ")
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, "".join(lines))


def _where(source: str, row: int, line: int | None = None) -> str:
    return f"logged data {source!r}, row {row}" + ("" if line is None else f" (line {line})") + ": "


def _jsonl_rows(path: Path, source: str):
    """(row, line, object) for each non-blank line of a JSONL file; a line that is not a JSON object is refused."""
    row = 0
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{_where(source, row, n)}not valid JSON ({e.msg}); a logged file holds one JSON "
                                 "object per line") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{_where(source, row, n)}a {type(obj).__name__}, not a JSON object; a logged "
                                 "file holds one object per line with 'prompt', 'completion' and 'reward'")
            yield row, n, obj
            row += 1


def _lines(path: Path, most: int) -> int:
    """How many non-blank lines a file has, counting up to ``most``."""
    n = 0
    with open(path, "rb") as f:
        for line in f:
            n += bool(line.strip())
            if n >= most:
                break
    return n


def read_logged(source, split: str = "train") -> list[ScoredCompletion]:
    """Read logged completions (see the module docstring): ``.jsonl`` directly, any other format
    ``data.read_dataset`` reads (CSV, Parquet, ``.json``, a save_to_disk folder — its ``split``).
    Every failure is one line naming the source and, for a bad row, the row (and a JSONL file's line):
    a missing column (and the columns there are), a reward that is not a finite number, a logp that
    is not a list of finite numbers ≤ 0, rows that disagree on having logp, an empty file."""
    source = os.fspath(source)
    path = Path(source).expanduser()
    empty = f"logged data {source!r} holds no rows; it needs one row per completion, with 'prompt', " \
            "'completion' and 'reward'"
    if path.is_file() and path.suffix.lower() == ".jsonl":
        rows = list(_jsonl_rows(path, source))
        if not rows:
            raise ValueError(empty)
        wheres = {i: _where(source, i, n) for i, n, _ in rows}
        objs = [obj for _, _, obj in rows]
        for i, obj in enumerate(objs):
            missing = [k for k in REQUIRED if k not in obj]
            if missing:
                raise ValueError(f"{wheres[i]}no {', '.join(map(repr, missing))} (the row has {sorted(obj)}); a "
                                 "logged row needs 'prompt', 'completion' and 'reward'")
    else:
        need = 2 if path.suffix.lower() == ".csv" else 1         # a CSV's header alone holds no rows
        if path.is_file() and _lines(path, need) < need:
            raise ValueError(empty)
        ds = read_dataset(source, split)
        if isinstance(ds, dict):                                 # a DatasetDict from save_to_disk
            if split not in ds:
                raise ValueError(f"logged data {source!r} holds the splits {sorted(ds)}, not {split!r}")
            ds = ds[split]
        missing = [k for k in REQUIRED if k not in ds.column_names]
        if missing:
            raise ValueError(f"logged data {source!r} has no {', '.join(map(repr, missing))} column (its columns: "
                             f"{list(ds.column_names)}); a logged row needs 'prompt', 'completion' and 'reward'")
        objs = ds.to_list()
        if not objs:
            raise ValueError(empty)
        wheres = {i: _where(source, i) for i in range(len(objs))}
    records = []
    for i, obj in enumerate(objs):
        where = wheres[i]
        for k in REQUIRED:
            if obj[k] is None:
                raise ValueError(f"{where}{k} is missing (empty); every row needs 'prompt', 'completion' and 'reward'")
        _check_prompt(obj["prompt"], where)
        records.append(ScoredCompletion(obj["prompt"], _completion(obj["completion"], where),
                                        _reward(obj["reward"], where), _logp(obj.get("logp"), where),
                                        {k: v for k, v in obj.items() if k not in FIELDS}, i))
    _same_logp(records, lambda i: wheres[i])
    return records


# --- groups and tensors --------------------------------------------------------------------------

def prompt_key(prompt) -> str:
    """The key rows of one prompt share: ``json.dumps`` of the prompt (so chat messages work)."""
    return json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def group_logged(records: list[ScoredCompletion]) -> list[tuple[str | list, list[ScoredCompletion]]]:
    """Records → (prompt, its records) per prompt, prompts in order of first appearance, records in order."""
    groups: dict[str, tuple] = {}
    for rec in records:
        groups.setdefault(prompt_key(rec.prompt), (rec.prompt, []))[1].append(rec)
    return list(groups.values())


def _row_with_logp(tokenizer, rec: ScoredCompletion, max_new_tokens, where: str) -> tuple[list[int], list[float]]:
    """A completion's ids and its logged log-probs, aligned: ``len(logp)`` = its tokens + EOS (the EOS
    was sampled), or its tokens alone (the sampler ran out first: no EOS is added); cut to max_new_tokens."""
    n = len(rec.logp)
    ids, more = encode_head(tokenizer, rec.completion, n)          # enough to tell whether the lengths agree
    if more or n not in (len(ids), len(ids) + 1):
        got = f"more than {n} tokens" if more else f"{len(ids)} tokens ({len(ids) + 1} with its EOS)"
        raise ValueError(f"{where}logp has {n} entries, but the completion {short(rec.completion)} is {got} under "
                         "this tokenizer; the log-probs were logged under another tokenizer (or the sampler split "
                         "the text into other tokens) — log them with the model's own tokenizer, or drop logp")
    row = ids + [tokenizer.eos_token_id] if n == len(ids) + 1 else ids
    if max_new_tokens is not None:
        row, logp = row[:max_new_tokens], rec.logp[:max_new_tokens]
    else:
        logp = rec.logp
    return row, logp


def encode_logged(tokenizer, groups, max_new_tokens: int | None = None, context: int | None = None) -> LoggedBatch:
    """Groups of logged completions (``group_logged``'s output) → a ``LoggedBatch``.

    ``prompts`` (P, L) left-padded (``prompt_text``, no special tokens); ``completions`` (P, G, T), G the
    largest group: each completion ended by EOS and padded after, cut to ``max_new_tokens`` (its logp
    cut alike); an empty slot of a smaller group holds a single EOS with ``mask`` and ``valid`` False
    and reward 0. ``r`` (P, G) float. ``logp`` (P, G, T) float, 0 on padding — None when the records
    have none (all must agree). A record's logp must be as long as its completion's tokens plus EOS
    (or its tokens alone, a completion the sampler cut): else ValueError naming the prompt and row.
    ``context`` (None: no limit): a prompt and completion over it are refused."""
    check_tokenizer(tokenizer)
    check_max_new_tokens(max_new_tokens, context, "encode_logged")
    groups = list(groups)
    if not groups:
        raise ValueError("encode_logged: no groups (groups=[]); give group_logged(records), at least one prompt")
    flat = []
    for p, group in enumerate(groups):
        if not (isinstance(group, tuple) and len(group) == 2 and isinstance(group[1], list) and group[1]):
            raise ValueError(f"encode_logged: group {p} is {short(group)}; each group is (prompt, [ScoredCompletion, "
                             "…]) with at least one completion, as group_logged gives")
        flat += [(p, j, rec) for j, rec in enumerate(group[1])]

    def name(i):
        p, j, rec = flat[i]
        return f"prompt {p} ({short(groups[p][0], 40)}), completion {j}" + (
            "" if rec.row is None else f" (row {rec.row})") + ": "

    records = [check_record(rec, name(i)) for i, (_, _, rec) in enumerate(flat)]
    _same_logp(records, name)
    has_logp = records[0].logp is not None
    heads = [prompt_ids(tokenizer, prompt, context, f"prompt {p}: ") for p, (prompt, _) in enumerate(groups)]
    rows, logps = {}, {}
    for i, ((p, j, _), rec) in enumerate(zip(flat, records)):
        if has_logp:
            rows[p, j], logps[p, j] = _row_with_logp(tokenizer, rec, max_new_tokens, name(i))
        else:
            rows[p, j] = completion_row(tokenizer, rec.completion, max_new_tokens)[0]
        if context is not None and len(heads[p]) + len(rows[p, j]) > context:
            raise ValueError(f"{name(i)}the prompt ({len(heads[p])} tokens) and the completion ({len(rows[p, j])} "
                             f"tokens) make {len(heads[p]) + len(rows[p, j])}, over the model's context of {context} "
                             "tokens; lower max_new_tokens or drop the row")
    P, G = len(groups), max(len(g[1]) for g in groups)
    T = max(1, *(len(r) for r in rows.values()))
    completions = torch.full((P, G, T), tokenizer.pad_token_id, dtype=torch.long)
    completions[:, :, 0] = tokenizer.eos_token_id                       # an empty slot: a single EOS
    mask = torch.zeros((P, G, T), dtype=torch.bool)
    valid = torch.zeros((P, G), dtype=torch.bool)
    r = torch.zeros((P, G))
    logp = torch.zeros((P, G, T)) if has_logp else None
    for ((p, j, _), rec) in zip(flat, records):
        row = rows[p, j]
        completions[p, j, 0] = tokenizer.pad_token_id
        completions[p, j, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[p, j, :len(row)] = True
        valid[p, j] = True
        r[p, j] = rec.reward
        if logp is not None:
            logp[p, j, :len(row)] = torch.tensor(logps[p, j])
    return LoggedBatch(left_pad_rows(heads, tokenizer.pad_token_id), completions, mask, r, valid, logp)
