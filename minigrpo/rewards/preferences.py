"""Preference data: (prompt, chosen, rejected) pairs, rankings, JSONL files, and synthetic raters.

A reward model learns from comparisons. They arrive as

* pairs ``{"prompt": …, "chosen": …, "rejected": …}`` (one JSON object per line), or
* rankings ``{"prompt": …, "ranking": [best, …, worst]}``, each giving every ordered pair, or
* good/bad labels (``labels.py``), each good completion preferred to each bad one of the same prompt.

Bad records are never passed on to training: ``load_preferences`` raises naming the file and line,
or with ``strict=False`` skips them and counts why. Identical pairs (chosen == rejected) carry no
preference and are rejected the same way. The file is read a line at a time within the size limits
of ``lm/lines.py`` (1 MiB a line, 64 Ki characters a text, 100 completions a ranking), so memory
stays bounded whatever the file holds; pairs whose texts differ but that the reward model's
tokenizer maps to the same ids are caught when training starts (``reward_model.distinct_pairs``).

Humans are slow to ask in a test, so a *synthetic rater* stands in: a hidden scoring rule over
candidate answers. ``synthetic_preferences`` draws candidates for task prompts, ranks them by the
rule, and keeps pairs whose scores differ. ``closeness`` is a sensible rater; ``column_checker`` is
a lazy one (it checks each column without carries) whose preferences agree with the truth most of
the time — and reward the careless answer when they do not, which is what reward hacking exploits.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from minigrpo.lm.lines import MAX_RANKING, check_text, jsonl_records
from minigrpo.lm.tasks import candidate_answers


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    where: str | None = field(default=None, compare=False, repr=False)     # file:line it was read from


def pairs_from_ranking(prompt: str, ranking: list[str]) -> list[PreferencePair]:
    """A ranking [best, …, worst] → every pair (i, j), i above j: n·(n−1)/2 pairs. Repeated entries
    are dropped (a completion is not preferred to itself)."""
    seen, order = set(), []
    for c in ranking:
        if c not in seen:
            seen.add(c)
            order.append(c)
    return [PreferencePair(prompt, order[i], order[j]) for i in range(len(order)) for j in range(i + 1, len(order))]


def check_pair(record, where: str) -> PreferencePair:
    """A record → PreferencePair, or ValueError saying what is wrong at ``where``."""
    if isinstance(record, _BadJSON):
        raise ValueError(f"{where}: not valid JSON ({record.msg})")
    if isinstance(record, ValueError):            # a line the reader could not use (lm/lines.jsonl_records)
        raise record
    if not isinstance(record, dict):
        raise ValueError(f"{where}: a preference must be a JSON object, got {type(record).__name__}")
    missing = [k for k in ("prompt", "chosen", "rejected") if k not in record]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}; a pair needs 'prompt', 'chosen', 'rejected' "
                         "(or a 'ranking' list instead of chosen/rejected)")
    bad = [k for k in ("prompt", "chosen", "rejected") if not isinstance(record[k], str)]
    if bad:
        raise ValueError(f"{where}: field(s) {bad} must be strings")
    for k in ("prompt", "chosen", "rejected"):
        check_text(record[k], where, k)
    if record["chosen"] == record["rejected"]:
        raise ValueError(f"{where}: chosen and rejected are identical ({_clip(record['chosen'])}); such a pair "
                         "states no preference")
    return PreferencePair(record["prompt"], record["chosen"], record["rejected"], where)


def _clip(text: str, n: int = 60) -> str:
    r = repr(text)
    return r if len(r) <= n else r[:n - 1] + "…"


@dataclass
class LoadReport:
    """What ``load_preferences`` kept and skipped (``skipped`` counts reasons)."""

    kept: int
    skipped: Counter

    def __str__(self):
        why = ", ".join(f"{n} {reason}" for reason, n in self.skipped.items()) or "none"
        return f"{self.kept} pairs kept; skipped: {why}"


def record_pairs(rec, where: str) -> list[PreferencePair]:
    """One record (a pair, or a ranking) → its pairs, or ValueError saying what is wrong at ``where``."""
    if isinstance(rec, dict) and "ranking" in rec:
        both = [k for k in ("chosen", "rejected") if k in rec]
        if both:
            raise ValueError(f"{where}: the record has both 'ranking' and {' and '.join(map(repr, both))}; give a "
                             "ranking or a chosen/rejected pair, not both")
        if not isinstance(rec.get("prompt"), str) or not isinstance(rec["ranking"], list) \
                or not all(isinstance(c, str) for c in rec["ranking"]):
            raise ValueError(f"{where}: a ranking needs 'prompt' (a string) and 'ranking' (a list of strings)")
        if len(rec["ranking"]) > MAX_RANKING:
            raise ValueError(f"{where}: the ranking has {len(rec['ranking'])} completions, over the limit of "
                             f"{MAX_RANKING} a ranking (MAX_RANKING in minigrpo/lm/lines.py); split it")
        check_text(rec["prompt"], where, "prompt")
        for i, c in enumerate(rec["ranking"]):
            check_text(c, where, f"ranking[{i}]")
        got = [PreferencePair(p.prompt, p.chosen, p.rejected, where) for p in pairs_from_ranking(rec["prompt"], rec["ranking"])]
        if not got:
            raise ValueError(f"{where}: the ranking {_clip(str(rec['ranking']))} has fewer than two different "
                             "completions")
        return got
    return [check_pair(rec, where)]


def parse_preferences(records, source: str = "preferences", strict: bool = True,
                      wheres: list[str] | None = None) -> tuple[list[PreferencePair], LoadReport]:
    """Pairs and rankings → pairs. ``strict``: the first bad record raises; else bad ones are counted."""
    pairs, skipped = [], Counter()
    for i, rec in enumerate(records):
        where = wheres[i] if wheres else f"{source} record {i + 1}"
        try:
            pairs += record_pairs(rec, where)
        except ValueError as e:
            if strict:
                raise
            skipped[_reason(str(e))] += 1
    return pairs, LoadReport(len(pairs), skipped)


def _reason(message: str) -> str:
    """The kind of problem in a record error, without the record's location or contents."""
    for key in ("over the limit", "not UTF-8", "not valid JSON", "missing field", "identical", "must be strings",
                "must be a JSON object", "a ranking", "fewer than two"):
        if key in message:
            return key
    return "invalid"


def load_preferences(path: str | Path, strict: bool = True) -> tuple[list[PreferencePair], LoadReport]:
    """Read a JSONL file of pairs and/or rankings (see the module docstring), a line at a time within
    the limits of ``lm/lines.py``. Errors name the file and line; with ``strict=False`` bad lines are
    skipped and counted in the report. A file that gives no pair at all raises, saying why (empty, or
    every line skipped)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"preference file {str(path)!r} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"preference file {str(path)!r} is a folder; give a JSONL file of pairs")
    pairs, skipped, lines = [], Counter(), 0
    for where, rec in jsonl_records(path):
        lines += 1
        try:
            pairs += record_pairs(rec, where)
        except ValueError as e:
            if strict:
                raise
            skipped[_reason(str(e))] += 1
    report = LoadReport(len(pairs), skipped)
    if not pairs:
        if not lines:
            raise ValueError(f"preference file {str(path)!r} is empty; it needs one JSON object a line: "
                             '{"prompt": …, "chosen": …, "rejected": …} or {"prompt": …, "ranking": […]}')
        raise ValueError(f"preference file {str(path)!r}: all {lines} records were skipped "
                         f"({', '.join(f'{n} {why}' for why, n in skipped.items())}); no pair "
                         "is left to train on")
    return pairs, report


class _BadJSON:
    def __init__(self, msg):
        self.msg = msg


def save_preferences(pairs: list[PreferencePair], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}) + "\n"
                            for p in pairs))
    return path


# --- synthetic raters --------------------------------------------------------------------------------

def closeness(task):
    """A sensible rater: the right answer scores 1; a wrong one −log10(1 + |answer − right|); a
    non-number scores −10."""
    def rule(prompt: str, answer: str) -> float:
        truth = int(task.solve(prompt))
        if not answer.isdigit():
            return -10.0
        return 1.0 if int(answer) == truth else -math.log10(1 + abs(int(answer) - truth))
    rule.__name__ = "closeness"
    return rule


def column_checker(task):
    """A lazy rater: it checks the answer column by column, each digit against the column's digits
    summed mod 10, and never carries. It counts matching columns (a wrong-length answer scores low).
    Correct and careless answers tie on sums without carries; with carries it prefers the careless
    answer — a proxy that agrees with the truth on most pairs and disagrees exactly where it matters."""
    def rule(prompt: str, answer: str) -> float:
        a, b = prompt[:-1].split("+")
        careless = task.careless_answer(prompt)
        if not answer.isdigit():
            return -10.0
        width = max(len(careless), len(answer))
        x, y = answer.zfill(width), careless.zfill(width)
        return sum(float(p == q) for p, q in zip(x, y)) - abs(len(answer) - len(careless))
    rule.__name__ = "column_checker"
    return rule


RATERS = {"closeness": closeness, "column_checker": column_checker}


def synthetic_preferences(task, rule, n_prompts: int, split: str = "train", pairs_per_prompt: int = 8,
                          generator: torch.Generator | None = None) -> list[PreferencePair]:
    """Draw ``n_prompts`` task prompts from ``split``, rank each prompt's ``candidate_answers`` by the
    hidden ``rule``, and keep up to ``pairs_per_prompt`` pairs whose scores differ (ties state nothing)."""
    generator = generator or torch.Generator().manual_seed(0)
    pairs = []
    for problem in task.sample(n_prompts, split, generator):
        cands = sorted(set(candidate_answers(task, problem.prompt, generator)))
        scored = [(rule(problem.prompt, c), c) for c in cands]
        options = [(a, b) for sa, a in scored for sb, b in scored if sa > sb]
        idx = torch.randperm(len(options), generator=generator)[:pairs_per_prompt].tolist()
        pairs += [PreferencePair(problem.prompt, options[i][0], options[i][1]) for i in idx]
    return pairs


def agreement(pairs: list[PreferencePair], rule) -> float:
    """Fraction of pairs a rule orders the same way (ties count as disagreement)."""
    return sum(rule(p.prompt, p.chosen) > rule(p.prompt, p.rejected) for p in pairs) / max(len(pairs), 1)


def policy_preferences(policy, tokenizer, task, rule, n_prompts: int, group_size: int = 8, split: str = "train",
                       pairs_per_prompt: int = 8, generator: torch.Generator | None = None) -> list[PreferencePair]:
    """Preferences over the policy's own samples — how preference data is usually collected: for each of
    ``n_prompts`` task prompts, sample ``group_size`` completions, rank the distinct ones by ``rule``, and
    keep up to ``pairs_per_prompt`` pairs whose scores differ."""
    from minigrpo.core.sampling import sample_group
    from minigrpo.lm.tokens import decode_completions, encode_prompts

    generator = generator or torch.Generator().manual_seed(0)
    problems = task.sample(n_prompts, split, generator)
    pairs = []
    for i in range(0, n_prompts, 256):
        chunk = problems[i:i + 256]
        ids = encode_prompts(tokenizer, [p.prompt for p in chunk]).to(policy.device)
        with torch.no_grad():
            ro = sample_group(policy, ids, group_size, max_new_tokens=task.max_answer_len + 1,
                              eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id,
                              generator=torch.Generator(device=policy.device).manual_seed(int(
                                  torch.randint(0, 2 ** 31, (1,), generator=generator))))
        for problem, texts in zip(chunk, decode_completions(tokenizer, ro.completions, ro.mask, prompts=ids)):
            scored = [(rule(problem.prompt, c), c) for c in sorted(set(texts))]
            options = [(a, b) for sa, a in scored for sb, b in scored if sa > sb]
            idx = torch.randperm(len(options), generator=generator)[:pairs_per_prompt].tolist()
            pairs += [PreferencePair(problem.prompt, options[j][0], options[j][1]) for j in idx]
    return pairs
